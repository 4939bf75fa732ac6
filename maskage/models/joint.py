"""The single-model baselines seen as the three task models: the 18-class ``joint`` model and the ``multihead``
model (one backbone, three heads). A ``TaskView`` gives one task's probabilities from such a model, so the
pipeline, ensembles and benchmarks use them as they use the separate models."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..combine import age_group_probs, encode_many
from ..errors import UsageError
from ..labels import AGE_HEAD_START, GENDER_LABELS, JOINT_TASKS, MASK_LABELS, NUM_CLASSES, age_group_labels, class_grid


def view_probs(probs: np.ndarray, spec, task: str) -> np.ndarray:
    """One task's probabilities from a joint or multi-head model's: mask N x 3, gender N x 2, and for age the
    age groups (joint, N x 3) or the fine bins (multi-head). The joint model's are sums over its 18 classes."""
    probs = np.asarray(probs)
    if spec.task == "joint":
        p = class_grid(probs)
        axes = {"mask": (2, 3), "gender": (1, 3), "age": (1, 2)}[task]
        return p.sum(axis=axes)
    if spec.task == "multihead":
        n_mask, n_gender, n_bins = spec.heads
        start = {"mask": 0, "gender": n_mask, "age": n_mask + n_gender}[task]
        size = {"mask": n_mask, "gender": n_gender, "age": n_bins}[task]
        return probs[:, start : start + size]
    raise UsageError(f"{spec.task} is not a joint or multi-head model")


def class_ids(probs: np.ndarray, spec) -> np.ndarray:
    """The class ids (0..17) a pipeline gives from a joint or multi-head model's probabilities: each task's most
    likely label (the multi-head age bins summed into groups first)."""
    age = view_probs(probs, spec, "age")
    if spec.task == "multihead":
        age = age_group_probs(age, spec.age_groups)
    return encode_many(view_probs(probs, spec, "mask").argmax(1), view_probs(probs, spec, "gender").argmax(1),
                       age.argmax(1))


def view_spec(spec, task: str):
    """The spec a task model would have: the joint or multi-head model's crop, size and normalisation, the
    task's labels; the joint model's age 'bins' are the three age groups."""
    if task == "mask":
        return dataclasses.replace(spec, task=task, labels=list(MASK_LABELS), age_bin_edges=None, age_threshold=None,
                                   age_groups=None)
    if task == "gender":
        return dataclasses.replace(spec, task=task, labels=list(GENDER_LABELS), age_bin_edges=None,
                                   age_threshold=None, age_groups=None)
    if spec.task == "joint":
        return dataclasses.replace(spec, task=task, labels=list(age_group_labels(spec.age_threshold)),
                                   age_bin_edges=None, age_groups=[0, 1, 2])
    return dataclasses.replace(spec, task=task, labels=[x.split(":", 1)[1] for x in spec.labels[AGE_HEAD_START:]])


class SharedModel:
    """A joint or multi-head model shared by its three views: one forward pass serves all three when they get
    the same input tensor (the pipeline gives models with the same settings the same one)."""

    def __init__(self, model: Any) -> None:
        if model.task not in JOINT_TASKS:
            raise UsageError(f"a shared model is a joint or multihead model, got a {model.task} model")
        if len(model.spec.labels) != (NUM_CLASSES if model.task == "joint" else sum(model.spec.heads)):
            raise UsageError(f"{model.task} model with {len(model.spec.labels)} outputs")
        self.model = model
        self._last: tuple[Any, np.ndarray] | None = None

    def predict_inputs(self, inputs, batch_size: int = 64) -> np.ndarray:
        if self._last is not None and self._last[0] is inputs:
            return self._last[1]
        probs = self.model.predict_inputs(inputs, batch_size)
        self._last = (inputs, probs)  # holding the input keeps its identity from being reused
        return probs

    def views(self) -> dict[str, "TaskView"]:
        return {task: TaskView(self, task) for task in ("mask", "gender", "age")}


class TaskView:
    """One task of a joint or multi-head model, with a ``TaskModel``'s ``task``, ``spec``, ``predict_proba``
    and ``predict_inputs``."""

    def __init__(self, shared: SharedModel, task: str) -> None:
        self.shared, self._task = shared, task
        view_spec(shared.model.spec, task)  # a model the view cannot serve fails here, not on first use

    @property
    def spec(self):
        """The task's view of the model's spec, made from it on each use: a change to the model's crop settings
        (``pipeline.set_frame``) reaches every view at once."""
        return view_spec(self.shared.model.spec, self._task)

    @property
    def task(self) -> str:
        return self._task

    @property
    def model(self) -> Any:
        """The joint or multi-head model behind the view."""
        return self.shared.model

    def eval(self) -> "TaskView":
        self.shared.model.eval()
        return self

    def predict_inputs(self, inputs, batch_size: int = 64) -> np.ndarray:
        return view_probs(self.shared.predict_inputs(inputs, batch_size), self.shared.model.spec, self.task)

    def predict_proba(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return view_probs(self.shared.model.predict_proba(crops, batch_size), self.shared.model.spec, self.task)
