"""One task's stage of two or more pipelines, timed in interleaved rounds: is a candidate model within its time budget?

    .venv/bin/python benchmarks/stage_time.py --pipeline shipped=maskage/pretrained --pipeline NAME=DIR \
        [--task mask] [--n 128] [--rounds 7] [--float32]

The photos are those of ``benchmarks/speed.py`` (UTKFace faces on 384x512 canvases); each pipeline crops and
preprocesses them for its own model, then every round times each pipeline's model on all of them (one call, the
pipeline's own batching) in turn, so that a machine's drift reaches every contender alike. Printed: photos/s per
round, the median, and each pipeline's median time as a multiple of the first's. ``--float32`` runs the float32
exports (``MASKAGE_INT8=0``). The mask stage's budget is 1.3x the shipped one's.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_line  # noqa: E402
from speed import photos  # noqa: E402
from maskage.pipeline.core import Pipeline  # noqa: E402


def stage_rates(pipes: dict[str, Pipeline], images: list[np.ndarray], task: str, rounds: int) -> dict[str, list]:
    """Photos/s of each pipeline's ``task`` stage in each of ``rounds`` interleaved rounds, on its own inputs for
    ``images`` (cropped and preprocessed once, outside the timing)."""
    inputs = {}
    for name, pipe in pipes.items():
        inputs[name] = pipe.model_inputs(images, pipe.detector.detect(images))[task]
        pipe.task_probs_inputs(task, inputs[name])  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in pipes}
    for _ in range(rounds):
        for name, pipe in pipes.items():
            start = time.perf_counter()
            pipe.task_probs_inputs(task, inputs[name])
            rates[name].append(len(images) / (time.perf_counter() - start))
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", action="append", required=True, help="NAME=DIR (two or more)")
    ap.add_argument("--task", default="mask", choices=("mask", "gender", "age"))
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--float32", action="store_true", help="run the float32 exports (MASKAGE_INT8=0)")
    args = ap.parse_args()
    if args.float32:
        os.environ["MASKAGE_INT8"] = "0"
    print(cpu_line(), flush=True)
    pipes = {}
    for spec in args.pipeline:
        name, _, folder = spec.rpartition("=")
        pipes[name or folder] = Pipeline.from_pretrained(folder)
    rates = stage_rates(pipes, photos(args.n), args.task, args.rounds)
    first = float(np.median(next(iter(rates.values()))))
    print(f"{args.task} stage, {args.n} photos, {args.rounds} interleaved rounds"
          f"{' (float32)' if args.float32 else ''}:")
    for name, r in rates.items():
        med = float(np.median(r))
        print(f"  {name:12} " + " ".join(f"{x:6.1f}" for x in r) + f"   median {med:6.1f} photos/s, "
              f"{first / med:.2f}x the first's time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
