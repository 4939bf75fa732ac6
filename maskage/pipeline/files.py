"""A pipeline on disk: loading (with its files' hashes checked, and ONNX Runtime where it can), saving, exporting
to ONNX. ``Pipeline.from_pretrained``, ``save`` and ``export_onnx`` call these with the pipeline (or its class), so
this module never imports pipeline.py."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..atomic import file_sha256, write_json_atomic
from ..models.ensemble import TaskEnsemble, members
from ..models.onnx_model import INT8_WEIGHT_BITS
from ..errors import UsageError
from ..detect.faces import DetectorSettings
from ..images import ImageError, ImageInput, load_image
from ..models.joint import SharedModel, TaskView
from ..labels import JOINT_TASKS, PIPELINE_TASKS as TASKS
from ..models.spec import (CONFIG_NAME, PRETRAINED_DIR, WEIGHTS_NAME, ModelFileError, fold_dirs, read_format_json,
                           read_spec)
from ..models.onnx_model import ONNX_NAME

if TYPE_CHECKING:
    from ..models.torch_model import TaskModel

PIPELINE_FORMAT = "maskage-pipeline"
# the trained pipeline shipped inside the package (see its MODEL_CARD.md)
PIPELINE_NAME = "pipeline.json"


def load_pipeline(cls: type, directory: str | Path | None = None, backend: str = "auto") -> Any:
    """``cls.from_pretrained``: see there."""
    if backend not in ("auto", "torch", "onnx"):
        raise UsageError(f"backend must be auto, torch or onnx, got {backend!r}")
    d = Path(directory) if directory is not None else PRETRAINED_DIR
    meta = read_format_json(d / PIPELINE_NAME, PIPELINE_FORMAT, "pipeline",
                            "is this a pipeline directory (see `maskage pipeline`)?")
    entries = {task: _member_entries(meta["models"][task]) for task in TASKS}
    if backend == "onnx" and not all(ONNX_NAME in e.get("sha256", {}) for t in TASKS for e in entries[t]):
        raise ModelFileError(f"{d}: not every model is exported to ONNX; run `maskage export {d}` first")
    use_onnx = backend == "onnx" or (backend == "auto" and _has_onnxruntime())
    # each model directory loads once: a joint or multi-head model's serves all three tasks
    loaded: dict[str, Any] = {}
    by_dir = {e["dir"]: e for t in TASKS for e in entries[t]}
    threads = _session_threads(use_onnx, shared=len(by_dir) < sum(len(entries[t]) for t in TASKS))
    for rel, entry in by_dir.items():
        sub = d / rel
        for name, digest in entry.get("sha256", {}).items():
            if not (sub / name).is_file() or file_sha256(sub / name) != digest:
                raise ModelFileError(f"{sub / name}: missing or changed since the pipeline was saved (sha256 mismatch)")
        if use_onnx and ONNX_NAME in entry.get("sha256", {}) and _runs_as_measured(entry):
            from ..models.onnx_model import OnnxTaskModel

            # an exported model runs from its own file (it may be int8: the PyTorch weights would give other outputs)
            loaded[rel] = OnnxTaskModel.load(sub, threads=threads)
        else:
            # an export already in the cache needs no PyTorch model (nor timm, 2 s of start-up) to run
            loaded[rel] = (_cached_export(sub, entry, threads) if use_onnx else None) or load_torch_model(sub)
    if use_onnx:
        loaded = _cached_onnx_models(loaded, by_dir, threads)
    models = {}
    shared: dict[Any, SharedModel] = {}
    for task in TASKS:
        entry = meta["models"][task]
        ms = [_slot_model(d / e["dir"], loaded[e["dir"]], task, shared) for e in entries[task]]
        models[task] = (TaskEnsemble(ms, entry.get("weights"), entry.get("voting", "soft"))
                        if "members" in entry else ms[0])
    return cls(models["mask"], models["gender"], models["age"], DetectorSettings.from_dict(meta["detector"]),
               tta=meta.get("tta"), age_threshold=meta.get("age_threshold"), bias=meta.get("bias"))


def save_pipeline(pipe: Any, directory: str | Path, dtype: str = "float32") -> Path:
    """Write the three models and pipeline.json (with their files' hashes) into ``directory``.

    ``dtype="float16"`` halves the weight files (as the pipeline shipped inside maskage is stored)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    entries: dict[str, Any] = {}
    done: dict[int, dict] = {}  # a joint or multi-head model is saved once, in a folder named by its task
    for task, model in pipe.models.items():
        saved = []
        for i, m in enumerate(members(model)):
            torch_model = _torch_model(task, m)
            if id(torch_model) not in done:
                if isinstance(m, TaskView):
                    rel = torch_model.task  # "joint" or "multihead", shared by the three slots
                else:
                    rel = f"{task}/{i}" if isinstance(model, TaskEnsemble) else task
                done[id(torch_model)] = _model_entry(d, rel, torch_model, dtype)
            saved.append(dict(done[id(torch_model)]))
        if isinstance(model, TaskEnsemble):
            entries[task] = {"members": saved, "weights": model.weights, "voting": model.voting}
        else:
            entries[task] = saved[0]
    meta = {"format": PIPELINE_FORMAT, "version": 1, "detector": pipe.detector_settings.to_dict(),
            "tta": {task: list(names) for task, names in pipe.tta.items()}, "models": entries}
    if pipe.age_threshold != pipe.models["age"].spec.age_threshold:
        meta["age_threshold"] = pipe.age_threshold
    if pipe.bias:
        meta["bias"] = {task: list(b) for task, b in pipe.bias.items()}
    write_json_atomic(d / PIPELINE_NAME, meta)
    return d


def export_pipeline_onnx(pipe: Any, directory: str | Path, int8: bool | Sequence[str] = False,
                         calibration: Sequence[ImageInput] | None = None,
                         tasks: Sequence[str] | None = None, weight_bits: int = INT8_WEIGHT_BITS) -> Path:
    """``Pipeline.export_onnx``: see there."""
    from ..models.onnx_model import export_onnx, quantize_int8

    chosen = set(pipe.models) if tasks is None else set(tasks)
    quantised = set(chosen) if int8 is True else set(int8 or ())
    for what, names in (("int8", quantised), ("tasks", chosen)):
        if names - set(pipe.models):
            raise UsageError(f"{what}: no task {sorted(names - set(pipe.models))} in this pipeline "
                             f"(its tasks: {', '.join(pipe.models)})")
    if quantised - chosen:
        raise UsageError(f"int8 for {sorted(quantised - chosen)}, which is not among the tasks exported")
    d = Path(directory)
    path = d / PIPELINE_NAME
    meta = json.loads(path.read_text())
    torch_models = {task: [_torch_model(task, m) for m in members(model)] for task, model in pipe.models.items()}
    inputs = _calibration_inputs(pipe, calibration or []) if quantised else {}
    # a joint or multi-head model's directory serves three tasks: exported once, for every task it serves
    dirs = {e["dir"] for t in chosen for e in _member_entries(meta["models"][t])}
    exported: dict[str, dict] = {}
    for task, models in torch_models.items():
        for i, (model, entry) in enumerate(zip(models, _member_entries(meta["models"][task]))):
            sub = d / entry["dir"]
            if entry["dir"] not in dirs:
                continue
            if entry["dir"] not in exported:
                export_onnx(model, sub / ONNX_NAME)
                n = 0
                if task in quantised:
                    quantize_int8(sub / ONNX_NAME, sub / ONNX_NAME, inputs[task][i], weight_bits=weight_bits)
                    n = len(inputs[task][i])
                exported[entry["dir"]] = {"precision": "int8" if n else "float32", "calibration_photos": n}
                if n:
                    exported[entry["dir"]]["weight_bits"] = weight_bits
            entry["sha256"][ONNX_NAME] = file_sha256(sub / ONNX_NAME)
            entry["onnx"] = dict(exported[entry["dir"]])
    write_json_atomic(path, meta)
    return d


def swap_models(base: str | Path | None, out: str | Path, runs: dict[str, Any], dtype: str = "float32",
                export: bool = True) -> Path:
    """A copy of the pipeline saved in ``base`` (None: the shipped one) in ``out``, with the model of each task in
    ``runs`` replaced by that run's model (``{"mask": "runs/mask"}``), or by several runs' soft-voted ensemble
    (``{"mask": ["runs/a", "runs/b"]}``); every other file, int8 ones included, is copied unchanged, so the result
    differs from ``base`` in those tasks alone. Where ``base`` ran a replaced task from its own ONNX file, the new
    models are exported to float32 ONNX (``export=False``: left to the cache). The base's MODEL_CARD.md is not
    copied: it describes other models."""
    import shutil

    src, d = Path(base) if base is not None else PRETRAINED_DIR, Path(out)
    meta = read_format_json(src / PIPELINE_NAME, PIPELINE_FORMAT, "pipeline",
                            "is this a pipeline directory (see `maskage pipeline`)?")
    if not runs or set(runs) - set(TASKS):
        raise UsageError(f"name one model for any of the tasks {', '.join(TASKS)}, got {sorted(runs) or 'none'}")
    for task in runs:
        entry = meta["models"][task]
        if any(e["dir"].split("/")[0] != task for e in _member_entries(entry)):
            raise UsageError(f"{src}: its {task} model is a joint or multi-head model, which serves every task; "
                             "assemble a pipeline from runs with `maskage pipeline` instead")
    if d.exists() and any(d.iterdir()):
        raise UsageError(f"{d} exists and is not empty: name a new folder")
    # every run loaded (and checked to be a model of its task) before anything is written
    models = {task: [load_torch_model(r, task) for r in ([run] if isinstance(run, (str, Path)) else run)]
              for task, run in runs.items()}
    shutil.copytree(src, d, ignore=shutil.ignore_patterns("MODEL_CARD.md"), dirs_exist_ok=True)
    for task, ms in models.items():
        had_onnx = all(ONNX_NAME in e.get("sha256", {}) for e in _member_entries(meta["models"][task]))
        shutil.rmtree(d / task)
        saved = [_saved_entry(d, task if len(ms) == 1 else f"{task}/{i}", m, dtype, had_onnx and export)
                 for i, m in enumerate(ms)]
        meta["models"][task] = (saved[0] if len(ms) == 1 else
                                {"members": saved, "weights": TaskEnsemble(ms).weights, "voting": "soft"})
    write_json_atomic(d / PIPELINE_NAME, meta)
    return d


def _model_entry(d: Path, rel: str, model: "TaskModel", dtype: str) -> dict:
    """Save ``model`` into ``d / rel``: its pipeline.json entry (folder and files' hashes)."""
    sub = model.save(d / rel, dtype=dtype)
    return {"dir": rel, "sha256": {n: file_sha256(sub / n) for n in (CONFIG_NAME, WEIGHTS_NAME)}}


def _saved_entry(d: Path, rel: str, model: "TaskModel", dtype: str, export: bool) -> dict:
    """``_model_entry``, and with ``export`` the model's float32 ONNX file beside its weights."""
    from ..models.onnx_model import export_onnx

    entry = _model_entry(d, rel, model, dtype)
    if export:
        onnx = export_onnx(model, d / rel / ONNX_NAME)
        entry["sha256"][ONNX_NAME] = file_sha256(onnx)
        entry["onnx"] = {"precision": "float32", "calibration_photos": 0}
    return entry


def running_precision(task_entry: dict) -> str:
    """The precision a task's model runs at on ONNX Runtime here (pipeline.json's entry for the task): int8 where
    its own file is int8 and this CPU runs it (``_runs_as_measured``), else float32; an ensemble's kinds joined
    by "/"."""
    return "/".join(sorted({"int8" if e.get("onnx", {}).get("precision") == "int8" and _runs_as_measured(e)
                            else "float32" for e in _member_entries(task_entry)}))


def _runs_as_measured(entry: dict) -> bool:
    """Whether a model's own ONNX file is used here: always for float32, for int8 where this CPU runs it without
    overflow (``onnx_model.int8_is_exact``: 7-bit weights everywhere, 8-bit ones, as files written before 1.1.0
    hold, with VNNI; elsewhere a float32 export of its weights runs)."""
    onnx = entry.get("onnx", {})
    if onnx.get("precision") != "int8":
        return True
    from ..models.onnx_model import int8_is_exact

    return int8_is_exact(weight_bits=onnx.get("weight_bits", 8))


def _calibration_inputs(pipe: Any, images: Sequence[ImageInput]) -> dict[str, list[np.ndarray]]:
    """Each model's (each ensemble member's) normalised input for each photo, cropped as ``predict`` crops it
    (largest face, else the centre)."""
    arrays = []
    for img in images:
        try:
            arrays.append(load_image(img))
        except ImageError as exc:
            raise UsageError(f"calibration photo: {exc}") from None
    if not arrays:
        raise UsageError("int8 export needs calibration photos")
    inputs = pipe.model_inputs(arrays, pipe.detector.detect(arrays))
    return {task: list(xs) for task, xs in inputs.items()}


def _torch_model(task: str, model: Any) -> "TaskModel":
    """The PyTorch model behind a slot (an ONNX model exported on load keeps its source)."""
    model = _base(model)
    model = getattr(model, "source", None) or model
    if not is_torch_model(model):
        raise ModelFileError(f"the {task} model runs on ONNX Runtime from exported files; load the pipeline with "
                             "backend='torch' to save or export it")
    return model


def _member_entries(entry: dict) -> list[dict]:
    """The pipeline.json entries of a task's models: an ensemble's members, else the entry itself."""
    return entry["members"] if "members" in entry else [entry]


def _onnx_key(task: str, digests: dict[str, str]) -> str:
    """The name of a model's export in the cache: its task and its files' hashes (changed weights, new export)."""
    return f"{task}-{digests[WEIGHTS_NAME][:16]}-{digests[CONFIG_NAME][:8]}"


def _session_threads(use_onnx: bool, shared: bool) -> int | None:
    """ONNX Runtime threads per model session: 1 where the pipeline will run its models side by side
    (``onnx_model.run_models``: several cores, no model serving several tasks), else the cores it may use."""
    if not use_onnx or shared:
        return None
    from ..detect.faces import _cores
    from ..models.onnx_model import model_workers

    return 1 if model_workers() > 1 else _cores()


def _cached_export(directory: Path, entry: dict, threads: int | None = None) -> Any:
    """The saved model in ``directory`` run by ONNX Runtime from its cached export, if the cache has it (its files'
    hashes were checked against pipeline.json); None otherwise, or if ONNX Runtime fails on it."""
    from ..models.onnx_model import OnnxTaskModel, cached_onnx_path

    spec = read_spec(directory)
    path = cached_onnx_path(_onnx_key(spec.task, entry["sha256"]))
    if not path.is_file():
        return None
    try:
        return OnnxTaskModel(spec, path, threads, source_dir=directory)
    except Exception:  # noqa: BLE001 - a damaged cache file: load the PyTorch model, as without a cached export
        return None


def _cached_onnx_models(models: dict[str, Any], entries: dict[str, dict], threads: int | None = None) -> dict[str, Any]:
    """The PyTorch models (by directory) run by ONNX Runtime from exports cached by their files' hashes (models
    already on ONNX Runtime stay as they are); the PyTorch models themselves if exporting fails (with a warning:
    predictions are the same, only slower)."""
    from ..models.onnx_model import cached_onnx

    try:
        out: dict[str, Any] = {}
        for rel, model in models.items():
            out[rel] = cached_onnx(model, _onnx_key(model.task, entries[rel]["sha256"]), threads=threads) \
                if is_torch_model(model) else model
        return out
    except Exception as exc:  # noqa: BLE001 - any exporter or runtime failure: keep working on PyTorch
        warnings.warn(f"ONNX export failed ({type(exc).__name__}: {exc}); running the models with PyTorch")
        return models


def load_torch_model(directory: str | Path, task: str | None = None) -> "TaskModel":
    """A saved model on PyTorch (``TaskModel.load``); torch and timm are imported here, only when one is needed."""
    from ..models.torch_model import TaskModel

    return TaskModel.load(directory, task)


def is_torch_model(model: Any) -> bool:
    """Whether ``model`` is a PyTorch ``TaskModel``, without importing torch to find out (none can exist before
    maskage.models.torch_model is imported)."""
    models = sys.modules.get("maskage.models.torch_model")
    return models is not None and isinstance(model, models.TaskModel)


def _has_onnxruntime() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def _base(model: Any) -> Any:
    """The model that runs for a slot: a view's joint or multi-head model, else the model itself."""
    return model.model if isinstance(model, TaskView) else model


def _slot_model(where: Any, model: Any, task: str, shared: dict[Any, SharedModel]) -> Any:
    """``model`` for the ``task`` slot: itself when it is that task's model; a view of it when it is a joint or
    multi-head model (one ``SharedModel`` per loaded model, so its three views share each forward pass)."""
    if model.task == task:
        return model
    if model.task in JOINT_TASKS:
        if id(model) not in shared:
            shared[id(model)] = SharedModel(model)
        return TaskView(shared[id(model)], task)
    raise ModelFileError(f"{where}: expected a {task} model (or a joint or multihead one), found a {model.task} model")


def run_models_of(mask_dir: Any, gender_dir: Any, age_dir: Any, weights: dict[str, Sequence[float]] | None = None,
                  voting: dict[str, str] | None = None) -> list:
    """The three task models of ``Pipeline.from_runs``: each task's run (a k-fold run: its fold models; several
    runs: their ``TaskEnsemble``)."""
    weights, voting = weights or {}, voting or {}
    for name, given in (("weights", weights), ("voting", voting)):
        if set(given) - set(TASKS):
            raise UsageError(f"{name}: unknown task(s) {sorted(set(given) - set(TASKS))} (tasks: {', '.join(TASKS)})")
    models = []
    shared: dict[Any, SharedModel] = {}
    for task, dirs in zip(TASKS, (mask_dir, gender_dir, age_dir)):
        runs = []
        for run in [dirs] if isinstance(dirs, (str, Path)) else list(dirs):
            runs.extend(fold_dirs(run) or [run])  # a k-fold run gives its fold models
        loaded = [_slot_model(d, load_torch_model(d), task, shared) for d in runs]
        if len(loaded) == 1 and task not in weights and task not in voting:
            models.append(loaded[0])
        else:
            models.append(TaskEnsemble(loaded, weights.get(task), voting.get(task, "soft")))
    return models
