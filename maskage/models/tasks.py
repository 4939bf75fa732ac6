"""The task registry: what each kind of task model outputs, learns from which photos, and what it learns for each.

One entry per task (the pipeline's three, and the two single-model baselines); ``task_kind(name)`` is what every
place that depends on the task looks up, instead of a chain of ``if task == ...``. Torch-free.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

from ..errors import UsageError
from ..labels import GENDER_LABELS, MASK_LABELS, AgeBins, Mask, class_labels, encode, pack_heads


@runtime_checkable
class TaskPredictor(Protocol):
    """What a pipeline slot holds, whatever the kind of model: a ``TaskModel`` (PyTorch), an ``OnnxTaskModel``
    (ONNX Runtime), a ``TaskEnsemble`` of either, or a ``TaskView`` of a joint or multi-head model. ``spec`` is the
    ``ModelSpec`` that says how its crops are cut and preprocessed and what it outputs."""

    spec: Any

    @property
    def task(self) -> str: ...

    def eval(self) -> "TaskPredictor": ...

    def predict_proba(self, crops: Any, batch_size: int = 64) -> Any:
        """N x S x S x 3 uint8 face crops -> N x len(spec.labels) probabilities (numpy)."""


@runtime_checkable
class InputPredictor(TaskPredictor, Protocol):
    """A single model (not an ensemble): it also takes inputs already made by ``transforms.preprocess``, so that
    models sharing crop and preprocessing share one input."""

    def predict_inputs(self, inputs: Any, batch_size: int = 64) -> Any: ...


@dataclass(frozen=True)
class TaskKind:
    name: str
    labels: Callable[[AgeBins], list[str]]  # the model's outputs, in order
    target: Callable[[Any, AgeBins], int]  # a training sample -> the class index learnt for it
    photos: str  # "all": every photo with a mask state; "gender_age": the gender and age photos (see task_samples)
    needs_gender: bool  # its photos need a known gender (mask-only folders are left out)
    needs_age: bool  # its photos need a known age (gender-only sources are left out)
    age_bins: bool  # its spec records the age bins and groups


_KINDS = (
    TaskKind("mask", lambda b: list(MASK_LABELS), lambda s, b: s.mask, "all", False, False, False),
    TaskKind("gender", lambda b: list(GENDER_LABELS), lambda s, b: s.gender, "gender_age", True, False, False),
    TaskKind("age", lambda b: list(b.labels), lambda s, b: b.bin_of(s.age), "gender_age", True, True, True),
    # the single 18-class baseline
    TaskKind("joint", lambda b: list(class_labels(b.threshold)),
             lambda s, b: encode(s.mask, s.gender, s.age_group(b.threshold)), "all", True, True, True),
    # three heads on one backbone, outputs side by side; the three targets in one number (losses.MultiHeadLoss)
    TaskKind("multihead",
             lambda b: [f"mask:{x}" for x in MASK_LABELS] + [f"gender:{x}" for x in GENDER_LABELS]
             + [f"age:{x}" for x in b.labels],
             lambda s, b: pack_heads(s.mask, s.gender, b.bin_of(s.age), len(b)), "all", True, True, True),
)
TASK_KINDS: dict[str, TaskKind] = {k.name: k for k in _KINDS}


def task_kind(name: str) -> TaskKind:
    """The registry entry of a task; a clear error naming the known ones otherwise."""
    try:
        return TASK_KINDS[name]
    except KeyError:
        raise UsageError(f"unknown task {name!r}; expected {', '.join(TASK_KINDS)}") from None


def keeps_photo(kind: TaskKind, sample: Any, gender_age_photos: str = "wear") -> bool:
    """Whether a task trains on this photo: it must carry the task's labels; the gender and age tasks take the
    correctly masked photos (``gender_age_photos="wear"``) or all (``"all"``)."""
    if (kind.needs_gender and sample.gender < 0) or (kind.needs_age and sample.age < 0):
        return False
    if kind.photos == "all":
        return sample.mask >= 0
    return gender_age_photos == "all" or sample.mask == Mask.WEAR
