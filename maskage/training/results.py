"""What a training run gives back, and how a model's validation probabilities are scored (one run or k folds)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from ..combine import age_group_probs, encode_many
from ..labels import unpack_heads


@dataclass
class TrainResult:
    """Where the run went and how its best epoch scored on the validation people."""

    output_dir: Path
    best_epoch: int
    best_f1: float
    metrics: dict[str, Any]


def score_probs(probs: np.ndarray, targets: np.ndarray, spec) -> dict[str, Any]:
    """``evaluate``'s scores for given probabilities of a model with this ``ModelSpec``. The joint and
    multi-head baselines are scored on the 18 classes (and each task), as the pipeline is."""
    targets = np.asarray(targets)
    if spec.task in ("joint", "multihead") and len(targets):
        from ..models.joint import class_ids
        from ..metrics import score

        if spec.task == "joint":
            true_ids = targets
        else:
            mask, gender, age_bin = unpack_heads(targets, spec.heads[2])
            true_ids = encode_many(mask, gender, np.asarray(spec.age_groups)[age_bin])
        out = {k: v for k, v in score(true_ids, class_ids(probs, spec)).items() if k != "confusion"}
        return dict(out, selection_f1=out["macro_f1"], probs=probs)
    age_groups = spec.age_groups if spec.task == "age" else None
    pred = probs.argmax(1)
    # macro F1 over the classes present in truth or prediction, as scikit-learn (and the competition) do
    out: dict[str, Any] = {
        "n": int(len(targets)),
        "accuracy": float((pred == targets).mean()) if len(targets) else 0.0,
        "macro_f1": float(f1_score(targets, pred, average="macro", zero_division=0)),
    }
    out["selection_f1"] = out["macro_f1"]
    if age_groups is not None:
        groups = np.asarray(age_groups)
        gpred = age_group_probs(probs, groups).argmax(1)
        gtrue = groups[targets]
        out["group_accuracy"] = float((gpred == gtrue).mean()) if len(targets) else 0.0
        out["group_macro_f1"] = float(f1_score(gtrue, gpred, average="macro", zero_division=0))
        out["selection_f1"] = out["group_macro_f1"]
    out["probs"] = probs
    return out
OOF_NAME = "oof_predictions.csv"
