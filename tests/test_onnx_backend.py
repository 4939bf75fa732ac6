import json

import numpy as np
import pytest

from maskage import Pipeline
from maskage.cli import main
from maskage.models import ModelFileError
from maskage.onnx_backend import OnnxTaskModel, export_onnx

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


def test_exported_pipeline_runs_on_onnx_runtime_with_the_same_predictions(tmp_path, toy_root):
    d = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3)).save(tmp_path / "pipe")
    with pytest.raises(ModelFileError, match="maskage export"):
        Pipeline.from_pretrained(d, backend="onnx")
    assert Pipeline.from_pretrained(d).backend == "torch"  # auto: not exported yet
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
    with pytest.raises(ModelFileError, match="ONNX Runtime"):
        onnx_pipe.save(tmp_path / "again")


def _op_types(path) -> set:
    import onnx

    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_quantisation_quantises_the_convolutions_and_stays_close(tmp_path):
    from maskage.data import preprocess
    from maskage.onnx_backend import quantize_int8

    model = tiny_model("age", seed=5)
    model.save(tmp_path / "age")
    export_onnx(model, tmp_path / "age" / "fp32.onnx")
    crops = np.random.default_rng(2).integers(0, 255, (24, 40, 40, 3), dtype=np.uint8)
    x = preprocess(crops, 32, model.spec.mean, model.spec.std).numpy()
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


def test_int8_export_from_the_cli(tmp_path, toy_root, capsys):
    d = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3)).save(tmp_path / "pipe")
    assert main(["export", str(d), "--int8"]) == 2
    assert "--calibration" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["export", str(d), "--int8", "--calibration", str(tmp_path / "empty")]) != 0
    assert "needs calibration photos" in capsys.readouterr().err
    images = toy_root / "eval" / "images"
    assert main(["export", str(d), "--int8", "--calibration", str(images), "--calibration-limit", "12"]) == 0
    assert "int8 (calibrated on 12 photos)" in capsys.readouterr().out
    meta = json.loads((d / "pipeline.json").read_text())
    assert meta["models"]["mask"]["onnx"]["precision"] == "int8"
    assert meta["models"]["mask"]["onnx"]["calibration_photos"] == 12
    assert "QuantizeLinear" in _op_types(d / "gender" / "model.onnx")
    onnx_pipe, torch_pipe = Pipeline.from_pretrained(d), Pipeline.from_pretrained(d, backend="torch")
    assert onnx_pipe.backend == "onnx"
    photos = sorted(str(p) for p in images.glob("*.jpg"))[:8]
    for pa, pb in zip(onnx_pipe.predict(photos), torch_pipe.predict(photos)):
        assert pa.face_box == pb.face_box
        assert pa.gender_probs == pytest.approx(pb.gender_probs, abs=0.05)
