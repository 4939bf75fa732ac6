"""Pseudo-labels: a trained pipeline labels unlabelled photos; training can then add the confident ones
(``pseudo_labels=CSV pseudo_threshold=P``), never to validation."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..atomic import write_csv_atomic
from ..combine import age_group_probs
from .data import Sample, task_samples
from ..tables import DatasetError, read_csv_rows
from ..images import ImageError, batches, load_image
from ..labels import GENDER_LABELS, MASK_LABELS
from ..progress import bar

PSEUDO_COLUMNS = ("path", "mask", "gender", "age_bin", "age", "p_mask", "p_gender", "p_age_group")


def pseudo_label(pipeline, paths: Sequence[str], out: str | Path, batch_size: int = 32,
                 progress: bool = True) -> Path:
    """Write each photo's predicted labels and their confidences to ``out`` (CSV): mask state, gender, the most
    likely fine age bin (and an age inside it), each task's top probability (age: of the predicted age group).
    Faces are found and classified as ``Pipeline.predict`` does; unreadable photos are left out. The confidence
    threshold is applied when training reads the file."""
    rows = []
    with bar(total=len(paths), desc="photos", unit="photo", enabled=progress) as counter:
        for batch in batches(list(paths), batch_size):
            rows += _label_rows(pipeline, batch)
            counter.update(len(batch))
    return write_csv_atomic(out, PSEUDO_COLUMNS, rows)


def _label_rows(pipeline, paths: Sequence[str]) -> list[list]:
    """The pseudo-label CSV rows of the readable photos among ``paths``."""
    spec = pipeline.models["age"].spec
    arrays, kept = [], []
    for path in paths:
        try:
            arrays.append(load_image(path))
            kept.append(path)
        except ImageError:
            continue
    if not arrays:
        return []
    inputs = pipeline.model_inputs(arrays, pipeline.detector.detect(arrays))
    probs = {task: pipeline.task_probs_inputs(task, x) for task, x in inputs.items()}
    groups = age_group_probs(probs["age"], spec.age_groups)
    rows = []
    for path, pm, pg, pa, pgroup in zip(kept, probs["mask"], probs["gender"], probs["age"], groups):
        k = int(pa.argmax())  # the fine bin: Prediction only carries the age groups
        rows.append([str(path), MASK_LABELS[int(pm.argmax())], GENDER_LABELS[int(pg.argmax())], k,
                     spec.age_bin_edges[k], f"{pm.max():.5f}", f"{pg.max():.5f}", f"{pgroup[spec.age_groups[k]]:.5f}"])
    return rows


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
