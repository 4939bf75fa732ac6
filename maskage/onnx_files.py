"""ONNX files in and out, for the task models (``onnx_model``) and MTCNN's networks (``mtcnn``) alike: a PyTorch
module written as ONNX, and an ONNX Runtime session set up for a small CPU. Imports no other maskage module but
``atomic``, so both can use it without an import cycle."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

from .atomic import atomic_path

OPSET = 17


def export_module(net: Any, dummy: Any, path: str | Path, output_names: Sequence[str],
                  dynamic_axes: dict[str, dict[int, str]]) -> Path:
    """Write the PyTorch module ``net`` (its input named ``input``, traced on ``dummy``) as ONNX, atomically: a
    concurrent or interrupted export leaves no half file."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(net, dummy, str(tmp), input_names=["input"], output_names=list(output_names),
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False)
    return path


def cpu_session(path: str | Path, threads: int = 0) -> Any:
    """An ONNX Runtime session on the CPU with ``threads`` intra-op threads (0: ONNX Runtime's default, one per
    physical core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # ONNX Runtime's workers spin-wait after each run by default, which takes the cores from the step that runs
    # next (MTCNN, the other models): end to end 67 -> 92 photos/s on 2 cores without it (benchmarks/speed.py)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
