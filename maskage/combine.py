"""Maps the three task predictions to the 18 class ids. Pure functions on numpy arrays, no torch."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .errors import UsageError
from .labels import GENDER_LABELS, MASK_LABELS, NUM_CLASSES, decode, encode

__all__ = ["encode", "decode", "encode_many", "decode_many", "age_group_probs", "apply_bias", "combine_probs", "combine",
           "soft_vote", "hard_vote", "vote", "check_voting", "VOTING"]

VOTING = ("soft", "hard")


def encode_many(mask: Sequence[int], gender: Sequence[int], age_group: Sequence[int]) -> np.ndarray:
    """Class ids of arrays of (mask, gender, age group) labels."""
    return np.array([encode(m, g, a) for m, g, a in zip(mask, gender, age_group)], dtype=np.int64)


def decode_many(class_ids: Sequence[int]) -> np.ndarray:
    """N x 3 array of (mask, gender, age group) for N class ids."""
    return np.array([decode(c) for c in class_ids], dtype=np.int64).reshape(-1, 3)


def age_group_probs(bin_probs: np.ndarray, groups: Sequence[int], n_groups: int = 3) -> np.ndarray:
    """N x 3 age-group probabilities: the sum of each group's fine-bin probabilities."""
    bin_probs = np.asarray(bin_probs, dtype=np.float64)
    groups = np.asarray(groups)
    if bin_probs.shape[-1] != len(groups):
        raise UsageError(f"{bin_probs.shape[-1]} bin probabilities but {len(groups)} bin groups")
    out = np.zeros(bin_probs.shape[:-1] + (n_groups,), dtype=np.float64)
    for g in range(n_groups):
        out[..., g] = bin_probs[..., groups == g].sum(axis=-1)
    return out


def apply_bias(probs: np.ndarray, bias: Sequence[float] | None) -> np.ndarray:
    """N x K probabilities times ``exp(bias)`` per class, renormalised: a decision offset on the log-probabilities
    (chosen on validation people, ``maskage.calibrate``) that moves the boundary between classes and keeps how the
    photos rank on each class. ``None`` or all zeros leaves them as they are."""
    if bias is None or not np.any(bias):
        return np.asarray(probs)  # no copy: the pipeline calls this on every batch, mostly without offsets
    probs = np.asarray(probs, dtype=np.float64)
    b = np.asarray(bias, dtype=np.float64)
    if b.shape != probs.shape[-1:] or not np.all(np.isfinite(b)):
        raise UsageError(f"a bias needs {probs.shape[-1]} finite numbers, got {list(np.ravel(bias))}")
    out = probs * np.exp(b - b.max())
    return out / out.sum(axis=-1, keepdims=True)


def combine_probs(mask: np.ndarray, gender: np.ndarray, age: np.ndarray) -> np.ndarray:
    """N x 18 class distribution: the product of the N x 3 mask, N x 2 gender and N x 3 age-group distributions."""
    mask, gender, age = (np.asarray(a, dtype=np.float64) for a in (mask, gender, age))
    if mask.shape[-1] != 3 or gender.shape[-1] != 2 or age.shape[-1] != 3:
        raise UsageError(f"expected N x 3, N x 2, N x 3 probabilities, got {mask.shape}, {gender.shape}, {age.shape}")
    # einsum order (mask, gender, age) flattens to mask*6 + gender*3 + age, the class encoding
    joint = np.einsum("nm,ng,na->nmga", mask, gender, age).reshape(len(mask), NUM_CLASSES)
    return joint


def combine(mask: np.ndarray, gender: np.ndarray, age: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class ids, N x 18 probabilities) from the three task distributions."""
    joint = combine_probs(mask, gender, age)
    return joint.argmax(axis=1), joint


def _vote_weights(n: int, weights: Sequence[float] | None) -> np.ndarray:
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise UsageError(f"need {n} non-negative weights with a positive sum, got {None if weights is None else list(weights)}")
    return w / w.sum()


def _stack(probs: Sequence[np.ndarray]) -> np.ndarray:
    if len(probs) == 0:
        raise UsageError("voting needs at least one set of probabilities")
    shapes = {np.shape(p) for p in probs}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise UsageError(f"voting needs N x K probabilities of one shape, got shapes {sorted(shapes)}")
    return np.stack([np.asarray(p, dtype=np.float64) for p in probs])


def soft_vote(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Soft voting: the weighted mean of M models' N x K probabilities (equal weights by default)."""
    p = _stack(probs)
    return np.einsum("m,mnk->nk", _vote_weights(len(p), weights), p)


def hard_vote(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Hard voting: N x K weighted shares of the M models' votes (each model votes for its argmax label).

    A tie between labels goes to the one with the higher soft-voted probability: the shares then carry a tiny
    part (1e-6) of it, so their argmax is the winner and they still sum to 1."""
    p = _stack(probs)
    w = _vote_weights(len(p), weights)
    votes = np.zeros(p.shape[1:])
    rows = np.arange(p.shape[1])
    for wi, pi in zip(w, p):
        votes[rows, pi.argmax(1)] += wi
    eps = 1e-6
    return (1 - eps) * votes + eps * np.einsum("m,mnk->nk", w, p)


def check_voting(n: int, weights: Sequence[float] | None = None, voting: str = "soft") -> list[float]:
    """The weights (equal by default) of an n-model vote, as floats; a ValueError for bad weights or voting."""
    if voting not in VOTING:
        raise UsageError(f"voting must be one of {', '.join(VOTING)}, got {voting!r}")
    _vote_weights(n, weights)
    return [1.0] * n if weights is None else [float(w) for w in weights]


def vote(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None, voting: str = "soft") -> np.ndarray:
    """``soft_vote`` or ``hard_vote`` by name."""
    if voting == "soft":
        return soft_vote(probs, weights)
    if voting == "hard":
        return hard_vote(probs, weights)
    raise UsageError(f"voting must be one of {', '.join(VOTING)}, got {voting!r}")


def check_bias(value: dict[str, Sequence[float]] | None) -> dict[str, tuple[float, ...]]:
    """Per task, decision offsets on its labels' log-probabilities (age: its three groups), checked: known tasks,
    one finite offset per label; all-zero offsets are left out."""
    sizes = {"mask": len(MASK_LABELS), "gender": len(GENDER_LABELS), "age": 3}
    out = {}
    for task, offsets in (value or {}).items():
        if task not in sizes:
            raise UsageError(f"bias: unknown task {task!r} (tasks: {', '.join(sizes)})")
        b = tuple(float(x) for x in offsets)
        if len(b) != sizes[task] or not all(np.isfinite(b)):
            raise UsageError(f"bias: {task} needs {sizes[task]} finite offsets, got {list(offsets)}")
        if any(b):
            out[task] = b
    return out
