"""Options and helpers that several ``maskage`` commands share."""
from __future__ import annotations

import argparse
from typing import Sequence

from ..errors import UsageError

BACKEND_HELP = ("auto (default): ONNX Runtime (exported files, or an export cached on first use); torch; "
                "onnx: the pipeline's exported files only")


def task_values(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``["age=1,2"]`` -> ``{"age": "1,2"}``: a CLI flag's TASK=VALUE items."""
    out = {}
    for item in items or []:
        task, sep, value = item.partition("=")
        if not sep or not value:
            raise UsageError(f"{flag} takes TASK=VALUE, got {item!r}")
        out[task] = value
    return out


def add_batch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="photos read and classified together (default 32; fewer use less memory)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_pipelines_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", action="append", metavar="DIR",
                   help="pipeline directory (default: the one shipped with maskage); give it several times for an "
                        "ensemble voting at the 18-class level")
    p.add_argument("--voting", choices=["soft", "hard"], default="soft",
                   help="several pipelines: soft = weighted mean of their 18-class probabilities (default), "
                        "hard = weighted majority of their classes")
    p.add_argument("--weights", help="several pipelines: their voting weights, e.g. 2,1 (default: equal)")
    p.add_argument("--age-threshold", type=int, metavar="AGE", help="the age the oldest group starts at (default: the "
                   "pipeline's, 60): any edge of the age model's fine bins, e.g. 58 with the default bins")
    add_portrait_arg(p, "the pipeline's")


def add_portrait_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--portrait", choices=["mtcnn", "yunet"], help="the detector that finds the largest face of a "
                   f"photo (outside scene mode): mtcnn, or yunet on the photo scaled down (faster; default: {default})")


def predictor(args: argparse.Namespace):
    from dataclasses import replace

    from ..pipeline.ensemble import load_predictor

    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    predictor = load_predictor(args.pipeline or [None], backend=args.backend, voting=args.voting, weights=weights)
    for pipe in getattr(predictor, "pipelines", [predictor]):
        if getattr(args, "scene", None):
            pipe.detector_settings = replace(pipe.detector_settings, scene=args.scene)
        if args.portrait:
            pipe.detector_settings = replace(pipe.detector_settings, portrait=args.portrait)
        if getattr(args, "age_threshold", None) is not None:
            pipe.age_threshold = args.age_threshold
    return predictor
