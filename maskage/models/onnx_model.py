"""ONNX export of task models, and an ONNX Runtime stand-in for ``TaskModel`` at inference."""
from __future__ import annotations

import os
import platform
import re
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..atomic import atomic_path
from ..errors import UsageError
from ..images import batches
from ..onnx_files import OPSET, cpu_session, export_module
from .spec import ModelFileError, checked_weights, head_softmax, read_model_json, read_spec
from .transforms import preprocess

if TYPE_CHECKING:
    from .torch_model import TaskModel
    from .tasks import TaskPredictor

ONNX_NAME = "model.onnx"  # beside model.json in each task folder; pipeline.json lists its hash


def export_onnx(model: "TaskModel", path: str | Path) -> Path:
    """Write the model's network (normalised N x 3 x S x S input -> logits, any batch size) as ONNX."""
    import torch

    size = model.spec.input_size
    return export_module(model.net.eval(), torch.zeros(2, 3, size, size), path, ["logits"],
                         {"input": {0: "batch"}, "logits": {0: "batch"}})


class OnnxTaskModel:
    """A task model run by ONNX Runtime: the same ``spec``, ``task`` and ``predict_proba`` as ``TaskModel``."""

    def __init__(self, spec, onnx_path: str | Path, threads: int | None = None, source: "TaskModel | None" = None,
                 source_dir: str | Path | None = None) -> None:
        """``source``: the PyTorch model it was exported from, or ``source_dir``, the saved model to load it from
        when asked for (``source``): either lets a pipeline run on ONNX Runtime be saved or exported again."""
        self.spec = spec
        self._source, self._source_dir = source, source_dir
        self.threads = threads or _default_threads()  # 1: run beside other models (run_models); 0: a core each
        self.session = cpu_session(onnx_path, self.threads)

    @property
    def task(self) -> str:
        return self.spec.task

    @property
    def source(self) -> "TaskModel | None":
        """The PyTorch model behind it, loaded on first use (None when it has none)."""
        if self._source is None and self._source_dir is not None:
            from .torch_model import TaskModel

            self._source = TaskModel.load(self._source_dir, self.spec.task)
        return self._source

    def eval(self) -> "OnnxTaskModel":
        return self

    @classmethod
    def load(cls, directory: str | Path, task: str | None = None, threads: int | None = None) -> "OnnxTaskModel":
        """The ONNX file beside a saved model's ``model.json`` (``pipeline.json`` holds its hash)."""
        d = Path(directory)
        onnx_path = d / ONNX_NAME
        if not onnx_path.is_file():
            raise ModelFileError(f"{d}: no {ONNX_NAME}; run `maskage export` first")
        meta = read_model_json(d)
        spec = read_spec(d, task, meta)  # task, labels and weights checked as for the torch backend, no network built
        checked_weights(d, meta)
        return cls(spec, onnx_path, threads)

    def predict_proba(self, crops: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Softmax probabilities for N x S x S x 3 uint8 crops, batched."""
        return self.predict_inputs(preprocess(crops, self.spec.input_size, self.spec.mean, self.spec.std), batch_size)

    def predict_inputs(self, inputs: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Softmax probabilities for inputs made by ``preprocess`` (N x 3 x S x S, normalised)."""
        out = []
        x_all = np.asarray(inputs, dtype=np.float32)
        for batch in batches(x_all, batch_size):
            logits = self.session.run(None, {"input": np.ascontiguousarray(batch)})[0]
            out.append(head_softmax(logits.astype(np.float32), self.spec.heads))
        if not out:
            return np.zeros((0, len(self.spec.labels)), dtype=np.float32)
        return np.concatenate(out)


# int8 weights kept to 7 bits (-64..64) where ONNX Runtime multiplies them in matrix products (convolutions but
# depthwise ones, Gemm): AVX2's u8 x s8 multiply adds two products into an int16, which 255 x 127 x 2 overflows and
# 255 x 64 x 2 does not, so such a model gives the same numbers with or without VNNI (ONNX Runtime's quantisation
# notes: reduce_range). Depthwise convolutions keep 8 bits: their int8 kernel widens to 16 bits before it multiplies,
# and 7 bits there cost the age model 6 points of its top-class agreement with float32 (benchmarks/int8_paths.py checks both
# on an AVX2 code path; docs/measurements.md, "int8 on every CPU"). Files of 8-bit weights everywhere are exact only
# where VNNI or ARM's dot products run them.
INT8_WEIGHT_BITS = 7


def int8_is_exact(cpuinfo: str | Path = "/proc/cpuinfo", weight_bits: int = 8) -> bool:
    """Whether this CPU runs an int8 model (uint8 activations x int8 weights of ``weight_bits`` bits) as it was
    measured: files of 7-bit weights (``INT8_WEIGHT_BITS``) everywhere; 8-bit ones where the CPU has VNNI or is not
    x86 (x86 CPUs without VNNI may overflow in those products), so there a pipeline's 8-bit int8 files are passed
    over for float32 exports of the same weights. ``MASKAGE_INT8=1`` / ``0`` decides instead."""
    forced = os.environ.get("MASKAGE_INT8", "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if weight_bits <= INT8_WEIGHT_BITS:
        return True
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True  # ARM's int8 dot products do not have that overflow
    try:
        flags = Path(cpuinfo).read_text()
    except OSError:
        return False  # cannot tell: float32, the safe side
    return re.search(r"\b(avx512_vnni|avx_vnni|amx_int8)\b", flags) is not None


def _default_threads() -> int:
    """torch's thread count when torch is loaded (it may have been set), else 0: ONNX Runtime's default, one thread
    per physical core, as torch's default."""
    torch = sys.modules.get("torch")
    return max(1, torch.get_num_threads()) if torch is not None else 0


def model_workers() -> int:
    """How many single-threaded model runs ``run_models`` makes at once: torch's thread count when torch is loaded
    (it may have been set), else the cores this process may use."""
    from ..detect.faces import _cores

    return _default_threads() or _cores()


_POOLS: dict[int, ThreadPoolExecutor] = {}


def run_models(jobs: Sequence[tuple["TaskPredictor", np.ndarray]], workers: int) -> list[np.ndarray]:
    """``model.predict_inputs(x)`` for each (model, x): one after another with ``workers`` 1 (any model kind), else
    (ONNX Runtime sessions, which may run at once) ``workers`` runs at a time on one thread each, each batch cut
    in ``workers`` pieces; the same numbers as one after another. On 2 cores, four task models two at a time on a
    thread each ran 10-25% more crops/s than one after another on two threads each, which wait on each other inside
    every layer (docs/measurements.md, 2026-12-02). Every batch is cut, not only when there are fewer models than
    workers: three unequal models on two cores otherwise leave one core idle while the largest finishes."""
    if workers <= 1 or not jobs:
        return [m.predict_inputs(x) for m, x in jobs]
    pieces = []  # (job index, model, rows), the largest inputs first: the pool starts them first
    for j, (m, x) in enumerate(jobs):
        step = max(1, -(-len(x) // workers))
        pieces.extend((j, m, x[s : s + step]) for s in range(0, max(len(x), 1), step))
    order = sorted(range(len(pieces)), key=lambda i: -pieces[i][2][:1].size * len(pieces[i][2]))
    pool = _POOLS.setdefault(workers, ThreadPoolExecutor(workers, thread_name_prefix="maskage-model"))
    done = dict(zip(order, pool.map(lambda i: pieces[i][1].predict_inputs(pieces[i][2]), order)))
    out: list[list[np.ndarray]] = [[] for _ in jobs]
    for i, (j, _, _) in enumerate(pieces):
        out[j].append(done[i])
    return [np.concatenate(o) for o in out]


def cached_onnx_path(key: str, cache_dir: str | Path | None = None) -> Path:
    """Where ``cached_onnx`` keeps the export named ``key``."""
    from ..detect.cache import default_cache_dir

    return Path(cache_dir or default_cache_dir()) / "onnx" / f"{key}-opset{OPSET}.onnx"


def cached_onnx(model: "TaskModel", key: str, cache_dir: str | Path | None = None,
                threads: int | None = None) -> OnnxTaskModel:
    """``model`` run by ONNX Runtime from an export kept in the maskage cache (``$MASKAGE_CACHE/onnx``), made on
    first use. ``key`` names the model's files (e.g. their hashes) so that changed weights get a new export."""
    path = cached_onnx_path(key, cache_dir)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(model, path)  # written atomically: a concurrent or interrupted export leaves no half file
    return OnnxTaskModel(model.spec, path, threads, source=model)


def quantize_int8(src: str | Path, dst: str | Path, calibration: np.ndarray, batch_size: int = 16,
                  weight_bits: int = INT8_WEIGHT_BITS) -> Path:
    """Write an int8 copy of the ONNX model ``src`` (static quantisation, QDQ, per-channel int8 weights of
    ``weight_bits`` bits, 7 or 8, uint8 activations whose ranges are read from ``calibration``: N x 3 x S x S
    normalised inputs, as the model sees). 7 (the default: 8 in depthwise convolutions, ``INT8_WEIGHT_BITS``) runs
    exactly on every CPU; 8 only where VNNI or ARM runs it.

    On this project's CPU (VNNI) an int8 EfficientNet-Lite0 ran 1.7x faster than float32, but the shipped models
    lost 0.07 of 18-class macro F1 with it (about 10% of age-group decisions changed): measure the cost with
    benchmarks/real_accuracy.py before using it.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise UsageError("int8 quantisation needs at least one calibration input")
    if weight_bits not in (7, 8):
        raise UsageError(f"int8 weights are 7 or 8 bits, got {weight_bits}")
    calibration = np.ascontiguousarray(calibration, dtype=np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(range(0, len(calibration), batch_size))

        def get_next(self) -> dict | None:
            start = next(self.batches, None)
            return None if start is None else {"input": calibration[start : start + batch_size]}

    src, dst = Path(src), Path(dst)
    pre = dst.with_name(f".{dst.name}.{os.getpid()}.pre")
    try:
        with atomic_path(dst) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(src), str(pre))  # shape inference and graph folding, as ORT recommends first
            # depthwise convolutions keep 8 bits: their int8 kernel widens to 16 bits before it multiplies
            depthwise_8_bit = {name: [{"axis": 0, "reduce_range": False}] for name in _depthwise_weights(pre)}
            quantize_static(str(pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            reduce_range=weight_bits == 7, extra_options={"TensorQuantOverrides": depthwise_8_bit})
    finally:
        pre.unlink(missing_ok=True)
    return dst


def _depthwise_weights(path: Path) -> list[str]:
    """The weight initializers of the ONNX model's depthwise (grouped) convolutions."""
    import onnx

    graph = onnx.load(str(path)).graph
    weights = {t.name for t in graph.initializer}
    return [node.input[1] for node in graph.node
            if node.op_type == "Conv" and node.input[1] in weights
            and any(a.name == "group" and a.i > 1 for a in node.attribute)]
