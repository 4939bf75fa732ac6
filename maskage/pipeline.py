"""``Pipeline``: detector + mask, gender and age models + combiner, as one object."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image

from .combine import age_group_probs, combine
from .data import preprocess
from .faces import Box, Detection, DetectorSettings, FaceDetector, crop_face
from .images import ImageError, ImageInput, load_image
from .labels import GENDER_LABELS, MASK_LABELS, age_group_labels, decode
from .models import CONFIG_NAME, ModelFileError, TaskModel, file_sha256, write_json_atomic
from .onnx_backend import ONNX_NAME

PIPELINE_FORMAT = "maskage-pipeline"
# the trained pipeline shipped inside the package (see its MODEL_CARD.md)
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
PIPELINE_NAME = "pipeline.json"
TASKS = ("mask", "gender", "age")
# test-time augmentation: a task's probabilities are the mean over the crop and these transforms of it
TTA_TRANSFORMS = {"hflip": lambda x: x.flip(-1)}  # on the normalised N x 3 x H x W input


def parse_tta(items: Sequence[str]) -> dict[str, list[str]]:
    """``["gender=hflip", "age=hflip"]`` (the CLI's ``--tta`` values) -> ``{"gender": ["hflip"], "age": ["hflip"]}``;
    task and transform names are checked where it is assigned (``Pipeline.tta``)."""
    tta: dict[str, list[str]] = {}
    for item in items:
        task, _, name = item.partition("=")
        if not name:
            raise ValueError(f"--tta takes TASK=TRANSFORM (e.g. gender=hflip), got {item!r}")
        tta.setdefault(task, []).append(name)
    return tta


def check_tta(tta: dict[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """``{task: (transform, ...)}`` with known tasks and transforms only (a clear error otherwise)."""
    out = {}
    for task, names in (tta or {}).items():
        if task not in TASKS:
            raise ValueError(f"tta: unknown task {task!r} (tasks: {', '.join(TASKS)})")
        for name in names:
            if name not in TTA_TRANSFORMS:
                raise ValueError(f"tta: unknown transform {name!r} for {task} (known: {', '.join(TTA_TRANSFORMS)})")
        if names:
            out[task] = tuple(names)
    return out


@dataclass
class Prediction:
    """The prediction for one input photo. ``class_id`` is None only when the photo could not be read."""

    source: str
    class_id: int | None = None
    mask: str | None = None
    gender: str | None = None
    age: str | None = None  # age group label: '<30', '30-59' or '60+' (at threshold 60)
    mask_probs: dict[str, float] = field(default_factory=dict)
    gender_probs: dict[str, float] = field(default_factory=dict)
    age_probs: dict[str, float] = field(default_factory=dict)
    face_box: Box | None = None  # None when no face was found and the centre crop was used
    face_prob: float | None = None
    error: str | None = None

    def to_row(self) -> dict[str, Any]:
        """A flat dict for CSV output."""
        row: dict[str, Any] = {
            "path": self.source,
            "class": "" if self.class_id is None else self.class_id,
            "mask": self.mask or "",
            "gender": self.gender or "",
            "age": self.age or "",
            "face_box": "" if self.face_box is None else " ".join(f"{v:.1f}" for v in self.face_box),
            "face_prob": "" if self.face_prob is None else f"{self.face_prob:.4f}",
        }
        for prefix, probs in (("p_mask_", self.mask_probs), ("p_gender_", self.gender_probs), ("p_age_", self.age_probs)):
            for k, v in probs.items():
                row[prefix + k] = f"{v:.5f}"
        row["error"] = self.error or ""
        return row


class Pipeline:
    """Face detection, the three task models and the combiner."""

    def __init__(
        self,
        mask_model: TaskModel,
        gender_model: TaskModel,
        age_model: TaskModel,
        detector: DetectorSettings | None = None,
        tta: dict[str, Sequence[str]] | None = None,
    ) -> None:
        """``tta``: per task, test-time transforms whose probabilities are averaged with the plain crop's,
        e.g. ``{"gender": ["hflip"]}`` (each one costs that model another forward pass)."""
        for task, model in zip(TASKS, (mask_model, gender_model, age_model)):
            if model.task != task:
                raise ModelFileError(f"the {task} slot got a {model.task} model")
        self.models = {"mask": mask_model.eval(), "gender": gender_model.eval(), "age": age_model.eval()}
        self.detector_settings = detector or DetectorSettings.from_dict(mask_model.spec.detector)
        self._detector: FaceDetector | None = None
        self.tta = tta  # type: ignore[assignment]

    @property
    def tta(self) -> dict[str, tuple[str, ...]]:
        """Per task, the test-time transforms averaged with the plain crop (set with a dict; checked)."""
        return self._tta

    @tta.setter
    def tta(self, value: dict[str, Sequence[str]] | None) -> None:
        self._tta = check_tta(value)

    @property
    def backend(self) -> str:
        """``torch`` or ``onnx``: what runs the three models."""
        return "torch" if all(isinstance(m, TaskModel) for m in self.models.values()) else "onnx"

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(self.detector_settings)
        return self._detector

    @classmethod
    def from_runs(cls, mask_dir: str | Path, gender_dir: str | Path, age_dir: str | Path) -> "Pipeline":
        """Assemble three trained runs (or saved task models)."""
        return cls(TaskModel.load(mask_dir, "mask"), TaskModel.load(gender_dir, "gender"), TaskModel.load(age_dir, "age"))

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, backend: str = "auto") -> "Pipeline":
        """Load a pipeline saved with ``save`` (default: the one shipped with maskage); changed files are refused.

        ``backend``: ``torch``; ``onnx`` (the pipeline's exported models: ``maskage export`` first); or ``auto``
        (the default): ONNX Runtime, the faster on a CPU (benchmarks/speed.py), with the pipeline's exported models
        or else an export of its PyTorch models made once into the maskage cache; PyTorch where ONNX Runtime is
        missing or the export fails.
        """
        if backend not in ("auto", "torch", "onnx"):
            raise ValueError(f"backend must be auto, torch or onnx, got {backend!r}")
        d = Path(directory) if directory is not None else PRETRAINED_DIR
        path = d / PIPELINE_NAME
        if not path.is_file():
            raise ModelFileError(f"{d}: no {PIPELINE_NAME}; is this a pipeline directory (see `maskage pipeline`)?")
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{path}: not valid JSON ({exc})") from None
        if meta.get("format") != PIPELINE_FORMAT:
            raise ModelFileError(f"{path}: not a maskage pipeline (format {meta.get('format')!r})")
        exported = all(ONNX_NAME in meta["models"][t].get("sha256", {}) for t in TASKS)
        if backend == "onnx" and not exported:
            raise ModelFileError(f"{d}: not exported to ONNX; run `maskage export {d}` first")
        use_onnx = backend == "onnx" or (backend == "auto" and _has_onnxruntime())
        models: dict[str, Any] = {}
        for task in TASKS:
            entry = meta["models"][task]
            sub = d / entry["dir"]
            for name, digest in entry.get("sha256", {}).items():
                if not (sub / name).is_file() or file_sha256(sub / name) != digest:
                    raise ModelFileError(f"{sub / name}: missing or changed since the pipeline was saved (sha256 mismatch)")
            if use_onnx and exported:
                from .onnx_backend import OnnxTaskModel

                models[task] = OnnxTaskModel.load(sub, task)
            else:
                models[task] = TaskModel.load(sub, task)
        if use_onnx and not exported:
            models = _cached_onnx_models(models, meta)
        return cls(models["mask"], models["gender"], models["age"], DetectorSettings.from_dict(meta["detector"]),
                   tta=meta.get("tta"))

    def export_onnx(self, directory: str | Path, int8: bool = False,
                    calibration: Sequence[ImageInput] | None = None) -> Path:
        """Add ``model.onnx`` to each task of the pipeline saved in ``directory`` and their hashes to
        pipeline.json; ``Pipeline.from_pretrained`` then runs them with ONNX Runtime.

        ``int8=True`` writes int8 models instead (faster on a CPU with VNNI, at an accuracy cost to measure: see
        ``onnx_backend.quantize_int8``), their activation ranges read from the faces in ``calibration`` photos: use a
        few hundred photos like the ones it will see.
        """
        from .onnx_backend import export_onnx, quantize_int8

        d = Path(directory)
        path = d / PIPELINE_NAME
        meta = json.loads(path.read_text())
        torch_models = {task: _torch_model(task, m) for task, m in self.models.items()}
        inputs = self._calibration_inputs(calibration or []) if int8 else {}
        for task, model in torch_models.items():
            sub = d / meta["models"][task]["dir"]
            export_onnx(model, sub / ONNX_NAME)
            if int8:
                quantize_int8(sub / ONNX_NAME, sub / ONNX_NAME, inputs[task])
            meta["models"][task]["sha256"][ONNX_NAME] = file_sha256(sub / ONNX_NAME)
            meta["models"][task]["onnx"] = {"precision": "int8" if int8 else "float32",
                                            "calibration_photos": len(inputs[task]) if int8 else 0}
        write_json_atomic(path, meta)
        return d

    def _calibration_inputs(self, images: Sequence[ImageInput]) -> dict[str, np.ndarray]:
        """Each model's normalised input for each photo, cropped as ``predict`` crops it (largest face, else the
        centre)."""
        arrays = []
        for img in images:
            try:
                arrays.append(load_image(img))
            except ImageError as exc:
                raise ValueError(f"calibration photo: {exc}") from None
        if not arrays:
            raise ValueError("int8 export needs calibration photos")
        return {task: x.numpy() for task, x in self._model_inputs(arrays, self.detector.detect(arrays)).items()}

    def _model_inputs(self, arrays: Sequence[np.ndarray], detections: Sequence[Detection]) -> dict[str, Any]:
        """Each task model's preprocessed input for these photos' faces. The three models usually share crop,
        size and normalisation: the crops and the preprocessing are then made once."""
        made: dict[tuple, Any] = {}
        out = {}
        for task, model in self.models.items():
            spec = model.spec
            key = (spec.crop_settings, spec.input_size, tuple(spec.mean), tuple(spec.std))
            if key not in made:
                crops = np.stack([crop_face(a, d.box, spec.crop_settings) for a, d in zip(arrays, detections)])
                made[key] = preprocess(crops, spec.input_size, spec.mean, spec.std)
            out[task] = made[key]
        return out

    def save(self, directory: str | Path, dtype: str = "float32") -> Path:
        """Write the three models and pipeline.json (with their files' hashes) into ``directory``.

        ``dtype="float16"`` halves the weight files (as the pipeline shipped inside maskage is stored)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        entries = {}
        for task, m in self.models.items():
            sub = _torch_model(task, m).save(d / task, dtype=dtype)
            entries[task] = {"dir": task, "sha256": {n: file_sha256(sub / n) for n in (CONFIG_NAME, "weights.pt")}}
        meta = {"format": PIPELINE_FORMAT, "version": 1, "detector": self.detector_settings.to_dict(),
                "tta": {task: list(names) for task, names in self.tta.items()}, "models": entries}
        write_json_atomic(d / PIPELINE_NAME, meta)
        return d

    def predict(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32) -> list[Prediction]:
        """One ``Prediction`` per input, in order. A bad photo gets ``error`` set; the others go on."""
        if isinstance(images, (str, Path, np.ndarray, Image.Image)):
            images = [images]  # a single image still gives a list
        images = list(images)
        out: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            out.extend(self._predict_batch(images[start : start + batch_size]))
        return out

    def predict_all_faces(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32) -> list[list[Prediction]]:
        """Every face of each input, largest first: one list per input, in order. A photo with no face found gets
        one centre-crop prediction (``face_box=None``); an unreadable one gets one prediction with ``error``."""
        if isinstance(images, (str, Path, np.ndarray, Image.Image)):
            images = [images]
        images = list(images)
        out: list[list[Prediction]] = []
        for start in range(0, len(images), batch_size):
            out.extend(self._predict_batch(images[start : start + batch_size], all_faces=True))
        return out

    def _predict_batch(self, images: Sequence[ImageInput], all_faces: bool = False) -> list:
        arrays: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for i, img in enumerate(images):
            try:
                arrays[i] = load_image(img)
            except ImageError as exc:
                errors[i] = str(exc)
        ok = sorted(arrays)
        found = self.detector.detect_all([arrays[i] for i in ok]) if ok else []
        # one entry per face to classify: (input index, detection); no face found -> the centre crop
        faces: list[tuple[int, Detection]] = []
        for i, dets in zip(ok, found):
            chosen = dets if all_faces else dets[:1]
            faces.extend((i, d) for d in (chosen or [Detection(None)]))
        preds = self._classify([arrays[i] for i, _ in faces], [d for _, d in faces], [_describe(images[i]) for i, _ in faces])
        per_input: list[list[Prediction]] = [[] for _ in images]
        for (i, _), p in zip(faces, preds):
            per_input[i].append(p)
        for i, msg in errors.items():
            per_input[i] = [Prediction(_describe(images[i]), error=msg)]
        return per_input if all_faces else [p[0] for p in per_input]

    def task_probs(self, task: str, crops: np.ndarray) -> np.ndarray:
        """One task model's probabilities for N x S x S x 3 uint8 face crops, with the task's TTA if any."""
        spec = self.models[task].spec
        return self.task_probs_inputs(task, preprocess(crops, spec.input_size, spec.mean, spec.std))

    def task_probs_inputs(self, task: str, inputs) -> np.ndarray:
        """As ``task_probs``, for inputs already made by ``maskage.data.preprocess`` (N x 3 x S x S)."""
        model = self.models[task]
        probs = model.predict_inputs(inputs)
        for name in self.tta.get(task, ()):
            probs = probs + model.predict_inputs(TTA_TRANSFORMS[name](inputs).contiguous())
        return probs / (1 + len(self.tta.get(task, ())))

    def _classify(self, arrays: Sequence[np.ndarray], detections: Sequence[Detection], sources: Sequence[str]) -> list[Prediction]:
        if not arrays:
            return []
        probs = {task: self.task_probs_inputs(task, x) for task, x in self._model_inputs(arrays, detections).items()}
        age = age_group_probs(probs["age"], self.models["age"].spec.age_groups)
        ids, _ = combine(probs["mask"], probs["gender"], age)
        age_labels = age_group_labels(self.models["age"].spec.age_threshold)
        preds = []
        for j, (det, source) in enumerate(zip(detections, sources)):
            m, g, a = decode(int(ids[j]))
            preds.append(Prediction(
                source, int(ids[j]), MASK_LABELS[m], GENDER_LABELS[g], age_labels[a],
                mask_probs=dict(zip(MASK_LABELS, map(float, probs["mask"][j]))),
                gender_probs=dict(zip(GENDER_LABELS, map(float, probs["gender"][j]))),
                age_probs=dict(zip(age_labels, map(float, age[j]))),
                face_box=det.box, face_prob=det.prob,
            ))
        return preds


def _torch_model(task: str, model: Any) -> TaskModel:
    """The PyTorch model behind a slot (an ONNX model exported on load keeps its source)."""
    model = getattr(model, "source", None) or model
    if not isinstance(model, TaskModel):
        raise ModelFileError(f"the {task} model runs on ONNX Runtime from exported files; load the pipeline with "
                             "backend='torch' to save or export it")
    return model


def _cached_onnx_models(models: dict[str, Any], meta: dict) -> dict[str, Any]:
    """The three PyTorch models run by ONNX Runtime from exports cached by their files' hashes; the PyTorch models
    themselves if exporting fails (with a warning: predictions are the same, only slower)."""
    from .onnx_backend import cached_onnx

    try:
        out = {}
        for task, model in models.items():
            digests = meta["models"][task]["sha256"]
            key = f"{task}-{digests['weights.pt'][:16]}-{digests[CONFIG_NAME][:8]}"
            out[task] = cached_onnx(model, key)
        return out
    except Exception as exc:  # noqa: BLE001 - any exporter or runtime failure: keep working on PyTorch
        warnings.warn(f"ONNX export failed ({type(exc).__name__}: {exc}); running the models with PyTorch")
        return models


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _describe(image: ImageInput) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    return f"<{type(image).__name__}>"
