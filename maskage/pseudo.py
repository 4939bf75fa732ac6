"""Pseudo-labels: a trained pipeline labels unlabelled photos; training can then add the confident ones
(``pseudo_labels=CSV pseudo_threshold=P``), never to validation."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .atomic import write_csv_atomic
from .data import DatasetError, Sample, read_csv_rows, task_samples
from .labels import GENDER_LABELS, MASK_LABELS

PSEUDO_COLUMNS = ("path", "mask", "gender", "age_bin", "age", "p_mask", "p_gender", "p_age_group")


def pseudo_label(pipeline, paths: Sequence[str], out: str | Path, batch_size: int = 32) -> Path:
    """Write each photo's predicted labels and their confidences to ``out`` (CSV): mask state, gender, the most
    likely fine age bin (and an age inside it), each task's top probability (age: of the predicted age group).
    Unreadable photos are left out. The confidence threshold is applied when training reads the file."""
    rows = []
    model = pipeline.models["age"]
    edges, groups = model.spec.age_bin_edges, model.spec.age_groups
    for start in range(0, len(paths), batch_size):
        chunk = list(paths[start : start + batch_size])
        preds = pipeline.predict(chunk, batch_size=batch_size)
        # fine-bin probabilities are not in a Prediction: compute them from the same crops
        bins = _age_bin_probs(pipeline, chunk, preds)
        for path, p, b in zip(chunk, preds, bins):
            if p.error:
                continue
            k = int(np.argmax(b))
            group_p = list(p.age_probs.values())[groups[k]]
            rows.append([str(path), p.mask, p.gender, k, edges[k], f"{max(p.mask_probs.values()):.5f}",
                         f"{max(p.gender_probs.values()):.5f}", f"{group_p:.5f}"])
    return write_csv_atomic(out, PSEUDO_COLUMNS, rows)


def _age_bin_probs(pipeline, paths: Sequence[str], preds) -> np.ndarray:
    from .faces import Detection
    from .images import load_image

    ok = [i for i, p in enumerate(preds) if not p.error]
    out = np.zeros((len(paths), len(pipeline.models["age"].spec.labels)), dtype=np.float32)
    if ok:
        arrays = [load_image(paths[i]) for i in ok]
        inputs = pipeline.model_inputs(arrays, [Detection(preds[i].face_box) for i in ok])
        out[ok] = pipeline.task_probs_inputs("age", inputs["age"])
    return out


def pseudo_samples(csv_path: str | Path, task: str, threshold: float, gender_age_photos: str = "wear") -> list[Sample]:
    """The photos of a pseudo-label CSV whose ``task`` label is at least ``threshold`` confident, as samples of
    that task (each its own person, so that none can share a fold with a labelled person)."""
    rows = read_csv_rows(Path(csv_path), PSEUDO_COLUMNS)
    conf = {"mask": "p_mask", "gender": "p_gender", "age": "p_age_group"}[task]
    samples = []
    for i, r in enumerate(rows, start=2):
        try:
            s = Sample(r["path"], f"pseudo:{r['path']}", MASK_LABELS.index(r["mask"]),
                       GENDER_LABELS.index(r["gender"]), int(r["age"]))
            keep = float(r[conf]) >= threshold
        except ValueError as exc:
            raise DatasetError(f"{csv_path}, line {i}: bad pseudo-label row ({exc})") from None
        if keep:
            samples.append(s)
    return task_samples(samples, task, gender_age_photos)
