"""K-fold training: one model per person-disjoint fold, their out-of-fold predictions scored together."""
from __future__ import annotations

import csv
import dataclasses
import json
from typing import Callable

import numpy as np

from ..atomic import write_csv_atomic, write_json_atomic
from ..models.spec import FOLDS_NAME
from ..models.torch_model import TaskModel
from .config import TrainConfig, save_config
from .results import OOF_NAME, TrainResult, score_probs


def train_folds(config: TrainConfig, train: Callable[..., TrainResult], progress: bool = True) -> TrainResult:
    """K-fold training: one model per person-disjoint fold (``n_folds = folds``), each validated on the people
    the others train on, into ``output_dir/fold<k>``. Their validation predictions together are out-of-fold
    predictions for every training photo, written to ``oof_predictions.csv`` and scored in ``metrics.json``;
    ``folds.json`` lists the fold models, which ``Pipeline.from_runs`` loads as one soft-voted ensemble.
    A killed run continues with ``resume=true``: finished folds are kept. ``train``: the one-run trainer
    (``training.train.train``, which calls this for ``folds=K`` and passes itself, so that this module needs no
    import of it)."""
    out = config.resolved_output_dir()
    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.yaml")
    results = []
    for k in range(config.folds):
        fold_config = dataclasses.replace(config, folds=0, n_folds=config.folds, fold=k,
                                          output_dir=str(out / f"fold{k}"))
        done = (out / f"fold{k}" / "metrics.json").is_file() and config.resume
        if progress:
            print(f"fold {k + 1}/{config.folds}" + (": done before, kept" if done else ""), flush=True)
        if done:
            metrics = json.loads((out / f"fold{k}" / "metrics.json").read_text())
            results.append(TrainResult(out / f"fold{k}", metrics["best_epoch"], metrics["selection_f1"], metrics))
        else:
            results.append(train(fold_config, progress))
    rows, header = [], None
    for k, r in enumerate(results):
        with (r.output_dir / "val_predictions.csv").open(newline="") as f:
            reader = csv.reader(f)
            header = ["fold", *next(reader)]
            rows.extend([k, *row] for row in reader)
    write_csv_atomic(out / OOF_NAME, header, rows)
    pcols = [i for i, name in enumerate(header) if name.startswith("p") and name[1:].isdigit()]
    probs = np.array([[float(row[i]) for i in pcols] for row in rows], dtype=np.float64)
    targets = np.array([int(row[header.index("target")]) for row in rows])
    spec = TaskModel.load(results[0].output_dir, config.task).spec
    oof = {k: v for k, v in score_probs(probs, targets, spec).items() if k != "probs"}
    summary = {
        "task": config.task, "folds": config.folds, "oof": oof,
        "n_people": len({row[header.index("person")] for row in rows}),
        "per_fold": [{"fold": k, "best_epoch": r.best_epoch, "selection_f1": r.best_f1} for k, r in enumerate(results)],
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    write_json_atomic(out / FOLDS_NAME, {"format": "maskage-folds", "task": config.task,
                                         "folds": [f"fold{k}" for k in range(config.folds)]})
    if progress:
        print(f"out-of-fold {config.task}: macro F1 {oof['macro_f1']:.4f}, selection F1 {oof['selection_f1']:.4f} "
              f"({oof['n']} photos of {summary['n_people']} people)", flush=True)
    return TrainResult(out, 0, oof["selection_f1"], summary)
