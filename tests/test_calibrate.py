import json

import numpy as np
import pytest
from sklearn.metrics import f1_score

from maskage.pipeline.calibrate import balanced_weights, calibrate_pipeline, fit_bias, read_labels, weighted_macro_f1


def test_weighted_macro_f1_equals_sklearn():
    rng = np.random.default_rng(0)
    t, p, w = rng.integers(0, 3, 400), rng.integers(0, 3, 400), rng.random(400)
    assert weighted_macro_f1(t, p, w, 3) == pytest.approx(f1_score(t, p, average="macro", sample_weight=w))
    t2 = np.where(t == 2, 0, t)  # a class absent from truth but predicted still counts, as in sklearn
    assert weighted_macro_f1(t2, p, w, 3) == pytest.approx(f1_score(t2, p, average="macro", sample_weight=w))


def test_balanced_weights_give_each_key_the_same_total():
    w = balanced_weights(["a", "a", "a", "b"])
    assert w.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])


def test_fit_bias_undoes_a_shift_and_keeps_zero_for_calibrated_probs():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 3000)
    logits = rng.normal(size=(3000, 3)) + 2.0 * np.eye(3)[truth]
    fair = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    offsets, before, after = fit_bias(fair, truth)
    assert max(abs(b) for b in offsets) <= 0.2 and after >= before
    # the same scores leaning towards class 0 by e^1.2: calibration takes about that much back
    lean = fair * np.exp([1.2, 0.0, 0.0])
    lean /= lean.sum(1, keepdims=True)
    offsets, before, after = fit_bias(lean, truth)
    assert offsets[0] == 0 and offsets[1] == pytest.approx(1.2, abs=0.3) and offsets[2] == pytest.approx(1.2, abs=0.3)
    assert after > before + 0.02
    with pytest.raises(ValueError, match="labels must be 0..2"):
        fit_bias(lean, truth + 1)


def _labels_csv(toy_root, path, rows):
    path.write_text("path,gender,age,source\n" + "".join(f"{p},{g},{a},{s}\n" for p, g, a, s in rows))
    return path


def test_read_labels_reads_names_numbers_and_unknowns(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("path,gender,age,mask\na.jpg,female,31,wear\nb.jpg,0,,2\nc.jpg,,-1,\n")
    rows = read_labels(csv)
    assert [(r["gender"], r["age"], r["mask"]) for r in rows] == [(1, 31, 0), (0, -1, 2), (-1, -1, -1)]
    assert rows[0]["path"] == str(tmp_path / "a.jpg")
    csv.write_text("path,gender\na.jpg,woman\n")
    with pytest.raises(ValueError, match="line 2: 'woman' is not one of male, female"):
        read_labels(csv)
    csv.write_text("path,colour\na.jpg,red\n")
    with pytest.raises(ValueError, match="no label column"):
        read_labels(csv)


def test_calibrate_pipeline_writes_a_copy_whose_predictions_use_the_offsets(tmp_path, toy_root):
    from maskage import Pipeline

    from .conftest import tiny_model

    src = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3)).save(tmp_path / "pipe")
    photos = sorted((toy_root / "eval" / "images").glob("*.jpg"))[:12]
    base = Pipeline.from_pretrained(src).predict([str(p) for p in photos])
    # every photo labelled with the gender the random tiny model calls least and the age group second most likely
    # on average (within the offsets' reach): the offsets that maximise F1 must turn its calls towards them
    gender = min(("male", "female"), key=lambda g: sum(p.gender == g for p in base))
    group = int(np.argsort(np.mean([list(p.age_probs.values()) for p in base], axis=0))[-2])
    assert sum(p.gender == gender for p in base) < 6 and sum(p.age == list(p.age_probs)[group] for p in base) < 6
    rows = [(str(p), gender, (25, 45, 70)[group], "toy") for p in photos]
    result = calibrate_pipeline(src, _labels_csv(toy_root, tmp_path / "l.csv", rows), tmp_path / "cal",
                                progress=False)
    assert set(result) == {"gender", "age"} and result["gender"]["rows"] == 12
    for task in ("gender", "age"):
        assert result[task]["f1_after"] == 1.0 > result[task]["f1_before"]
    meta = json.loads((tmp_path / "cal" / "pipeline.json").read_text())
    assert meta["bias"]["gender"] == result["gender"]["bias"] and meta["calibration"]["gender"]["rows"] == 12
    cal = Pipeline.from_pretrained(tmp_path / "cal")
    assert cal.bias["gender"] == tuple(result["gender"]["bias"]) and cal.bias["age"] == tuple(result["age"]["bias"])
    preds = cal.predict([str(p) for p in photos])
    assert all(p.gender == gender and p.age == list(p.age_probs)[group] for p in preds)
    assert [p.mask_probs for p in preds] == [p.mask_probs for p in base]  # mask was not calibrated
    with pytest.raises(ValueError, match="exists"):
        calibrate_pipeline(src, tmp_path / "l.csv", tmp_path / "cal", progress=False)
    with pytest.raises(ValueError, match="tasks must be some of"):
        calibrate_pipeline(src, tmp_path / "l.csv", tmp_path / "other", tasks=["hair"], progress=False)


def test_cli_calibrate_matches_the_api(tmp_path, toy_root, capsys):
    from maskage import Pipeline
    from maskage.apps.cli import main

    from .conftest import tiny_model

    src = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3)).save(tmp_path / "pipe")
    photos = sorted((toy_root / "eval" / "images").glob("*.jpg"))[:8]
    labels = _labels_csv(toy_root, tmp_path / "l.csv", [(str(p), ("male", "female")[i % 2], 20 + 7 * i, "toy")
                                                       for i, p in enumerate(photos)])
    api = calibrate_pipeline(src, labels, tmp_path / "api", tasks=["gender"], progress=False)
    assert main(["calibrate", str(labels), "--pipeline", str(src), "--out", str(tmp_path / "cli"),
                 "--tasks", "gender", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"on 8 photos; balanced macro F1 {api['gender']['f1_before']:.4f} -> {api['gender']['f1_after']:.4f}" in out
    assert (json.loads((tmp_path / "cli" / "pipeline.json").read_text())["calibration"]
            == json.loads((tmp_path / "api" / "pipeline.json").read_text())["calibration"] | {"labels": str(labels)})
    assert main(["calibrate", str(labels), "--pipeline", str(src), "--out", str(tmp_path / "cli")]) == 2
    assert "exists" in capsys.readouterr().err
