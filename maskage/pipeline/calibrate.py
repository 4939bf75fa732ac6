"""Decision offsets for a task's classes, chosen on labelled validation people to maximise balanced macro F1.

On photos unlike its training data (another camera, light or people) a model can lean one way: many 31-year-olds
called <30, old women called men. A per-class offset on the log-probabilities (``combine.apply_bias``) moves the
decision boundary without retraining; whether it helps is for people it was not chosen on to say (on the shipped
models' own held-out sources it did not: docs/measurements.md, 2026-12-02). Pure numpy, no torch: the pipeline's
probabilities come in, the offsets go out (``maskage calibrate`` saves them in pipeline.json).
"""
from __future__ import annotations

import csv
import itertools
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np

from ..atomic import write_json_atomic
from ..errors import UsageError
from ..labels import GENDER_LABELS, MASK_LABELS, PIPELINE_TASKS, age_to_group

__all__ = ["balanced_weights", "weighted_macro_f1", "fit_bias", "read_labels", "task_truth", "calibrate_pipeline",
           "GRID"]

# offsets tried for each class after the first (whose offset is 0): +-1.5 in log-probability, 0.05 apart, so a
# class's odds move by at most a factor 4.5
GRID = np.round(np.arange(-1.5, 1.5001, 0.05), 2)


def balanced_weights(keys: Sequence[Hashable]) -> np.ndarray:
    """A weight per row, 1 / (rows sharing its key): every key (e.g. source x gender x age group) counts the same,
    as in the balanced benchmark sets."""
    counts = Counter(keys)
    return np.array([1.0 / counts[k] for k in keys])


def weighted_macro_f1(truth: np.ndarray, pred: np.ndarray, weights: np.ndarray, n_classes: int) -> float:
    """Macro F1 over the classes in ``truth`` or ``pred`` (as sklearn's), with row weights."""
    cm = np.zeros((n_classes, n_classes))
    np.add.at(cm, (truth, pred), weights)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)
    present = cm.sum(1) > 0
    f1 = np.divide(2 * tp, denom, out=np.zeros(n_classes), where=denom > 0)
    return float(f1[present | (cm.sum(0) > 0)].mean())


def fit_bias(probs: np.ndarray, truth: Sequence[int], weights: Sequence[float] | None = None,
             grid: np.ndarray = GRID) -> tuple[list[float], float, float]:
    """(offsets, macro F1 before, macro F1 after): the per-class log-probability offsets (the first class's 0) from
    ``grid`` that maximise the weighted macro F1 of ``argmax(log p + offsets)`` on these rows. Of offsets within
    0.002 of the best F1 the smallest (by their largest magnitude) wins: a flat optimum should not move the
    boundary far on a few rows."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(truth, dtype=np.int64)
    if p.ndim != 2 or len(p) != len(t) or len(t) == 0:
        raise UsageError(f"need N x K probabilities and N labels, got {p.shape} and {len(t)}")
    k = p.shape[1]
    if t.min() < 0 or t.max() >= k:
        raise UsageError(f"labels must be 0..{k - 1}")
    w = np.ones(len(t)) if weights is None else np.asarray(weights, dtype=np.float64)
    logp = np.log(np.clip(p, 1e-12, None))
    candidates = [np.array((0.0,) + c) for c in itertools.product(grid, repeat=k - 1)]
    scores = np.array([weighted_macro_f1(t, (logp + b).argmax(1), w, k) for b in candidates])
    before = weighted_macro_f1(t, logp.argmax(1), w, k)
    near = np.flatnonzero(scores >= scores.max() - 0.002)
    pick = near[np.argmin([np.abs(candidates[i]).max() + 1e-3 * np.abs(candidates[i]).sum() for i in near])]
    return [float(x) for x in candidates[pick]], before, float(scores[pick])


def read_labels(path: str | Path) -> list[dict]:
    """Rows of a calibration CSV: ``path`` (absolute, or relative to the CSV's folder) and any of ``gender``
    (male/female or 0/1), ``age`` (years; empty or -1 for unknown) and ``mask`` (wear/incorrect/not_wear or 0/1/2);
    an optional ``source`` column keeps sources apart when the rows are balanced. Each row comes back with the
    photo's full path and the labels as ints (-1 where unknown)."""
    path = Path(path)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "path" not in rows[0]:
        raise UsageError(f"{path}: need a `path` column and rows (columns: path, gender, age, mask, source)")
    if not {"gender", "age", "mask"} & set(rows[0]):
        raise UsageError(f"{path}: no label column (gender, age or mask)")
    out = []
    for i, r in enumerate(rows, start=2):
        try:
            out.append({"path": str(path.parent / r["path"]), "source": r.get("source") or "",
                        "gender": _label(r.get("gender"), GENDER_LABELS),
                        "age": -1 if (r.get("age") or "").strip() in ("", "-1") else int(float(r["age"])),
                        "mask": _label(r.get("mask"), MASK_LABELS)})
        except ValueError as exc:
            raise UsageError(f"{path}, line {i}: {exc}") from None
    return out


def _label(value: str | None, names: Sequence[str]) -> int:
    value = (value or "").strip().lower()
    if value in ("", "-1"):
        return -1
    if value in names:
        return names.index(value)
    if value.isdigit() and int(value) < len(names):
        return int(value)
    raise ValueError(f"{value!r} is not one of {', '.join(names)} (or 0..{len(names) - 1})")


def task_truth(rows: Sequence[dict], task: str, threshold: int) -> np.ndarray:
    """Each row's label for a task (age: its age group at ``threshold``), -1 where the row has none."""
    if task == "age":
        return np.array([age_to_group(r["age"], threshold) if r["age"] >= 0 else -1 for r in rows])
    return np.array([r[task] for r in rows])


def calibrate_pipeline(directory: str | Path | None, labels: str | Path, out: str | Path,
                       tasks: Sequence[str] = ("gender", "age"), batch_size: int = 32,
                       progress: bool = True) -> dict[str, dict]:
    """Fit each task's offsets (``fit_bias``) on the labelled photos of ``labels`` (``read_labels``) with the
    pipeline in ``directory`` (None: the shipped one), rows balanced over source x gender x age group, and write a
    copy of the pipeline with them in its pipeline.json into ``out``. Returns per task the offsets, the rows used
    and the balanced macro F1 before and after. Offsets already in the pipeline are replaced, not added to."""
    from .core import Pipeline
    from .files import PIPELINE_NAME, PRETRAINED_DIR

    src = Path(directory) if directory is not None else PRETRAINED_DIR
    unknown = set(tasks) - set(PIPELINE_TASKS)
    if unknown or not tasks:
        raise UsageError(f"tasks must be some of {', '.join(PIPELINE_TASKS)}, got {list(tasks)}")
    if Path(out).exists():
        raise UsageError(f"{out} exists: the calibrated pipeline goes into a new folder")
    rows = read_labels(labels)
    pipe = Pipeline.from_pretrained(src)
    pipe.bias = {}
    truths = {t: task_truth(rows, t, pipe.age_threshold) for t in tasks}
    for t, truth in truths.items():
        if (truth >= 0).sum() == 0:
            raise UsageError(f"{labels}: no row has a {t} label")
    preds = pipe.predict([r["path"] for r in rows], batch_size=batch_size, progress=progress)
    bad = [p.source for p in preds if p.error]
    if bad:
        raise UsageError(f"{len(bad)} calibration photo(s) could not be read, e.g. {bad[0]}")
    genders, groups = (task_truth(rows, t, pipe.age_threshold) for t in ("gender", "age"))
    keys = [(r["source"], g, a) for r, g, a in zip(rows, genders, groups)]
    result, bias = {}, {}
    for task, truth in truths.items():
        use = truth >= 0
        names = {"mask": "mask_probs", "gender": "gender_probs", "age": "age_probs"}[task]
        probs = np.array([list(getattr(p, names).values()) for p in preds])[use]
        weights = balanced_weights([k for k, u in zip(keys, use) if u])
        offsets, before, after = fit_bias(probs, truth[use], weights)
        result[task] = {"bias": offsets, "rows": int(use.sum()), "f1_before": before, "f1_after": after}
        bias[task] = offsets
    shutil.copytree(src, out)
    meta = json.loads((Path(out) / PIPELINE_NAME).read_text())
    meta["bias"] = {t: b for t, b in bias.items() if any(b)}
    meta["calibration"] = {"labels": str(labels), **{t: {k: v for k, v in r.items() if k != "bias"}
                                                      for t, r in result.items()}}
    write_json_atomic(Path(out) / PIPELINE_NAME, meta)
    return result
