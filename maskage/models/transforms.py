"""What a face crop becomes before a model sees it: resizing and normalisation (``preprocess``, the same for
training, evaluation and prediction) and the test-time transforms averaged with it (``TTA_TRANSFORMS``)."""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

from ..errors import UsageError
from ..labels import PIPELINE_TASKS as TASKS

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
    n, h, w = x.shape[:3]
    if x.dtype == np.uint8:
        # one table look-up per pixel (2.5x quicker than converting, scaling and normalising); OpenCV's, float32
        # out, then one transpose: the same values as numpy's indexing channel by channel, somewhat quicker
        lut = _normalise_table(tuple(mean), tuple(std))
        looked = cv2.LUT(np.ascontiguousarray(x).reshape(n * h, w, 3), np.ascontiguousarray(lut.T[None]))
        out = looked.reshape(n, h, w, 3).transpose(0, 3, 1, 2)
    else:
        out = (x.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255.0)
               - np.asarray(mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    if (h, w) != (input_size, input_size):
        # resizing is linear with rows of weights summing to 1, so it commutes with the normalisation
        out = _resize(out, input_size)
    return np.ascontiguousarray(out, dtype=np.float32)


def _resize(x: np.ndarray, size: int) -> np.ndarray:
    """N x C x H x W -> N x C x size x size with ``resize_weights``: along the width, then the height."""
    x = x @ resize_weights(x.shape[-1], size).T
    return resize_weights(x.shape[-2], size) @ x


@lru_cache(maxsize=16)
def _normalise_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """3 x 256: each channel's normalised value of every uint8 level, (v / 255 - mean) / std in float32."""
    levels = np.arange(256, dtype=np.float32)[None] / np.float32(255.0)
    return ((levels - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None]).astype(np.float32)


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
