"""A training run's checkpoint: written after every epoch, read by ``resume=true`` (weights, optimiser, schedule,
best-so-far, every random stream, and the log trimmed to the epochs it covers)."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import torch_save_atomic, write_csv_atomic
from ..errors import UsageError
from ..tables import read_csv_rows
from .config import TrainConfig, load_config
from .augment import TrainAugment

LOG_FIELDS = ["epoch", "lr", "train_loss", "val_accuracy", "val_macro_f1", "val_selection_f1", "seconds"]


def restore(checkpoint: dict, config: TrainConfig, model, optimizer, scheduler, scaler, generator, augment,
             state: dict, log_path: Path, main_proc: bool) -> int:
    """Continue from a checkpoint: weights, optimiser, schedule, best-so-far, random streams, and the log trimmed to
    the epochs it covers. Returns the first epoch to train."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    state.update(best_f1=checkpoint["best_f1"], best_epoch=checkpoint["best_epoch"], stale=checkpoint["stale"],
                 best_metrics=dict(checkpoint["best_metrics"]))
    # under torchrun the checkpoint holds process 0's augmentation stream; the others restart theirs from their seeds
    set_rng_states(checkpoint["rng"], generator, augment)
    # the log keeps the epochs the checkpoint covers; a killed epoch's row, if any, goes
    logged = read_csv_rows(log_path, LOG_FIELDS) if log_path.is_file() else []
    kept = [r for r in logged if int(r["epoch"]) <= checkpoint["epoch"]]
    if main_proc:
        write_csv_atomic(log_path, LOG_FIELDS, [[r[k] for k in LOG_FIELDS] for r in kept])
    return checkpoint["epoch"] + 1 if not checkpoint["finished"] else config.epochs + 1


CHECKPOINT_NAME = "checkpoint.pt"


def rng_states(generator: torch.Generator, augment: TrainAugment | None) -> dict[str, Any]:
    """Every random state a training epoch draws from, in a form ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy": [np_state[0], torch.as_tensor(np_state[1].astype(np.int64)), *np_state[2:]],
        "augment": augment.rng.bit_generator.state if augment is not None else {},
    }


def set_rng_states(states: dict[str, Any], generator: torch.Generator, augment: TrainAugment | None) -> None:
    torch.set_rng_state(states["torch"])
    generator.set_state(states["generator"])
    random.setstate((3, tuple(states["python"]), states["python_pos"]))
    np_state = states["numpy"]
    np.random.set_state((np_state[0], np_state[1].numpy().astype(np.uint32), *np_state[2:]))
    if augment is not None and states["augment"]:
        augment.rng.bit_generator.state = states["augment"]


def write_checkpoint(out: Path, state: dict[str, Any]) -> None:
    """Everything needed to continue after this epoch, written atomically (a kill leaves the previous one)."""
    torch_save_atomic(state, out / CHECKPOINT_NAME)


def read_checkpoint(out: Path, config: TrainConfig) -> dict[str, Any] | None:
    """The run's last checkpoint, or None for a fresh start; refuses a run made with other settings."""
    path = out / CHECKPOINT_NAME
    if not path.is_file():
        return None
    saved = load_config(out / "config.yaml").to_dict()
    now = config.to_dict()
    changed = sorted(k for k in now if k != "resume" and saved.get(k) != now[k])
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed)
        raise UsageError(f"resume: {out} was trained with other settings ({diffs}); use another output_dir or the "
                         "same settings")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UsageError(f"resume: cannot read {path} ({type(exc).__name__}: {exc})") from None
