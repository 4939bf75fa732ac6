"""The pipeline shipped inside maskage: it loads with no arguments, describes itself, and predicts real photos."""
import csv
import json

import pytest

from maskage import Pipeline
from maskage.apps.cli import main
from maskage.labels import PIPELINE_TASKS as TASKS
from maskage.pipeline.core import PRETRAINED_DIR


@pytest.fixture(scope="module")
def shipped():
    return Pipeline.from_pretrained()


def test_shipped_pipeline_loads_with_no_arguments(shipped):
    assert {t: m.task for t, m in shipped.models.items()} == {"mask": "mask", "gender": "gender", "age": "age"}
    assert shipped.models["age"].spec.age_threshold == 60 and len(shipped.models["age"].spec.labels) == 11
    meta = json.loads((PRETRAINED_DIR / "pipeline.json").read_text())
    assert set(meta["models"]) == {"mask", "gender", "age"}
    # one-face photos go to YuNet on a scaled-down copy (docs/cli.md), scenes to YuNet at full size
    settings = shipped.detector_settings
    assert (settings.portrait, settings.portrait_face_px, settings.min_face_fraction, settings.scene) == (
        "yunet", 24, 0.2, "auto")
    size = sum(p.stat().st_size for p in PRETRAINED_DIR.rglob("*") if p.is_file())
    # small enough to live in the repository: float16 weights, and ONNX files so that prediction exports nothing
    assert size < 40 * 2**20


def test_model_card_names_the_training_data_and_its_licences():
    card = (PRETRAINED_DIR / "MODEL_CARD.md").read_text()
    for needle in ("UTKFace", "MaskedFace-Net", "RMFD", "facemask_faces", "non-commercial", "CC BY-NC-SA 4.0",
                   "macro F1", "benchmarks/real_masks.py", "benchmarks/cross_source.py"):
        assert needle in card, needle
    lines = card.splitlines()
    assert len(lines) <= 80 and max(map(len, lines)) <= 120  # a card, not a report: the report is measurements.md
    assert "@@" not in card


def test_shipped_pipeline_reads_the_mask_state_of_the_demo_photos(shipped, tmp_path):
    from maskage.apps.demo import masked_variants, sample_photo

    files = masked_variants(sample_photo(), tmp_path)
    preds = shipped.predict([str(f) for f in files.values()])
    assert all(p.face_box is not None for p in preds)
    got = {name: p.mask for name, p in zip(files, preds)}
    assert got["bare"] == "not_wear" and got["correct"] == "wear"
    assert got["nose_exposed"] == "incorrect"


def test_shipped_pipeline_reads_the_demo_photos_woman_in_her_forties(shipped, tmp_path):
    from maskage.apps.demo import masked_variants, sample_photo

    files = masked_variants(sample_photo(), tmp_path)
    preds = dict(zip(files, shipped.predict([str(f) for f in files.values()])))
    assert all(p.gender == "female" for p in preds.values())
    # 30-59 bare, with the mask worn and pulled under the chin; with the nose out she sits on the 30-59 / 60+
    # boundary since the 2026-12-02 224 px age models (0.47 / 0.50; the 2026-12-03 distilled one 0.47 /
    # 0.51, and 0.51 / 0.46 as the int8 model shipped since 2026-12-03; its 192 px student of 2026-12-06: 0.45 /
    # 0.54; the 160 px ones: 0.64 / 0.30),
    # which gained on 2,100 held-out people (docs/measurements.md): the test holds her near it, not on one side
    ages = {name: p.age for name, p in preds.items()}
    assert {ages["bare"], ages["correct"], ages["under_chin"]} == {"30-59"}
    near = preds["nose_exposed"].age_probs
    assert near["<30"] < 0.1 and near["30-59"] > 0.4 and near["60+"] < 0.6


def test_predict_without_pipeline_uses_the_shipped_one(shipped, tmp_path):
    from maskage.apps.demo import sample_photo

    out = tmp_path / "preds.csv"
    assert main(["predict", str(sample_photo()), "--out", str(out)]) == 0
    (row,) = list(csv.DictReader(out.open()))
    (api,) = shipped.predict([str(sample_photo())])
    assert row["class"] == str(api.class_id) and row["mask"] == api.mask and row["error"] == ""


def test_shipped_pipeline_runs_on_onnx_runtime_by_default_with_pytorchs_results(shipped, tmp_path):
    from maskage.apps.demo import masked_variants, sample_photo
    from maskage.models.onnx_model import cached_onnx_path
    from maskage.pipeline.files import _onnx_key, running_precision

    # every model from the int8 model.onnx shipped beside its weights: the first run exports nothing into the cache
    assert shipped.backend == "onnx"
    meta = json.loads((PRETRAINED_DIR / "pipeline.json").read_text())
    assert [meta["models"][t].get("onnx", {}).get("precision") for t in TASKS] == ["int8"] * 3
    assert [meta["models"][t]["onnx"]["weight_bits"] for t in TASKS] == [7, 7, 7]  # int8 on every CPU
    assert all((PRETRAINED_DIR / t / "model.onnx").is_file() for t in TASKS)
    assert not cached_onnx_path(_onnx_key("mask", meta["models"]["mask"]["sha256"])).exists()
    files = [str(f) for f in masked_variants(sample_photo(), tmp_path).values()]
    torch_pipe = Pipeline.from_pretrained(backend="torch")
    for a, b in zip(shipped.predict(files), torch_pipe.predict(files)):
        assert (a.mask, a.gender, a.face_box) == (b.mask, b.gender, b.face_box)
        # int8 against the float32 weights PyTorch runs: close, not equal (docs/measurements.md, 2026-12-03), on
        # every CPU (7-bit weights) unless MASKAGE_INT8=0 runs float32 exports of the same weights
        for task, got, ref in (("mask", a.mask_probs, b.mask_probs), ("gender", a.gender_probs, b.gender_probs),
                               ("age", a.age_probs, b.age_probs)):
            assert got == pytest.approx(ref, abs=0.05)
            assert (got != pytest.approx(ref, abs=1e-5)) == (running_precision(meta["models"][task]) == "int8")
