"""``Pipeline``: detector + mask, gender and age models + combiner, as one object."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence, Union

import numpy as np

from ..combine import age_group_probs, apply_bias, check_bias, combine
from ..detect.faces import Box, Detection, DetectorSettings, FaceDetector
from ..errors import UsageError
from ..images import ImageError, ImageInput, batches, image_list, load_image
from ..labels import GENDER_LABELS, MASK_LABELS, PIPELINE_TASKS, AgeBins, age_group_labels, decode
from ..models import onnx_model
from ..models.batch import face_inputs, tasks_probs
from ..models.ensemble import members
from ..models.onnx_model import INT8_WEIGHT_BITS, OnnxTaskModel
from ..models.spec import ModelFileError
from ..models.tasks import TaskPredictor
from ..models.transforms import check_tta, preprocess
from ..progress import bar
from .files import PRETRAINED_DIR, _base, export_pipeline_onnx, is_torch_model, load_pipeline, run_models_of, save_pipeline

if TYPE_CHECKING:
    from .video import VideoFrame

__all__ = ["Pipeline", "Prediction", "set_frame", "PRETRAINED_DIR"]
TASKS = PIPELINE_TASKS
RunDirs = Union[str, Path, Sequence[Union[str, Path]]]  # one run, or several for an ensemble


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

    # loading, saving and export live in pipeline.files, videos in pipeline.video, voting pipelines in
    # pipeline.ensemble: this class holds the settings and the predict family

    def __init__(
        self,
        mask_model: TaskPredictor,
        gender_model: TaskPredictor,
        age_model: TaskPredictor,
        detector: DetectorSettings | None = None,
        tta: dict[str, Sequence[str]] | None = None,
        age_threshold: int | None = None,
        bias: dict[str, Sequence[float]] | None = None,
    ) -> None:
        """``tta``: per task, test-time transforms whose probabilities are averaged with the plain crop's,
        e.g. ``{"gender": ["hflip"]}`` (each one costs that model another forward pass). ``age_threshold``: the
        age from which the oldest group starts (default: the age model's, 60), any edge of its fine bins.
        ``bias``: per task, decision offsets on the log-probabilities of its labels (age: of its three groups),
        e.g. ``{"gender": [0, 0.3]}``; ``maskage calibrate`` chooses them on labelled validation photos."""
        for task, model in zip(TASKS, (mask_model, gender_model, age_model)):
            if model.task != task:
                raise ModelFileError(f"the {task} slot got a {model.task} model")
        self.models = {"mask": mask_model.eval(), "gender": gender_model.eval(), "age": age_model.eval()}
        self.detector_settings = detector or DetectorSettings.from_dict(mask_model.spec.detector)
        self.tta = tta  # type: ignore[assignment]
        self.age_threshold = age_threshold  # type: ignore[assignment]
        self.bias = bias  # type: ignore[assignment]

    @property
    def bias(self) -> dict[str, tuple[float, ...]]:
        """Per task, the offsets added to its log-probabilities before the combiner (age: per group), as
        ``combine.apply_bias``; the probabilities a ``Prediction`` reports are the offset ones."""
        return self._bias

    @bias.setter
    def bias(self, value: dict[str, Sequence[float]] | None) -> None:
        self._bias = check_bias(value)

    @property
    def age_threshold(self) -> int:
        """The age the oldest group starts at: set at prediction time to any edge of the age model's fine bins
        (e.g. 58 for a model with the default bins); ``None`` resets it to the threshold the model trained with."""
        return self._age_threshold

    @age_threshold.setter
    def age_threshold(self, value: int | None) -> None:
        self._age_threshold, self._age_groups = age_groups_at(self.models["age"].spec, value)

    @property
    def detector_settings(self) -> DetectorSettings:
        """How faces are found (saved in pipeline.json); setting it replaces the detector."""
        return self._detector_settings

    @detector_settings.setter
    def detector_settings(self, value: DetectorSettings) -> None:
        self._detector_settings, self._detector = value, None

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
        return "torch" if all(is_torch_model(_base(m)) for t in self.models.values() for m in members(t)) else "onnx"

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(self.detector_settings)
        return self._detector

    @classmethod
    def from_runs(cls, mask_dir: RunDirs, gender_dir: RunDirs, age_dir: RunDirs,
                  weights: dict[str, Sequence[float]] | None = None, voting: dict[str, str] | None = None) -> "Pipeline":
        """Assemble trained runs (or saved task models). A task given several runs, or a k-fold run (``folds=K``),
        gets their ensemble (``TaskEnsemble``), voted as ``voting[task]`` says (``soft`` by default) with
        ``weights[task]`` (one per model, a k-fold run counting its K)."""
        return cls(*run_models_of(mask_dir, gender_dir, age_dir, weights, voting))

    @classmethod
    def from_pretrained(cls, directory: str | Path | None = None, backend: str = "auto") -> "Pipeline":
        """Load a pipeline saved with ``save`` (default: the one shipped with maskage); changed files are refused.

        ``backend``: ``torch``; ``onnx`` (the pipeline's exported models: ``maskage export`` first); or ``auto``
        (the default): ONNX Runtime, the faster on a CPU (benchmarks/speed.py), with the pipeline's exported models
        or else an export of its PyTorch models made once into the maskage cache; PyTorch where ONNX Runtime is
        missing or the export fails.
        """
        return load_pipeline(cls, directory, backend)

    def export_onnx(self, directory: str | Path, int8: bool | Sequence[str] = False,
                    calibration: Sequence[ImageInput] | None = None, tasks: Sequence[str] | None = None,
                    weight_bits: int = INT8_WEIGHT_BITS) -> Path:
        """Add ``model.onnx`` to each task of the pipeline saved in ``directory`` (or to ``tasks`` only) and their
        hashes to pipeline.json; ``Pipeline.from_pretrained`` then runs them with ONNX Runtime (a model without its
        own ``model.onnx`` from an export made into the cache on first use).

        ``int8=True`` writes int8 models instead (faster, at an accuracy cost to measure: see
        ``onnx_model.quantize_int8``), their activation ranges read from the faces in ``calibration`` photos: use a
        few hundred photos like the ones it will see. ``int8=["gender", "age"]`` quantises those tasks only.
        ``weight_bits`` 7 (8 in depthwise convolutions) gives the same numbers on every CPU; 8 runs int8 only where
        the CPU has VNNI or is ARM (elsewhere float32 exports of the weights run). With ``backend="torch"`` the
        PyTorch weights run, so an int8 model's outputs differ slightly from them.
        """
        return export_pipeline_onnx(self, directory, int8, calibration, tasks, weight_bits)

    def save(self, directory: str | Path, dtype: str = "float32") -> Path:
        """Write the three models and pipeline.json (with their files' hashes) into ``directory``.

        ``dtype="float16"`` halves the weight files (as the pipeline shipped inside maskage is stored)."""
        return save_pipeline(self, directory, dtype)

    def model_inputs(self, arrays: Sequence[np.ndarray], detections: Sequence[Detection]) -> dict[str, list]:
        """Per task, each model's (each ensemble member's) preprocessed input for these photos' faces
        (``task_probs_inputs`` takes them; ``models.batch.face_inputs``)."""
        return face_inputs(self.models, arrays, [d.box for d in detections])

    def predict(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32,
                progress: bool = False) -> list[Prediction]:
        """One ``Prediction`` per input, in order. A bad photo gets ``error`` set; the others go on. ``progress``:
        a progress bar over the photos (``maskage.progress.bar``)."""
        return self._predict_batches(images, batch_size, progress, all_faces=False)

    def predict_all_faces(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32,
                          progress: bool = False) -> list[list[Prediction]]:
        """Every face of each input, largest first: one list per input, in order. A photo with no face found gets
        one centre-crop prediction (``face_box=None``); an unreadable one gets one prediction with ``error``."""
        return self._predict_batches(images, batch_size, progress, all_faces=True)

    def predict_boxes(self, images: Sequence[ImageInput], boxes: Sequence[Box | None]) -> list[Prediction]:
        """One ``Prediction`` per (photo, face box) pair, the face cut around the given box (another detector's,
        or a labelled one; None: the centre crop) instead of a detection."""
        if len(images) != len(boxes):
            raise UsageError(f"{len(images)} photos but {len(boxes)} boxes")
        arrays = [load_image(img) for img in images]
        return self._classify(arrays, [Detection(tuple(map(float, b)) if b is not None else None) for b in boxes],
                              [_describe(img) for img in images])

    def _predict_batches(self, images: ImageInput | Iterable[ImageInput], batch_size: int, progress: bool,
                         all_faces: bool) -> list:
        images, out = image_list(images), []
        with bar(total=len(images), desc="photos", unit="photo", enabled=progress) as counter:
            for batch in batches(images, batch_size):
                out.extend(self._predict_batch(batch, all_faces=all_faces))
                counter.update(len(batch))
        return out

    def predict_video(self, source: str | Path | int, every: int = 1, limit: int | None = None,
                      batch_size: int = 4, refresh: int | None = None, smooth: float = 0.0) -> Iterator["VideoFrame"]:
        """Every face of every ``every``-th frame of a video file (or camera index), as ``VideoFrame``s in order;
        faces that stay are classified every ``refresh``-th frame (``video.predict_video`` says more)."""
        from .video import predict_video

        return predict_video(self, source, every, limit, batch_size, refresh, smooth)

    def _predict_batch(self, images: Sequence[ImageInput], all_faces: bool = False) -> list:
        arrays: dict[int, np.ndarray] = {}
        errors: dict[int, str] = {}
        for i, img in enumerate(images):
            try:
                arrays[i] = load_image(img)
            except ImageError as exc:
                errors[i] = str(exc)
        ok = sorted(arrays)
        scene = self.detector_settings.uses_scene(all_faces)
        found = self.detector.detect_all([arrays[i] for i in ok], scene=scene) if ok else []
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
        """One task's probabilities for N x S x S x 3 uint8 face crops, with the task's TTA if any (an ensemble:
        each member's, voted)."""
        inputs = [preprocess(crops, m.spec.input_size, m.spec.mean, m.spec.std) for m in members(self.models[task])]
        return self.task_probs_inputs(task, inputs)

    def task_probs_inputs(self, task: str, inputs: Sequence) -> np.ndarray:
        """As ``task_probs``, for inputs already made by ``maskage.transforms.preprocess`` (N x 3 x S x S): one per
        model of the task, as ``model_inputs`` gives them."""
        return self._tasks_probs({task: inputs})[task]

    @property
    def model_workers(self) -> int:
        """How many model runs go at once: on ONNX Runtime with single-threaded sessions (``from_pretrained`` makes
        them so on several cores), one per core (``onnx_model.run_models``); else 1, one after another."""
        ms = [m for model in self.models.values() for m in members(model)]
        return onnx_model.model_workers() if all(isinstance(m, OnnxTaskModel) and m.threads == 1 for m in ms) else 1

    def _tasks_probs(self, inputs: dict[str, Sequence]) -> dict[str, np.ndarray]:
        return tasks_probs(self.models, inputs, self.tta, self.model_workers)

    def _classify(self, arrays: Sequence[np.ndarray], detections: Sequence[Detection], sources: Sequence[str]) -> list[Prediction]:
        if not arrays:
            return []
        probs = self._tasks_probs(self.model_inputs(arrays, detections))
        probs["age"] = age_group_probs(probs["age"], self._age_groups)
        probs = {task: apply_bias(p, self.bias.get(task)) for task, p in probs.items()}
        return self._predictions(probs, detections, sources)

    def _predictions(self, probs: dict[str, np.ndarray], detections: Sequence[Detection],
                     sources: Sequence[str]) -> list[Prediction]:
        """``Prediction``s from each task's final probabilities (age: of its groups), through the combiner."""
        return predictions_from(probs, detections, sources, self.age_threshold)


def predictions_from(probs: dict[str, np.ndarray], detections: Sequence[Detection], sources: Sequence[str],
                 age_threshold: int) -> list[Prediction]:
    """``Prediction``s from each task's final probabilities (age: of its groups), through the combiner."""
    age = probs["age"]
    ids, _ = combine(probs["mask"], probs["gender"], age)
    age_labels = age_group_labels(age_threshold)
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


def age_groups_at(spec: Any, value: int | None) -> tuple[int, tuple]:
    """The age threshold and the fine bins' groups of an age model's ``spec`` at ``value`` (None: its own)."""
    if value is None or value == spec.age_threshold:
        return spec.age_threshold, tuple(spec.age_groups)
    if not spec.age_bin_edges:
        raise UsageError(f"age_threshold={value}: this age model gives age groups only (threshold "
                         f"{spec.age_threshold}), not the fine bins another threshold needs")
    return int(value), AgeBins(tuple(spec.age_bin_edges), int(value)).groups  # checks value is an edge


def set_frame(pipe: Pipeline, task: str, frame: float, shift: float = 0.0) -> None:
    """Crop ``task``'s faces with UTKFace framing (``CropSettings.frame``/``frame_shift``; frame 0 = off) in every
    model of the task (a joint or multi-head model: its other tasks too); saved with the pipeline in each model's crop
    settings."""
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r} (tasks: {', '.join(TASKS)})")
    for m in members(pipe.models[task]):
        spec = _base(m).spec
        spec.crop = replace(spec.crop_settings, frame=frame, frame_shift=shift).to_dict()


def _describe(image: ImageInput) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    return f"<{type(image).__name__}>"
