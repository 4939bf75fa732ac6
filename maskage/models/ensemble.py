"""Several models of one task used as one model: their probabilities soft- or hard-voted (``combine.vote``)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..combine import check_voting, vote
from ..errors import UsageError
from .spec import ModelFileError

# what every member of an ensemble must share: its outputs mean the same thing
_SHARED = ("task", "labels", "age_bin_edges", "age_threshold", "age_groups")


class TaskEnsemble:
    """Models of one task (folds, seeds, backbones, input sizes) as one: the same ``task``, ``spec`` and
    ``predict_proba`` as a ``TaskModel``. Each member gets its own crop and input size (its ``spec``); its
    probabilities are combined by ``voting`` with ``weights`` (equal by default)."""

    def __init__(self, members: Sequence[Any], weights: Sequence[float] | None = None, voting: str = "soft") -> None:
        if not members:
            raise UsageError("an ensemble needs at least one model")
        first = members[0].spec
        for i, m in enumerate(members[1:], 1):
            for key in _SHARED:
                if getattr(m.spec, key) != getattr(first, key):
                    raise ModelFileError(f"ensemble member {i} differs from member 0 in {key}: "
                                         f"{getattr(m.spec, key)!r} vs {getattr(first, key)!r}")
        self.members, self.voting = list(members), voting
        self.weights = check_voting(len(self.members), weights, voting)

    @property
    def spec(self):
        """The first member's spec: labels, age bins and threshold are the same for all."""
        return self.members[0].spec

    @property
    def task(self) -> str:
        return self.spec.task

    def eval(self) -> "TaskEnsemble":
        for m in self.members:
            m.eval()
        return self

    def combine(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        """The ensemble's probabilities from each member's (in member order)."""
        return vote(probs, self.weights, self.voting).astype(np.float32)

    def predict_proba(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Voted probabilities for N x S x S x 3 uint8 crops (each member resizes them to its input size)."""
        return self.combine([m.predict_proba(crops, batch_size) for m in self.members])


def members(model: Any) -> list:
    """The models behind a pipeline slot: an ensemble's members, else the model itself."""
    return list(model.members) if isinstance(model, TaskEnsemble) else [model]
