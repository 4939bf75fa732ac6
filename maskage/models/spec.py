"""What a saved task model says about itself (model.json: task, labels, input size, crop and detector settings,
age bins), read and checked without building its network: no PyTorch here, so that a pipeline run on ONNX Runtime
never imports it. ``maskage.models`` builds, trains and saves the networks."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import file_sha256
from ..errors import MaskageError
from ..detect.faces import CropSettings, DetectorSettings
from ..labels import GENDER_LABELS, MASK_LABELS, AgeBins
from .tasks import task_kind

FORMAT = "maskage-task-model"
FORMAT_VERSION = 1
CONFIG_NAME = "model.json"
FOLDS_NAME = "folds.json"  # in a k-fold run directory: its fold models
WEIGHTS_NAME = "weights.pt"
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"  # the models shipped inside maskage


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


def head_softmax(logits: np.ndarray, heads: tuple[int, ...] | None = None) -> np.ndarray:
    """Softmax over the outputs, or over each head's own outputs (``heads``: their sizes, in order)."""
    parts = np.split(logits, np.cumsum(heads)[:-1], axis=1) if heads else [logits]
    out = []
    for part in parts:
        e = np.exp(part - part.max(axis=1, keepdims=True))
        out.append(e / e.sum(axis=1, keepdims=True))
    return np.concatenate(out, axis=1).astype(np.float32)


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
