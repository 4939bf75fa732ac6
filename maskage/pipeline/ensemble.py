"""Several pipelines voting at the 18-class level (``maskage predict --pipeline A --pipeline B``)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..combine import check_voting, combine_probs, vote
from ..errors import UsageError
from ..images import ImageInput, image_list
from ..labels import GENDER_LABELS, MASK_LABELS, age_group_labels, class_grid, encode
from .core import Pipeline, Prediction


class PipelineEnsemble:
    """Several pipelines voting at the 18-class level: each pipeline's 18-class distribution (the product of
    its task probabilities) is soft- or hard-voted (``combine.vote``); the class is the vote's winner and the
    task probabilities are the voted distribution's marginals. (A task-level ensemble, which votes each task's
    models before the combiner, is a ``TaskEnsemble`` inside one pipeline.)"""

    def __init__(self, pipelines: Sequence[Pipeline], weights: Sequence[float] | None = None,
                 voting: str = "soft") -> None:
        if not pipelines:
            raise UsageError("a pipeline ensemble needs at least one pipeline")
        thresholds = {p.age_threshold for p in pipelines}
        if len(thresholds) > 1:
            raise UsageError(f"the pipelines' age groups differ (age thresholds {sorted(thresholds)})")
        self.pipelines, self.voting = list(pipelines), voting
        self.weights = check_voting(len(self.pipelines), weights, voting)

    def predict(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32,
                progress: bool = False) -> list[Prediction]:
        """One ``Prediction`` per input, in order, as ``Pipeline.predict``; the face box is the first pipeline's.
        ``progress``: a bar per member pipeline."""
        images = image_list(images)
        runs = [p.predict(images, batch_size, progress) for p in self.pipelines]
        out = []
        labels = age_group_labels(self.pipelines[0].age_threshold)
        for i, first in enumerate(runs[0]):
            if first.error:
                out.append(first)
                continue
            joint = [combine_probs(np.array([list(r[i].mask_probs.values())]), np.array([list(r[i].gender_probs.values())]),
                                   np.array([list(r[i].age_probs.values())])) for r in runs]
            voted = class_grid(vote(joint, self.weights, self.voting)[0])
            m, g, a = np.unravel_index(int(voted.argmax()), voted.shape)
            out.append(Prediction(
                first.source, int(encode(m, g, a)), MASK_LABELS[m], GENDER_LABELS[g], labels[a],
                mask_probs=dict(zip(MASK_LABELS, map(float, voted.sum((1, 2))))),
                gender_probs=dict(zip(GENDER_LABELS, map(float, voted.sum((0, 2))))),
                age_probs=dict(zip(labels, map(float, voted.sum((0, 1))))),
                face_box=first.face_box, face_prob=first.face_prob,
            ))
        return out


def load_predictor(pipelines: Sequence[str | Path | None], backend: str = "auto", voting: str = "soft",
                   weights: Sequence[float] | None = None) -> "Pipeline | PipelineEnsemble":
    """One pipeline (``None``: the shipped one), or several as a ``PipelineEnsemble``."""
    if len(pipelines) <= 1:
        if weights is not None and len(weights) != 1:
            raise UsageError(f"{len(weights)} weights for one pipeline")
        return Pipeline.from_pretrained(pipelines[0] if pipelines else None, backend=backend)
    return PipelineEnsemble([Pipeline.from_pretrained(p, backend=backend) for p in pipelines], weights, voting)
