"""The task models run on a batch of faces: each distinct crop and input made once, every forward pass (each
ensemble member, each test-time view, each task) handed to the models at once."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..detect.faces import Box, crop_faces
from ..errors import UsageError
from .ensemble import TaskEnsemble, members
from .onnx_model import run_models
from .transforms import TTA_TRANSFORMS, preprocess


def face_inputs(models: dict[str, Any], arrays: Sequence[np.ndarray], boxes: Sequence[Box | None]) -> dict[str, list]:
    """Per task, each model's (each ensemble member's) preprocessed input for these photos' faces. Models usually
    share crop, size and normalisation: each distinct crop and preprocessing is made once."""
    crops: dict[Any, np.ndarray] = {}
    made: dict[tuple, Any] = {}
    out: dict[str, list] = {}
    for task, model in models.items():
        out[task] = []
        for m in members(model):
            spec = m.spec
            if spec.crop_settings not in crops:
                crops[spec.crop_settings] = crop_faces(arrays, boxes, spec.crop_settings)
            key = (spec.crop_settings, spec.input_size, tuple(spec.mean), tuple(spec.std))
            if key not in made:
                made[key] = preprocess(crops[spec.crop_settings], spec.input_size, spec.mean, spec.std)
            out[task].append(made[key])
    return out


def tasks_probs(models: dict[str, Any], inputs: dict[str, Sequence], tta: dict[str, Sequence[str]],
                workers: int = 1) -> dict[str, np.ndarray]:
    """Each task's probabilities from its models' inputs: every forward pass (each member, each TTA view) of
    every task handed to the models at once (``run_models``, ``workers`` side by side), then averaged over the
    views and voted over the members."""
    jobs: list[tuple[str, int, Any, np.ndarray]] = []
    for task, xs in inputs.items():
        ms = members(models[task])
        if len(xs) != len(ms):
            raise UsageError(f"{task}: {len(ms)} model(s) need {len(ms)} input(s), got {len(xs)}")
        for k, (m, x) in enumerate(zip(ms, xs)):
            jobs += [(task, k, m, x)] + [(task, k, m, TTA_TRANSFORMS[n](x)) for n in tta.get(task, ())]
    views: dict[tuple[str, int], list[np.ndarray]] = {}
    for (task, k, _, _), p in zip(jobs, run_models([(m, x) for _, _, m, x in jobs], workers)):
        views.setdefault((task, k), []).append(p)
    out = {}
    for task in inputs:
        model = models[task]
        probs = [sum(v[1:], v[0]) / len(v) for v in (views[(task, k)] for k in range(len(members(model))))]
        out[task] = model.combine(probs) if isinstance(model, TaskEnsemble) else probs[0]
    return out
