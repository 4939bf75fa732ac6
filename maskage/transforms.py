"""What a face crop becomes before a model sees it: resizing and normalisation (``preprocess``, the same for
training, evaluation and prediction) and the test-time transforms averaged with it (``TTA_TRANSFORMS``)."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from .errors import UsageError
from .labels import PIPELINE_TASKS as TASKS

# test-time augmentation: a task's probabilities are the mean over the crop and these transforms of it
TTA_TRANSFORMS = {"hflip": lambda x: np.ascontiguousarray(x[..., ::-1])}  # on the normalised N x 3 x H x W input


def preprocess(crops: np.ndarray, input_size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """N x S x S x 3 uint8 crops (or one S x S x 3 crop) -> N x 3 x input_size x input_size normalised float32.

    Used by training, evaluation and ``Pipeline``, so all see the same pixels. numpy only (no torch), so that
    prediction on ONNX Runtime never imports PyTorch; a crop of another size is resized as torch's bilinear
    interpolation with antialiasing does it (``resize_weights``; tests hold the two equal).
    """
    x = np.asarray(crops)
    if x.ndim == 3:
        x = x[None]
    x = x.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
    h, w = x.shape[-2:]
    if (h, w) != (input_size, input_size):
        x = resize_weights(h, input_size) @ x @ resize_weights(w, input_size).T
    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


@lru_cache(maxsize=32)
def resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """out_size x in_size matrix of 1-D bilinear resampling with antialiasing (a triangle filter widened by the
    reduction factor; PIL's and torch's ``interpolate(..., antialias=True, align_corners=False)``)."""
    scale = in_size / out_size
    support = max(scale, 1.0)  # the triangle's half-width in input pixels
    inv = 1.0 / support
    out = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        centre = scale * (i + 0.5)
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), in_size)
        taps = np.clip(1.0 - np.abs((np.arange(lo, hi) - centre + 0.5) * inv), 0.0, None)
        if taps.sum() > 0:
            out[i, lo:hi] = taps / taps.sum()
    return out.astype(np.float32)


def parse_tta(items: Sequence[str]) -> dict[str, list[str]]:
    """``["gender=hflip", "age=hflip"]`` (the CLI's ``--tta`` values) -> ``{"gender": ["hflip"], "age": ["hflip"]}``;
    task and transform names are checked where it is assigned (``Pipeline.tta``)."""
    tta: dict[str, list[str]] = {}
    for item in items:
        task, _, name = item.partition("=")
        if not name:
            raise UsageError(f"--tta takes TASK=TRANSFORM (e.g. gender=hflip), got {item!r}")
        tta.setdefault(task, []).append(name)
    return tta


def check_tta(tta: dict[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """``{task: (transform, ...)}`` with known tasks and transforms only (a clear error otherwise)."""
    out = {}
    for task, names in (tta or {}).items():
        if task not in TASKS:
            raise UsageError(f"tta: unknown task {task!r} (tasks: {', '.join(TASKS)})")
        for name in names:
            if name not in TTA_TRANSFORMS:
                raise UsageError(f"tta: unknown transform {name!r} for {task} (known: {', '.join(TTA_TRANSFORMS)})")
        if names:
            out[task] = tuple(names)
    return out
