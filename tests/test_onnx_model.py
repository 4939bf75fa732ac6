import json

import numpy as np
import pytest

from maskage import Pipeline
from maskage.apps.cli import main
from maskage.errors import UsageError
from maskage.models.torch_model import ModelFileError
from maskage.models.onnx_model import OnnxTaskModel, export_onnx
from maskage.pipeline.files import running_precision, swap_models

from .conftest import tiny_model


@pytest.mark.parametrize("task", ["mask", "gender", "age"])
def test_onnx_outputs_match_pytorch(tmp_path, task):
    model = tiny_model(task, seed=3)
    model.save(tmp_path / task)
    export_onnx(model, tmp_path / task / "model.onnx")
    onnx_model = OnnxTaskModel.load(tmp_path / task, task)
    crops = np.random.default_rng(1).integers(0, 255, (37, 40, 40, 3), dtype=np.uint8)  # odd size: a partial batch
    np.testing.assert_allclose(onnx_model.predict_proba(crops, batch_size=16), model.predict_proba(crops), atol=1e-5)
    assert onnx_model.spec == model.spec
    for backend in (onnx_model, model):  # a negative size gave an empty (0, classes) answer for 37 crops
        with pytest.raises(UsageError, match="batch size"):
            backend.predict_proba(crops, batch_size=-16)


def test_exported_pipeline_runs_on_onnx_runtime_with_the_same_predictions(tmp_path, toy_root):
    d = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3)).save(tmp_path / "pipe")
    with pytest.raises(ModelFileError, match="maskage export"):
        Pipeline.from_pretrained(d, backend="onnx")
    assert Pipeline.from_pretrained(d, backend="torch").backend == "torch"
    assert main(["export", str(d)]) == 0
    onnx_pipe, torch_pipe = Pipeline.from_pretrained(d), Pipeline.from_pretrained(d, backend="torch")
    assert onnx_pipe.backend == "onnx" and torch_pipe.backend == "torch"
    photos = sorted(str(p) for p in (toy_root / "eval" / "images").glob("*.jpg"))[:8]
    a, b = onnx_pipe.predict(photos), torch_pipe.predict(photos)
    assert [p.class_id for p in a] == [p.class_id for p in b]
    for pa, pb in zip(a, b):
        assert pa.mask_probs == pytest.approx(pb.mask_probs, abs=1e-5)
        assert pa.age_probs == pytest.approx(pb.age_probs, abs=1e-5)
    # the ONNX files are hash-checked like the weights
    meta = json.loads((d / "pipeline.json").read_text())
    assert "model.onnx" in meta["models"]["age"]["sha256"]
    with open(d / "age" / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelFileError, match="model.onnx: missing or changed"):
        Pipeline.from_pretrained(d)
    with pytest.raises(ModelFileError, match="backend='torch'"):
        onnx_pipe.save(tmp_path / "again")


def _op_types(path) -> set:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_quantisation_quantises_the_convolutions_and_stays_close(tmp_path):
    from maskage.models.transforms import preprocess
    from maskage.models.onnx_model import quantize_int8

    model = tiny_model("age", seed=5)
    model.save(tmp_path / "age")
    export_onnx(model, tmp_path / "age" / "fp32.onnx")
    crops = np.random.default_rng(2).integers(0, 255, (24, 40, 40, 3), dtype=np.uint8)
    x = preprocess(crops, 32, model.spec.mean, model.spec.std)
    quantize_int8(tmp_path / "age" / "fp32.onnx", tmp_path / "age" / "model.onnx", x, batch_size=8)
    assert "QuantizeLinear" not in _op_types(tmp_path / "age" / "fp32.onnx")
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= _op_types(tmp_path / "age" / "model.onnx")
    assert not list(tmp_path.glob("age/.*"))  # no temporary files left behind
    p8 = OnnxTaskModel.load(tmp_path / "age", "age").predict_proba(crops)
    p32 = model.predict_proba(crops)
    assert np.abs(p8 - p32).max() < 0.05
    assert not np.allclose(p8, p32, atol=1e-6)  # it really is another network
    with pytest.raises(ValueError, match="calibration"):
        quantize_int8(tmp_path / "age" / "fp32.onnx", tmp_path / "x.onnx", x[:0])
    with pytest.raises(ValueError, match="7 or 8 bits"):
        quantize_int8(tmp_path / "age" / "fp32.onnx", tmp_path / "x.onnx", x, weight_bits=6)


def _int8_weights(path) -> dict[str, np.ndarray]:
    """The int8 weights of a QDQ model, by what they feed: "depthwise" convolutions or "other" (matrix products)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    found: dict[str, list] = {"depthwise": [], "other": []}
    for node in model.graph.node:
        feed = producer.get(node.input[1]) if len(node.input) > 1 else None
        weights = arrays.get(feed.input[0]) if feed is not None and feed.op_type == "DequantizeLinear" else None
        if weights is not None and weights.dtype == np.int8:
            depthwise = any(a.name == "group" and a.i > 1 for a in node.attribute)
            found["depthwise" if depthwise else "other"].append(weights.ravel().astype(np.int32))
    return {kind: np.concatenate(w) for kind, w in found.items() if w}


def test_int8_weights_are_7_bit_where_avx2_pair_sums_could_overflow(tmp_path):
    from maskage.models.transforms import preprocess
    from maskage.models.onnx_model import quantize_int8

    model = tiny_model("gender", seed=4)
    export_onnx(model, tmp_path / "fp32.onnx")
    crops = np.random.default_rng(3).integers(0, 255, (16, 40, 40, 3), dtype=np.uint8)
    x = preprocess(crops, 32, model.spec.mean, model.spec.std)
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "w7.onnx", x)  # 7 bits: the default
    quantize_int8(tmp_path / "fp32.onnx", tmp_path / "w8.onnx", x, weight_bits=8)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left
    w7, w8 = _int8_weights(tmp_path / "w7.onnx"), _int8_weights(tmp_path / "w8.onnx")
    assert set(w7) == set(w8) == {"depthwise", "other"}
    # matrix products: AVX2 without VNNI adds two uint8 x int8 products into an int16; 8-bit weights overflow it
    limit = np.iinfo(np.int16).max
    assert 2 * 255 * np.abs(w7["other"]).max() <= limit < 2 * 255 * np.abs(w8["other"]).max()
    # depthwise convolutions widen to 16 bits first: they keep 8 bits, the same numbers as the 8-bit file's
    np.testing.assert_array_equal(w7["depthwise"], w8["depthwise"])
    assert np.abs(w7["depthwise"]).max() > 64
    p7 = OnnxTaskModel(model.spec, tmp_path / "w7.onnx").predict_proba(crops)
    assert np.abs(p7 - model.predict_proba(crops)).max() < 0.1


def test_int8_export_from_the_cli(tmp_path, toy_root, capsys):
    d = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3)).save(tmp_path / "pipe")
    assert main(["export", str(d), "--int8"]) == 2
    assert "--calibration" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", str(d), "--int8", "--calibration", str(tmp_path / "empty")]) != 0
    assert "needs calibration photos" in capsys.readouterr().err
    images = toy_root / "eval" / "images"
    assert main(["export", str(d), "--int8", "--calibration", str(images), "--calibration-limit", "12"]) == 0
    assert "int8 (7-bit weights, calibrated on 12 photos)" in capsys.readouterr().out
    meta = json.loads((d / "pipeline.json").read_text())
    assert meta["models"]["mask"]["onnx"]["precision"] == "int8"
    assert meta["models"]["mask"]["onnx"]["calibration_photos"] == 12
    assert meta["models"]["mask"]["onnx"]["weight_bits"] == 7
    assert np.abs(_int8_weights(d / "mask" / "model.onnx")["other"]).max() <= 64
    assert main(["export", str(d), "--tasks", "age", "--int8", "age", "--weight-bits", "8", "--calibration",
                 str(images), "--calibration-limit", "12"]) == 0
    assert "int8 for age (8-bit weights" in capsys.readouterr().out
    meta = json.loads((d / "pipeline.json").read_text())
    assert [meta["models"][t]["onnx"]["weight_bits"] for t in ("mask", "age")] == [7, 8]
    assert np.abs(_int8_weights(d / "age" / "model.onnx")["other"]).max() > 64
    assert "QuantizeLinear" in _op_types(d / "gender" / "model.onnx")
    onnx_pipe, torch_pipe = Pipeline.from_pretrained(d), Pipeline.from_pretrained(d, backend="torch")
    assert onnx_pipe.backend == "onnx"
    photos = sorted(str(p) for p in images.glob("*.jpg"))[:8]
    for pa, pb in zip(onnx_pipe.predict(photos), torch_pipe.predict(photos)):
        assert pa.face_box == pb.face_box
        assert pa.gender_probs == pytest.approx(pb.gender_probs, abs=0.05)


def test_auto_backend_exports_once_into_the_cache_when_the_pipeline_has_no_onnx(tmp_path, toy_root, monkeypatch):
    import os
    from pathlib import Path

    import maskage.pipeline.files as pipeline_mod

    # seeds no other test uses: weights whose export is not in the test run's cache yet
    d = Pipeline(tiny_model("mask", 21), tiny_model("gender", 22), tiny_model("age", 23)).save(tmp_path / "pipe")
    cache = Path(os.environ["MASKAGE_CACHE"]) / "onnx"
    before = set(cache.glob("*.onnx")) if cache.is_dir() else set()
    auto, torch_pipe = Pipeline.from_pretrained(d), Pipeline.from_pretrained(d, backend="torch")
    assert auto.backend == "onnx" and torch_pipe.backend == "torch"
    made = set(cache.glob("*.onnx")) - before
    assert len(made) == 3 and not list((tmp_path / "pipe").rglob("*.onnx"))  # the pipeline folder is untouched
    photos = sorted(str(p) for p in (toy_root / "eval" / "images").glob("*.jpg"))[:6]
    for pa, pb in zip(auto.predict(photos), torch_pipe.predict(photos)):
        assert pa.class_id == pb.class_id
        assert pa.age_probs == pytest.approx(pb.age_probs, abs=1e-5)
    stamps = {p: p.stat().st_mtime_ns for p in made}
    Pipeline.from_pretrained(d)  # the second load reuses the exports
    assert {p: p.stat().st_mtime_ns for p in made} == stamps
    # an ONNX-run pipeline still saves (from the PyTorch models it was exported from)
    again = Pipeline.from_pretrained(auto.save(tmp_path / "again"), backend="torch")
    assert [p.class_id for p in again.predict(photos)] == [p.class_id for p in torch_pipe.predict(photos)]
    # no ONNX Runtime, or an export that fails: PyTorch, with a warning for the failure
    monkeypatch.setattr(pipeline_mod, "_has_onnxruntime", lambda: False)
    assert Pipeline.from_pretrained(d).backend == "torch"
    monkeypatch.undo()

    def broken(*args, **kwargs):
        raise RuntimeError("exporter broke")

    monkeypatch.setattr("maskage.models.onnx_model.export_onnx", broken)
    with pytest.warns(UserWarning, match="exporter broke"):
        fallback = Pipeline.from_pretrained(tiny_pipeline_dir(tmp_path / "other"))
    assert fallback.backend == "torch"


def tiny_pipeline_dir(path):
    return Pipeline(tiny_model("mask", 7), tiny_model("gender", 8), tiny_model("age", 9)).save(path)


def test_cached_exports_load_without_building_the_networks(tmp_path, toy_root, monkeypatch):
    import subprocess
    import sys

    from maskage.models.torch_model import TaskModel

    d = Pipeline(tiny_model("mask", 11), tiny_model("gender", 12), tiny_model("age", 13)).save(tmp_path / "pipe")
    photos = sorted(str(p) for p in (toy_root / "eval" / "images").glob("*.jpg"))[:4]
    first = Pipeline.from_pretrained(d)  # exports into the cache
    expected = first.predict(photos)

    def no_network(*args, **kwargs):
        raise AssertionError("a PyTorch network was built although the exports are cached")

    monkeypatch.setattr(TaskModel, "__init__", no_network)
    again = Pipeline.from_pretrained(d)
    assert again.backend == "onnx"
    got = again.predict(photos)
    assert [p.class_id for p in got] == [p.class_id for p in expected]
    assert [p.age_probs for p in got] == [p.age_probs for p in expected]
    monkeypatch.undo()
    # the PyTorch models are loaded when needed: such a pipeline still saves, with the same predictions
    saved = Pipeline.from_pretrained(again.save(tmp_path / "again"), backend="torch")
    assert [p.class_id for p in saved.predict(photos)] == [p.class_id for p in expected]
    # and a fresh process that loads it and predicts never imports torch, timm or facenet-pytorch (seconds of
    # start-up), with the same answers
    code = (f"import sys; from maskage.pipeline.core import Pipeline; p = Pipeline.from_pretrained({str(d)!r}); "
            f"print(*[q.class_id for q in p.predict({photos!r})], *(m in sys.modules for m in "
            "('torch', 'timm', 'facenet_pytorch', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(p.class_id) for p in expected] + ["False"] * 4


def test_int8_for_named_tasks_only(tmp_path, toy_root, capsys):
    d = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3)).save(tmp_path / "pipe")
    images = toy_root / "eval" / "images"
    assert main(["export", str(d), "--int8", "gender", "age", "--calibration", str(images),
                 "--calibration-limit", "6"]) == 0
    assert "int8 for gender, age (7-bit weights, calibrated on 6 photos)" in capsys.readouterr().out
    meta = json.loads((d / "pipeline.json").read_text())
    assert [meta["models"][t]["onnx"]["precision"] for t in ("mask", "gender", "age")] == ["float32", "int8", "int8"]
    assert meta["models"]["mask"]["onnx"]["calibration_photos"] == 0
    assert "QuantizeLinear" not in _op_types(d / "mask" / "model.onnx")
    assert "QuantizeLinear" in _op_types(d / "age" / "model.onnx")
    with pytest.raises(SystemExit):  # a task that does not exist is refused by the parser
        main(["export", str(d), "--int8", "nose", "--calibration", str(images)])
    from maskage.errors import UsageError

    with pytest.raises(UsageError, match="no task"):
        Pipeline.from_pretrained(d, backend="torch").export_onnx(d, int8=["face"], calibration=[])


def test_export_of_one_task_ships_its_int8_model_and_the_others_come_from_the_cache(tmp_path, toy_root, capsys,
                                                                                     monkeypatch):
    monkeypatch.setenv("MASKAGE_INT8", "1")  # whatever CPU runs the test
    from maskage.errors import UsageError

    d = Pipeline(tiny_model("mask", 41), tiny_model("gender", 42), tiny_model("age", 43)).save(tmp_path / "pipe")
    images = toy_root / "eval" / "images"
    photos = sorted(str(p) for p in images.glob("*.jpg"))[:8]
    float_probs = [p.age_probs for p in Pipeline.from_pretrained(d).predict(photos)]  # every model from the cache
    assert main(["export", str(d), "--tasks", "age", "--int8", "--calibration", str(images),
                 "--calibration-limit", "6"]) == 0
    assert "(age/ model.onnx)" in capsys.readouterr().out
    assert sorted(p.parent.name for p in d.rglob("model.onnx")) == ["age"]
    meta = json.loads((d / "pipeline.json").read_text())
    assert meta["models"]["age"]["onnx"]["precision"] == "int8"
    assert "model.onnx" not in meta["models"]["mask"]["sha256"] and "onnx" not in meta["models"]["gender"]
    assert [running_precision(meta["models"][t]) for t in ("mask", "gender", "age")] == ["float32", "float32", "int8"]
    auto, torch_pipe = Pipeline.from_pretrained(d), Pipeline.from_pretrained(d, backend="torch")
    assert auto.backend == "onnx" and torch_pipe.backend == "torch"
    assert "QuantizeLinear" in _op_types(d / "age" / "model.onnx")
    got, plain = auto.predict(photos), torch_pipe.predict(photos)
    for a, b in zip(got, plain):
        assert a.mask_probs == pytest.approx(b.mask_probs, abs=1e-5)
    # the age model runs from the int8 file (a float export would match to 1e-5): close, not equal
    moved = max(abs(a.age_probs[k] - b[k]) for a, b in zip(got, float_probs) for k in b)
    assert 1e-4 < moved < 0.1
    # on a CPU whose int8 products may overflow (x86 without VNNI) the int8 file is passed over for float32
    monkeypatch.setenv("MASKAGE_INT8", "0")
    assert running_precision(meta["models"]["age"]) == "float32"
    for a, b in zip(Pipeline.from_pretrained(d).predict(photos), float_probs):
        assert a.age_probs == pytest.approx(b, abs=1e-5)
    monkeypatch.delenv("MASKAGE_INT8")
    with pytest.raises(ModelFileError, match="not every model"):
        Pipeline.from_pretrained(d, backend="onnx")
    with pytest.raises(UsageError, match="not among the tasks exported"):
        torch_pipe.export_onnx(d, int8=["gender"], calibration=photos, tasks=["age"])


def test_int8_runs_where_the_cpu_has_vnni_or_is_not_x86(tmp_path, monkeypatch):
    from maskage.models.onnx_model import int8_is_exact

    monkeypatch.delenv("MASKAGE_INT8", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    assert not int8_is_exact(cpuinfo)  # AVX-512 without VNNI: u8 x s8 products may overflow
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 avx512f avx512_vnni\n")
    assert int8_is_exact(cpuinfo)
    cpuinfo.write_text("flags\t\t: fpu avx2 avx_vnni\n")
    assert int8_is_exact(cpuinfo)
    assert not int8_is_exact(tmp_path / "missing")  # cannot tell: float32
    monkeypatch.setattr("platform.machine", lambda: "aarch64")
    assert int8_is_exact(tmp_path / "missing")
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    cpuinfo.write_text("flags\t\t: fpu sse2 avx2 fma\n")
    assert not int8_is_exact(cpuinfo) and int8_is_exact(cpuinfo, weight_bits=7)  # 7-bit weights: every CPU
    monkeypatch.setenv("MASKAGE_INT8", "0")
    assert not int8_is_exact(cpuinfo) and not int8_is_exact(cpuinfo, weight_bits=7)


def test_int8_files_with_7_bit_weights_run_on_every_cpu(monkeypatch):
    from maskage.models.onnx_model import int8_is_exact
    from maskage.pipeline.files import running_precision

    monkeypatch.delenv("MASKAGE_INT8", raising=False)
    new = {"onnx": {"precision": "int8", "calibration_photos": 300, "weight_bits": 7}}
    old = {"onnx": {"precision": "int8", "calibration_photos": 300}}  # 8-bit weights, as before 1.1.0
    assert running_precision(new) == "int8"
    assert running_precision(old) == ("int8" if int8_is_exact() else "float32")
    monkeypatch.setattr("maskage.models.onnx_model.int8_is_exact", lambda cpuinfo="", weight_bits=8: weight_bits <= 7)
    assert running_precision({"members": [new, old]}) == "float32/int8"


def test_models_run_side_by_side_with_the_same_predictions(tmp_path, toy_root, monkeypatch):
    import maskage.models.onnx_model as onnx_model
    from maskage.models.ensemble import TaskEnsemble, members

    age = TaskEnsemble([tiny_model("age", 31), tiny_model("age", 32)])
    d = Pipeline(tiny_model("mask", 33), tiny_model("gender", 34), age, tta={"gender": ["hflip"]}).save(tmp_path / "p")
    photos = sorted(str(p) for p in (toy_root / "eval" / "images").glob("*.jpg"))[:7]
    monkeypatch.setattr(onnx_model, "model_workers", lambda: 3)
    side = Pipeline.from_pretrained(d)
    ms = [m for model in side.models.values() for m in members(model)]
    assert side.model_workers == 3 and len(ms) == 4
    assert all(m.session.get_session_options().intra_op_num_threads == 1 for m in ms)
    monkeypatch.setattr(onnx_model, "model_workers", lambda: 1)  # one worker: sessions on the cores maskage uses
    one = Pipeline.from_pretrained(d)
    assert one.model_workers == 1 and all(m.threads != 1 for model in one.models.values() for m in members(model))
    ref = Pipeline.from_pretrained(d, backend="torch")
    assert ref.model_workers == 1
    a, b, c = side.predict(photos), one.predict(photos), ref.predict(photos)
    assert [p.class_id for p in a] == [p.class_id for p in b] == [p.class_id for p in c]
    for pa, pb, pc in zip(a, b, c):
        for key in ("mask_probs", "gender_probs", "age_probs"):
            assert getattr(pa, key) == pytest.approx(getattr(pb, key), abs=1e-6)
            assert getattr(pa, key) == pytest.approx(getattr(pc, key), abs=1e-5)


def test_run_models_cuts_batches_into_pieces_and_keeps_their_order():
    import threading

    from maskage.models.onnx_model import run_models

    class Recorder:
        def __init__(self, k):
            self.k, self.sizes, self.threads = k, [], set()

        def predict_inputs(self, x):
            self.sizes.append(len(x))
            self.threads.add(threading.get_ident())
            return x[:, :1] * self.k

    x = np.arange(22, dtype=np.float32).reshape(11, 2)
    one = Recorder(2)
    (out,) = run_models([(one, x)], workers=2)  # a single model: its batch cut in two, both halves at once
    np.testing.assert_array_equal(out, x[:, :1] * 2)
    assert sorted(one.sizes) == [5, 6]
    jobs = [(Recorder(k), x[: 3 + k]) for k in range(3)]  # more models than workers: each batch cut in two too
    outs = run_models(jobs, workers=2)
    for (m, xs), o in zip(jobs, outs):
        np.testing.assert_array_equal(o, xs[:, :1] * m.k)
        assert sorted(m.sizes) == [len(xs) // 2, len(xs) - len(xs) // 2]
    ones = [(Recorder(k), x[1:2]) for k in range(3)]  # a batch of one stays whole
    assert [o.tolist() for o in run_models(ones, workers=2)] == [[[0.0]], [[2.0]], [[4.0]]]
    assert all(m.sizes == [1] for m, _ in ones)
    seq = Recorder(1)
    assert [o.shape for o in run_models([(seq, x), (seq, x[:0])], workers=1)] == [(11, 1), (0, 1)]
    assert seq.sizes == [11, 0] and seq.threads == {threading.get_ident()}  # workers=1: in the caller's thread


def test_calibration_photos_spread_evenly_over_the_listing():
    from maskage.pipeline.outputs import evenly

    items = [f"{d}/{k}.jpg" for d in "abcd" for k in range(5)]  # four folders of five photos, sorted
    picked = evenly(items, 4)
    assert picked == ["a/0.jpg", "b/0.jpg", "c/0.jpg", "d/0.jpg"]  # one from each folder, not the first four
    assert evenly(items, 0) == items and evenly(items, 50) == items  # 0 = all; a limit over the list: all, once
    assert len(evenly(items, 7)) == 7 and len(set(evenly(items, 7))) == 7


def test_swap_replaces_one_model_and_keeps_every_other_file(tmp_path, toy_root, capsys, monkeypatch):
    monkeypatch.setenv("MASKAGE_INT8", "1")
    base = Pipeline(tiny_model("mask", 51), tiny_model("gender", 52), tiny_model("age", 53)).save(tmp_path / "base")
    images = toy_root / "eval" / "images"
    assert main(["export", str(base), "--int8", "age", "--calibration", str(images), "--calibration-limit", "6"]) == 0
    new_mask = tiny_model("mask", 54).save(tmp_path / "run")
    out = tmp_path / "cand"
    assert main(["swap", f"mask={new_mask}", "--base", str(base), "--out", str(out)]) == 0
    assert f"mask from {new_mask} (float32)" in capsys.readouterr().out
    before, after = (json.loads((d / "pipeline.json").read_text())["models"] for d in (base, out))
    assert after["gender"] == before["gender"] and after["age"] == before["age"]  # int8 age file and hashes kept
    assert (out / "age" / "model.onnx").read_bytes() == (base / "age" / "model.onnx").read_bytes()
    assert after["mask"]["sha256"]["weights.pt"] != before["mask"]["sha256"]["weights.pt"]
    assert after["mask"]["onnx"]["precision"] == "float32"
    photos = sorted(str(p) for p in images.glob("*.jpg"))[:6]
    swapped, old = Pipeline.from_pretrained(out), Pipeline.from_pretrained(base)
    reference = Pipeline(tiny_model("mask", 54), tiny_model("gender", 52), tiny_model("age", 53))
    for s, o, r in zip(swapped.predict(photos), old.predict(photos), reference.predict(photos)):
        assert s.mask_probs == pytest.approx(r.mask_probs, abs=1e-5)  # the new mask model, from its ONNX file
        assert s.gender_probs == o.gender_probs and s.age_probs == o.age_probs  # the rest as the base runs them
    # refused before anything is written: a run of another task, an occupied folder, an unknown task
    with pytest.raises(ModelFileError, match="expected a gender model|gender"):
        swap_models(base, tmp_path / "c2", {"gender": new_mask})
    assert not (tmp_path / "c2").exists()
    with pytest.raises(UsageError, match="not empty"):
        swap_models(base, out, {"mask": new_mask})
    with pytest.raises(UsageError, match="name one model"):
        swap_models(base, tmp_path / "c3", {"nose": new_mask})
    # several runs: their soft-voted ensemble, each member with its own ONNX file
    other = tiny_model("mask", 55).save(tmp_path / "run2")
    assert main(["swap", f"mask={new_mask},{other}", "--base", str(base), "--out", str(tmp_path / "ens")]) == 0
    entry = json.loads((tmp_path / "ens" / "pipeline.json").read_text())["models"]["mask"]
    assert [m["dir"] for m in entry["members"]] == ["mask/0", "mask/1"] and entry["weights"] == [1.0, 1.0]
    ens = Pipeline.from_pretrained(tmp_path / "ens")
    pair = Pipeline(reference.models["mask"], tiny_model("gender", 52), tiny_model("age", 53))
    pair2 = Pipeline(tiny_model("mask", 55), tiny_model("gender", 52), tiny_model("age", 53))
    for e, a, b in zip(ens.predict(photos), pair.predict(photos), pair2.predict(photos)):
        assert e.mask_probs == pytest.approx({k: (a.mask_probs[k] + b.mask_probs[k]) / 2 for k in a.mask_probs}, abs=1e-5)
    # without export the new model has no ONNX file of its own (the cache serves it)
    d = swap_models(base, tmp_path / "c4", {"mask": new_mask}, dtype="float16", export=False)
    assert not (d / "mask" / "model.onnx").exists() and "onnx" not in json.loads((d / "pipeline.json").read_text())["models"]["mask"]
