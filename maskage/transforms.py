"""What a face crop becomes before a model sees it: resizing and normalisation (``preprocess``, the same for
training, evaluation and prediction) and the test-time transforms averaged with it (``TTA_TRANSFORMS``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UsageError
from .labels import PIPELINE_TASKS as TASKS

# test-time augmentation: a task's probabilities are the mean over the crop and these transforms of it
TTA_TRANSFORMS = {"hflip": lambda x: x.flip(-1)}  # on the normalised N x 3 x H x W input


def preprocess(crops: np.ndarray | torch.Tensor, input_size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """N x S x S x 3 uint8 crops -> N x 3 x input_size x input_size normalised float tensor.

    Used by evaluation and by ``Pipeline``, so both see the same pixels.
    """
    x = torch.as_tensor(crops)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != input_size or x.shape[-2] != input_size:
        x = F.interpolate(x, size=(input_size, input_size), mode="bilinear", antialias=True, align_corners=False)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()


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
