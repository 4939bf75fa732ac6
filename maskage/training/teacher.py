"""A teacher's soft labels for training (knowledge distillation): FaceRes's own gender and age heads, off the shelf,
label every training crop once; the student then learns from ``(1 - w) x`` its loss on the true labels plus
``w x`` cross-entropy with the teacher's distribution (config ``teacher=faceres teacher_weight=w``).

FaceRes calls ages young (by 3 years on the multi-source build's training rows), so its age distribution is shifted
by the median gap between the true ages and its expected ages on the training rows (``teacher_age_shift=auto``)
before it is summed into the fine bins. Its outputs depend only on the crops, so they are cached in the crop cache's
folder. Measured (docs/measurements.md, 2026-12-02): neither teacher beat training on the true labels alone
across sources; the option stays for others' data and teachers.

A teacher can also be saved models of the student's own task (``teacher=DIR[,DIR...]``): their averaged
probabilities, e.g. to put an ensemble's knowledge into one model that costs a member's time.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..atomic import atomic_path
from ..labels import AgeBins
from ..progress import bar

TEACHERS = ("", "faceres", "gaussian")  # gaussian: no network, a distribution around each true age (age only)


def model_dirs(teacher: str) -> list[str]:
    """The saved-model folders a ``teacher`` setting names (comma-separated); [] for a named teacher."""
    return [] if teacher in TEACHERS else [d.strip() for d in teacher.split(",") if d.strip()]


def age_bin_matrix(bins: AgeBins, n_ages: int) -> np.ndarray:
    """``n_ages x len(bins)``: 1 where age a (0..n_ages-1) falls in the bin, as ``AgeBins.bin_of`` places it."""
    out = np.zeros((n_ages, len(bins)), np.float32)
    out[np.arange(n_ages), [bins.bin_of(a) for a in range(n_ages)]] = 1.0
    return out


def shift_ages(dist: np.ndarray, years: int) -> np.ndarray:
    """Move each age distribution (N x A) ``years`` older (younger if negative); mass beyond the ends stays there."""
    n_ages = dist.shape[1]
    out = np.zeros_like(dist)
    target = np.clip(np.arange(n_ages) + years, 0, n_ages - 1)
    np.add.at(out.T, target, dist.T)
    return out


def age_shift(dist: np.ndarray, true_ages: np.ndarray) -> int:
    """The whole years to add to a teacher's ages: the median of true age minus its expected age."""
    if not len(true_ages):
        return 0
    expected = dist @ np.arange(dist.shape[1], dtype=np.float64)
    return int(np.round(np.median(np.asarray(true_ages, np.float64) - expected)))


def soft_targets(task: str, labels: Sequence[str], bins: AgeBins, p_male: np.ndarray, age_dist: np.ndarray,
                 shift: int = 0) -> np.ndarray:
    """The teacher's distribution over a task's classes (N x classes): gender from P(male), age summed into bins."""
    if task == "gender":
        out = np.zeros((len(p_male), len(labels)), np.float32)
        out[:, list(labels).index("male")] = p_male
        out[:, list(labels).index("female")] = 1.0 - p_male
        return out
    if task == "age":
        return shift_ages(age_dist, shift) @ age_bin_matrix(bins, age_dist.shape[1])
    raise ValueError(f"a teacher labels gender or age, not {task!r}")


def gaussian_ages(true_ages: np.ndarray, sigma: float, n_ages: int = 100) -> np.ndarray:
    """A normal distribution over whole ages 0..n_ages-1 around each true age, sd ``sigma`` years (N x n_ages):
    label distribution learning, so that a 31-year-old also teaches a little of the bins either side of 30."""
    ages = np.arange(n_ages, dtype=np.float64)
    logits = -0.5 * ((ages[None, :] - np.asarray(true_ages, np.float64)[:, None]) / sigma) ** 2
    dist = np.exp(logits - logits.max(1, keepdims=True))
    return (dist / dist.sum(1, keepdims=True)).astype(np.float32)


def _cached(crop_dir: str | Path, kind: str, key: str,
            compute: Callable[[Path], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays cached in ``crop_dir/teacher`` under ``kind`` and a hash of ``key``; else ``compute(folder)``'s,
    saved there first."""
    path = Path(crop_dir) / "teacher" / f"{kind}_{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as saved:
            return {name: saved[name] for name in saved.files}
    arrays = compute(path.parent)
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return arrays


def faceres_outputs(crops: np.ndarray, paths: Sequence[str], crop_dir: str | Path, input_size: int,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """FaceRes's P(male) (N) and age distribution (N x 100) for the crops of ``paths``, computed once and cached
    in ``crop_dir/teacher``: ``crop_dir`` is the crop cache's folder (``CropCache.dir``, keyed by how the crops were
    made), the file's key the paths and the input size."""
    def compute(folder: Path) -> dict[str, np.ndarray]:
        from ..models.faceres import FaceResHeads

        if progress:  # a long step (about 45 min for 42,000 crops at 224 px on 2 busy cores): say so before it starts
            print(f"teacher: FaceRes labels {len(crops)} crops at {input_size} px, once (cached in {folder})",
                  flush=True)
        heads, males, ages, step = FaceResHeads(), [], [], 256
        for start in bar(range(0, len(crops), step), desc="teacher: FaceRes labels", enabled=progress):
            m, a = heads.predict(np.asarray(crops[start : start + step]), input_size)
            males.append(m)
            ages.append(a)
        return {"p_male": np.concatenate(males) if males else np.zeros(0, np.float32),
                "age": np.concatenate(ages) if ages else np.zeros((0, 100), np.float32)}

    out = _cached(crop_dir, "faceres", f"{input_size}|{crops.shape}|" + "\n".join(paths), compute)
    return out["p_male"], out["age"]


def model_outputs(crops: np.ndarray, paths: Sequence[str], crop_dir: str | Path, dirs: Sequence[str],
                  task: str, labels: Sequence[str], progress: bool = True) -> np.ndarray:
    """Saved models' averaged probabilities (N x classes) for the crops of ``paths``, each model at its own input
    size, computed once and cached in ``crop_dir/teacher`` (keyed by the models' weights, the paths and the
    crops' shape). The models must be of ``task`` with the student's ``labels`` in the same order."""
    from ..models.spec import ModelFileError, read_model_json

    metas = [read_model_json(Path(d)) for d in dirs]
    for d, meta in zip(dirs, metas):  # before the cache too: another class order would teach the wrong classes
        if list(meta.get("labels", [])) != list(labels):
            raise ModelFileError(f"teacher {d} has labels {meta.get('labels')}, the student {list(labels)}")

    def compute(folder: Path) -> dict[str, np.ndarray]:
        from ..models.ensemble import TaskEnsemble
        from ..models.torch_model import TaskModel

        teacher = TaskEnsemble([TaskModel.load(d, task) for d in dirs])
        if progress:  # a long step (minutes per 10,000 crops on a CPU): say so before it starts
            print(f"teacher: {len(dirs)} model(s) label {len(crops)} crops, once (cached in {folder})", flush=True)
        step = 256
        parts = [teacher.predict_proba(np.asarray(crops[i : i + step])) for i in
                 bar(range(0, len(crops), step), desc="teacher: model labels", enabled=progress)]
        return {"probs": np.concatenate(parts) if parts else np.zeros((0, len(labels)), np.float32)}

    weights = "|".join(json.dumps(m.get("sha256"), sort_keys=True) for m in metas)
    key = f"{crops.shape}|{weights}\n" + "\n".join(paths)
    return _cached(crop_dir, "models", key, compute)["probs"]


class DistillLoss(nn.Module):
    """``(1 - weight) x base(logits, true) + weight x`` cross-entropy with the teacher's soft labels. The targets
    it is called with are row numbers into its tables (the true label and the teacher's distribution of each
    training photo), so that MixUp and the samplers work on them unchanged."""

    def __init__(self, base: nn.Module, hard: np.ndarray, soft: np.ndarray, weight: float) -> None:
        super().__init__()
        self.base, self.weight = base, float(weight)
        self.register_buffer("hard", torch.as_tensor(np.asarray(hard), dtype=torch.long))
        self.register_buffer("soft", torch.as_tensor(np.asarray(soft), dtype=torch.float32))

    def forward(self, logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        soft = -(self.soft[rows] * F.log_softmax(logits.float(), dim=1)).sum(1).mean()
        return (1.0 - self.weight) * self.base(logits, self.hard[rows]) + self.weight * soft
