"""Scores of 18-class predictions: macro F1 overall and per task, and the confusion matrix."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

from .combine import decode_many
from .errors import UsageError
from .labels import NUM_CLASSES


def score(true_ids: Sequence[int], pred_ids: Sequence[int], intervals: bool = False) -> dict[str, Any]:
    """Macro F1 over the 18 classes, macro F1 of each task, accuracy and the 18 x 18 confusion matrix; with
    ``intervals``, each F1's bootstrap 95% interval too (``macro_f1_ci``, ``mask_f1_ci``, ...; images resampled)."""
    t, p = np.asarray(true_ids, dtype=np.int64), np.asarray(pred_ids, dtype=np.int64)
    if len(t) != len(p) or len(t) == 0:
        raise UsageError(f"need equally many, and some, true and predicted ids; got {len(t)} and {len(p)}")
    dt, dp = decode_many(t), decode_many(p)
    out: dict[str, Any] = {
        "n": int(len(t)),
        "accuracy": float((t == p).mean()),
        # over the classes present in truth or prediction, as the competition's scikit-learn call did
        "macro_f1": float(f1_score(t, p, average="macro", zero_division=0)),
    }
    for k, task in enumerate(("mask", "gender", "age")):
        out[f"{task}_f1"] = float(f1_score(dt[:, k], dp[:, k], average="macro", zero_division=0))
    if intervals:
        out["macro_f1_ci"] = interval(bootstrap_f1(t, [p])[:, 0])
        for k, task in enumerate(("mask", "gender", "age")):
            out[f"{task}_f1_ci"] = interval(bootstrap_f1(dt[:, k], [dp[:, k]])[:, 0])
    out["confusion"] = confusion_matrix(t, p, labels=list(range(NUM_CLASSES))).tolist()
    return out


def resamples(n: int, rounds: int = 1000, seed: int = 0) -> np.ndarray:
    """Row indices of ``rounds`` bootstrap resamples of ``n`` rows, drawn with replacement: (rounds, n)."""
    return np.random.default_rng(seed).integers(0, n, (rounds, n))


def bootstrap_f1(truth: Sequence, preds: Sequence[Sequence], rounds: int = 1000, seed: int = 0,
                 labels: Sequence | None = None) -> np.ndarray:
    """Macro F1 of each prediction on ``rounds`` resamples of the rows: (rounds, len(preds)). The same seed and
    length draw the same resamples, so the columns, and calls on the same rows, are paired. As sklearn's macro F1
    (zero_division=0): over ``labels``, each counted (0 where absent), or by default over the classes in each
    resample's truth or guesses."""
    truth = np.asarray(truth)
    idx = resamples(len(truth), rounds, seed)
    classes = np.unique(np.concatenate([truth, *map(np.asarray, preds)])) if labels is None else labels
    absent = np.nan if labels is None else 0.0
    t = truth[idx]
    out = []
    for p in preds:
        pp = np.asarray(p)[idx]
        per_class = []
        for c in classes:
            tp = ((t == c) & (pp == c)).sum(1)
            wrong = ((t == c) != (pp == c)).sum(1)  # false positives and false negatives
            per_class.append(np.where(tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), absent))
        out.append(np.nanmean(per_class, 0))
    return np.stack(out, 1)


def interval(samples: np.ndarray) -> list[float]:
    """The central 95% of bootstrap samples."""
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]


def format_report(s: dict[str, Any]) -> str:
    """A plain-text report of ``score``'s output (with its 95% intervals where it has them)."""
    def ci(key: str) -> str:
        return f" [{s[key + '_ci'][0]:.3f}-{s[key + '_ci'][1]:.3f}]" if key + "_ci" in s else ""

    lines = [
        f"images: {s['n']}",
        f"18-class macro F1: {s['macro_f1']:.4f}{ci('macro_f1')}   accuracy: {s['accuracy']:.4f}",
        f"mask F1: {s['mask_f1']:.4f}{ci('mask_f1')}   gender F1: {s['gender_f1']:.4f}{ci('gender_f1')}   "
        f"age-group F1: {s['age_f1']:.4f}{ci('age_f1')}",
        "confusion matrix (rows = truth, columns = prediction):",
        "     " + "".join(f"{j:>5}" for j in range(NUM_CLASSES)),
    ]
    for i, row in enumerate(s["confusion"]):
        lines.append(f"{i:>5}" + "".join(f"{v:>5}" for v in row))
    return "\n".join(lines)


def read_class_csv(path: str | Path) -> dict[str, int]:
    """Image key -> class id from a CSV with ``ImageID,ans`` (submit) or ``path,class`` (predict; keyed by file name)."""
    from .tables import read_csv_rows

    path = Path(path)
    rows = read_csv_rows(path, [])
    cols = list(rows[0]) if rows else _header(path)
    if "ImageID" in cols and "ans" in cols:
        key, val = "ImageID", "ans"
    elif "path" in cols and "class" in cols:
        key, val = "path", "class"
    else:
        raise UsageError(f"{path}: needs columns ImageID,ans or path,class; found {cols}")
    out: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        k = Path(row[key]).name if key == "path" else row[key]
        try:
            c = int(row[val])
        except ValueError:
            raise UsageError(f"{path} line {line}: {val}={row[val]!r} is not a class id") from None
        if not 0 <= c < NUM_CLASSES:
            raise UsageError(f"{path} line {line}: class {c} is outside 0..{NUM_CLASSES - 1}")
        if k in out:
            raise UsageError(f"{path} line {line}: {k} listed twice")
        out[k] = c
    return out


def _header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])
