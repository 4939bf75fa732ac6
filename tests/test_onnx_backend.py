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
