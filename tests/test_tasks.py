"""The task registry and the one interface every kind of task model implements."""
import numpy as np
import pytest

from maskage.training.data import Sample, task_samples, task_target
from maskage.models.ensemble import TaskEnsemble
from maskage.models.joint import SharedModel
from maskage.labels import AgeBins, Mask, encode
from maskage.models.torch_model import TaskModel, make_spec, task_labels
from maskage.models.tasks import TASK_KINDS, InputPredictor, TaskPredictor, task_kind

from .conftest import tiny_model


def test_registry_covers_every_task_and_names_the_known_ones():
    assert list(TASK_KINDS) == ["mask", "gender", "age", "joint", "multihead"]
    with pytest.raises(ValueError, match="unknown task 'hair'.*mask, gender, age, joint, multihead"):
        task_kind("hair")
    bins = AgeBins()
    assert task_labels("age", bins) == list(bins.labels) and len(task_labels("joint", bins)) == 18
    assert task_labels("multihead", bins)[:5] == ["mask:wear", "mask:incorrect", "mask:not_wear", "gender:male",
                                                  "gender:female"]


def test_each_task_learns_its_target_from_its_photos():
    bins = AgeBins()
    masked = Sample("a/mask1.jpg", "a", Mask.WEAR, 1, 64)
    bare = Sample("a/normal.jpg", "a", Mask.NOT_WEAR, 1, 64)
    lfw = Sample("l/x.jpg", "l", Mask.WEAR, 0, -1)  # a gender-only source
    folder = Sample("r/y.jpg", "r", Mask.INCORRECT, -1, -1)  # a mask-only folder
    assert [task_target(masked, t, bins) for t in ("mask", "gender", "age")] == [0, 1, len(bins) - 1]
    assert task_target(bare, "joint", bins) == encode(2, 1, 2)
    assert task_samples([masked, bare, lfw, folder], "mask") == [masked, bare, lfw, folder]
    assert task_samples([masked, bare, lfw, folder], "gender") == [masked, lfw]
    assert task_samples([masked, bare, lfw, folder], "gender", "all") == [masked, bare, lfw]
    assert task_samples([masked, bare, lfw, folder], "age") == [masked]
    assert task_samples([masked, bare, lfw, folder], "joint") == [masked, bare]


def test_every_kind_of_task_model_is_a_task_predictor(tmp_path):
    from maskage.models.onnx_model import OnnxTaskModel, export_onnx

    torch_model = tiny_model("gender", 1)
    d = torch_model.save(tmp_path / "g")
    export_onnx(torch_model, d / "model.onnx")
    onnx_model = OnnxTaskModel(torch_model.spec, d / "model.onnx")
    ensemble = TaskEnsemble([torch_model, tiny_model("gender", 2)])
    view = SharedModel(TaskModel(make_spec("joint", "test_efficientnet", 32))).views()["gender"]
    crops = np.random.default_rng(0).integers(0, 255, (3, 40, 40, 3), dtype=np.uint8)
    for model in (torch_model, onnx_model, ensemble, view):
        assert isinstance(model, TaskPredictor), type(model)
        assert model.task == "gender" and model.eval() is model
        p = model.predict_proba(crops)
        assert p.shape == (3, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
        if isinstance(model, InputPredictor):  # single models take preprocessed inputs too: the same answer
            from maskage.models.transforms import preprocess

            x = preprocess(crops, model.spec.input_size, model.spec.mean, model.spec.std)
            assert np.allclose(model.predict_inputs(x), p, atol=1e-5)
    assert not isinstance(ensemble, InputPredictor)
    assert np.allclose(onnx_model.predict_proba(crops), torch_model.predict_proba(crops), atol=1e-5)
