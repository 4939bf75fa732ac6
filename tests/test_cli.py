import csv
import json

import numpy as np
import pytest
import subprocess
import sys
from pathlib import Path


from maskage import Pipeline
from maskage.apps.cli import main
from maskage.metrics import score

from .conftest import TINY, tiny_model


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _tiny_args(**extra):
    return [f"{k}={v}" for k, v in dict(TINY, **extra).items()]


def test_train_pipeline_submit_evaluate_end_to_end(toy_root, tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("epochs: 2\nlr: 0.005\n")
    runs = {}
    for task in ("mask", "gender", "age"):
        runs[task] = tmp_path / "runs" / task
        rc = main(["train", task, str(cfg), f"data_dir={toy_root / 'train'}", f"output_dir={runs[task]}",
                   *_tiny_args(epochs=2), "--quiet"])
        assert rc == 0
        assert (runs[task] / "model.json").is_file() and (runs[task] / "config.yaml").is_file()
    assert main(["pipeline", str(runs["mask"]), str(runs["gender"]), str(runs["age"]), "--out", str(tmp_path / "pipe")]) == 0
    sub = tmp_path / "submission.csv"
    assert main(["submit", str(toy_root / "eval"), "--pipeline", str(tmp_path / "pipe"), "--out", str(sub)]) == 0
    info = _rows(toy_root / "eval" / "info.csv")
    rows = _rows(sub)
    assert list(rows[0]) == ["ImageID", "ans"]
    assert [r["ImageID"] for r in rows] == [r["ImageID"] for r in info]
    api = Pipeline.from_pretrained(tmp_path / "pipe").predict([str(toy_root / "eval" / "images" / r["ImageID"]) for r in rows])
    assert [int(r["ans"]) for r in rows] == [p.class_id for p in api]
    capsys.readouterr()
    assert main(["evaluate", str(sub), str(toy_root / "eval" / "gt.csv"), "--json", str(tmp_path / "s.json")]) == 0
    text = capsys.readouterr().out
    gt = {r["ImageID"]: int(r["ans"]) for r in _rows(toy_root / "eval" / "gt.csv")}
    expected = score([gt[r["ImageID"]] for r in rows], [int(r["ans"]) for r in rows])
    assert f"18-class macro F1: {expected['macro_f1']:.4f} [" in text  # with its bootstrap interval
    assert "confusion matrix" in text
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["macro_f1_ci"][0] <= saved["macro_f1"] <= saved["macro_f1_ci"][1] and "gender_f1_ci" in saved


def test_predict_cli_equals_api(toy_root, tmp_path):
    pipe = Pipeline(tiny_model("mask", 4), tiny_model("gender", 5), tiny_model("age", 6))
    d = pipe.save(tmp_path / "pipe")
    folder = toy_root / "eval" / "images"
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(folder), str(bad), "--pipeline", str(d), "--out", str(out)]) == 0
    rows = _rows(out)
    images = sorted(str(p) for p in folder.glob("*.jpg"))
    api = Pipeline.from_pretrained(d).predict(images + [str(bad)])
    assert len(rows) == len(api) == len(images) + 1
    for r, p in zip(rows, api):
        assert r["path"] == p.source
        assert r["class"] == ("" if p.class_id is None else str(p.class_id))
        assert (r["mask"], r["gender"], r["age"]) == (p.mask or "", p.gender or "", p.age or "")
        assert r["error"] == (p.error or "")
    assert rows[-1]["error"] and rows[-1]["class"] == ""


def test_predict_and_submit_show_a_progress_bar_over_the_photos_unless_quiet(toy_root, tmp_path, capsys):
    d = Pipeline(tiny_model("mask", 4), tiny_model("gender", 5), tiny_model("age", 6)).save(tmp_path / "pipe")
    n = len(list((toy_root / "eval" / "images").glob("*.jpg")))
    args = [str(toy_root / "eval" / "images"), "--pipeline", str(d), "--out", str(tmp_path / "p.csv"), "--batch-size", "4"]
    assert main(["predict", *args]) == 0
    err = capsys.readouterr().err  # not a terminal here: whole lines, the last with the final count
    assert "\r" not in err and "photos: 100%" in err and f" {n}/{n} " in err
    assert main(["predict", *args, "--quiet"]) == 0
    assert "photos" not in capsys.readouterr().err
    assert main(["submit", str(toy_root / "eval"), "--pipeline", str(d), "--out", str(tmp_path / "s.csv")]) == 0
    assert f" {n}/{n} " in capsys.readouterr().err


def test_predict_cli_refuses_bad_options_before_predicting(toy_root, tmp_path, capsys):
    d = Pipeline(tiny_model("mask", 4), tiny_model("gender", 5), tiny_model("age", 6)).save(tmp_path / "pipe")
    out = tmp_path / "preds.csv"
    assert main(["predict", str(toy_root / "eval" / "images"), "--pipeline", str(d), "--out", str(out),
                 "--batch-size", "0"]) == 2
    assert "batch size must be a whole number >= 1" in capsys.readouterr().err and not out.exists()
    taken = tmp_path / "boxed.jpg"
    taken.write_bytes(b"a file, not a folder")
    assert main(["predict", str(toy_root / "eval" / "images"), "--pipeline", str(d), "--out", str(out),
                 "--annotate", str(taken)]) == 2
    assert "a file is there" in capsys.readouterr().err and not out.exists()


def test_installed_command_runs(tmp_path):
    out = subprocess.run([sys.executable, "-m", "maskage", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "train" in out.stdout and "submit" in out.stdout


def test_clear_errors_and_exit_codes(toy_root, tmp_path, capsys):
    base = Path(__file__).resolve().parents[1] / "experiments" / "base.yaml"
    rc = main(["train", "mask", str(base), f"data_dir={toy_root / 'train'}", "epoch=3"])
    assert rc == 2 and "unknown config key 'epoch'" in capsys.readouterr().err
    pred = tmp_path / "p.csv"
    pred.write_text("ImageID,ans\nx.jpg,3\n")
    gt = tmp_path / "g.csv"
    gt.write_text("ImageID,ans\nx.jpg,3\ny.jpg,4\n")
    assert main(["evaluate", str(pred), str(gt)]) == 1
    assert "have no prediction" in capsys.readouterr().err
    assert main(["submit", str(tmp_path), "--pipeline", str(tmp_path), "--out", str(tmp_path / "s.csv")]) == 2
    assert "info.csv" in capsys.readouterr().err


def test_demo_runs_the_whole_job(tmp_path, capsys):
    assert main(["demo", "--train", "--out", str(tmp_path / "demo"), "--people", "12", "--epochs", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "18-class macro F1" in out
    assert (tmp_path / "demo" / "pipeline" / "pipeline.json").is_file()
    rows = _rows(tmp_path / "demo" / "submission.csv")
    assert len(rows) == len(_rows(tmp_path / "demo" / "data" / "eval" / "gt.csv")) > 0


def test_predict_demo_boxes_the_bundled_photo_and_its_masked_variants(tmp_path, capsys):
    from PIL import Image

    from maskage.apps.demo import run_predict_demo

    pipe = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3)).save(tmp_path / "pipe")
    preds = run_predict_demo(tmp_path / "demo", pipeline=pipe)
    rows = _rows(tmp_path / "demo" / "predictions.csv")
    assert len(preds) == len(rows) == 4
    assert [Path(r["path"]).name for r in rows] == ["bare.jpg", "mask_correct.jpg", "mask_nose_exposed.jpg",
                                                    "mask_under_chin.jpg"]
    assert all(p.face_box is not None and p.error is None for p in preds)  # the face is found, masked or not
    assert [r["class"] for r in rows] == [str(p.class_id) for p in preds]
    bare = np.asarray(Image.open(tmp_path / "demo" / "images" / "bare.jpg")).astype(int)
    boxed = np.asarray(Image.open(tmp_path / "demo" / "annotated" / "bare.jpg")).astype(int)
    x1, y1, x2, y2 = (int(round(v)) for v in preds[0].face_box)
    assert np.abs(boxed[y1 + 1 : y2 - 1, x1] - bare[y1 + 1 : y2 - 1, x1]).mean() > 40  # the box edge is drawn
    assert Image.open(tmp_path / "demo" / "predictions.jpg").size == (768, 768)
    assert "mask_nose_exposed.jpg" in capsys.readouterr().out


def test_predict_all_faces_cli_equals_api(tmp_path):
    from PIL import Image

    from .test_pipeline import two_faces

    pipe = Pipeline(tiny_model("mask", 4), tiny_model("gender", 5), tiny_model("age", 6))
    d = pipe.save(tmp_path / "pipe")
    Image.fromarray(two_faces()).save(tmp_path / "two.jpg")
    Image.new("RGB", (80, 60), (128, 128, 128)).save(tmp_path / "blank.jpg")
    out = tmp_path / "faces.csv"
    inputs = [str(tmp_path / "two.jpg"), str(tmp_path / "blank.jpg")]
    assert main(["predict", *inputs, "--pipeline", str(d), "--out", str(out), "--all-faces",
                 "--annotate", str(tmp_path / "boxed")]) == 0
    rows = _rows(out)
    api = Pipeline.from_pretrained(d).predict_all_faces(inputs)
    flat = [p for faces in api for p in faces]
    n_two = len(api[0])
    assert n_two >= 2 and len(api[1]) == 1  # both faces (the detector may add a low-score third at min_face 20)
    assert len(rows) == len(flat) == n_two + 1
    assert [r["face_index"] for r in rows] == [str(k) for k in range(n_two)] + ["0"]
    assert [r["class"] for r in rows] == [str(p.class_id) for p in flat]
    assert rows[-1]["face_box"] == ""
    assert sorted(p.name for p in (tmp_path / "boxed").iterdir()) == ["blank.jpg", "two.jpg"]


def test_submit_names_info_rows_without_images_and_duplicates(toy_root, tmp_path, capsys):
    import shutil

    pipe = Pipeline(tiny_model("mask", 4), tiny_model("gender", 5), tiny_model("age", 6)).save(tmp_path / "pipe")
    ev = tmp_path / "eval"
    shutil.copytree(toy_root / "eval", ev)
    lines = (ev / "info.csv").read_text().splitlines()
    (ev / "info.csv").write_text("\n".join(lines + ["ghost.jpg,0", lines[1]]) + "\n")
    assert main(["submit", str(ev), "--pipeline", str(pipe), "--out", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err
    n = len(lines)
    assert f"line {n + 1}: ghost.jpg has no image" in err
    assert f"line {n + 2}: {lines[1].split(',')[0]} listed twice (first on line 2)" in err
    assert not (tmp_path / "s.csv").exists()
    # an image that cannot be read: named, nothing written
    (ev / "info.csv").write_text("\n".join(lines) + "\n")
    first = lines[1].split(",")[0]
    (ev / "images" / first).write_text("not an image")
    assert main(["submit", str(ev), "--pipeline", str(pipe), "--out", str(tmp_path / "s.csv")]) == 2
    assert "1 image(s) could not be predicted" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()


def test_evaluate_names_bad_rows(tmp_path, capsys):
    gt = tmp_path / "g.csv"
    gt.write_text("ImageID,ans\na.jpg,3\n")
    for body, message in (("a.jpg,x", "line 2: ans='x' is not a class id"), ("a.jpg,18", "line 2: class 18 is outside"),
                          ("a.jpg,1\na.jpg,2", "line 3: a.jpg listed twice")):
        pred = tmp_path / "p.csv"
        pred.write_text("ImageID,ans\n" + body + "\n")
        assert main(["evaluate", str(pred), str(gt)]) == 2
        assert message in capsys.readouterr().err


def test_pipeline_frame_option_sets_that_tasks_crops_as_the_api_does(toy_root, tmp_path, capsys):
    from maskage.pipeline.core import set_frame

    runs = {}
    for i, task in enumerate(("mask", "gender", "age")):
        runs[task] = tiny_model(task, i).save(tmp_path / task)
    out = tmp_path / "pipe"
    assert main(["pipeline", str(runs["mask"]), str(runs["gender"]), str(runs["age"]), "--out", str(out),
                 "--frame", "gender=0.8:0.1"]) == 0
    cli = Pipeline.from_pretrained(out, backend="torch")
    assert cli.models["gender"].spec.crop_settings.frame == 0.8
    assert cli.models["gender"].spec.crop_settings.frame_shift == 0.1
    assert cli.models["mask"].spec.crop_settings.frame == 0 and cli.models["age"].spec.crop_settings.frame == 0
    api = Pipeline.from_runs(runs["mask"], runs["gender"], runs["age"])
    set_frame(api, "gender", 0.8, 0.1)
    photos = sorted((toy_root / "eval" / "images").iterdir())[:6]
    for a, b in zip(api.predict(photos), cli.predict(photos)):
        assert a.class_id == b.class_id and a.gender_probs == pytest.approx(b.gender_probs, abs=1e-6)
    capsys.readouterr()
    assert main(["pipeline", str(runs["mask"]), str(runs["gender"]), str(runs["age"]), "--out", str(out),
                 "--frame", "0.8"]) != 0
    assert "--frame takes TASK=VALUE" in capsys.readouterr().err


def test_main_maps_maskage_errors_to_exit_2_and_lets_bugs_raise(monkeypatch, capsys):
    import maskage.apps.cli_use as cli
    from maskage.training.data import DatasetError
    from maskage.errors import MaskageError, UsageError

    def failing(exc):
        def cmd(args):
            raise exc
        return cmd

    for exc in (DatasetError("train.csv line 3: bad age"), UsageError("--every must be >= 1")):
        monkeypatch.setattr(cli, "cmd_evaluate", failing(exc))
        assert main(["evaluate", "a.csv", "b.csv"]) == 2
        assert f"error: {exc}" in capsys.readouterr().err
    assert issubclass(DatasetError, MaskageError) and issubclass(UsageError, ValueError)
    monkeypatch.setattr(cli, "cmd_evaluate", failing(ValueError("a bug's ValueError, e.g. from numpy")))
    with pytest.raises(ValueError, match="a bug"):
        main(["evaluate", "a.csv", "b.csv"])
    monkeypatch.setattr(cli, "cmd_evaluate", failing(KeyError("x")))
    with pytest.raises(KeyError):
        main(["evaluate", "a.csv", "b.csv"])


def test_portrait_option_saves_the_detector_and_predict_equals_the_api(tmp_path):
    from dataclasses import replace

    from maskage.apps.demo import sample_photo

    runs = [tiny_model(task, i).save(tmp_path / task) for i, task in enumerate(("mask", "gender", "age"))]
    out = tmp_path / "pipe"
    assert main(["pipeline", *map(str, runs), "--out", str(out), "--portrait", "yunet"]) == 0
    saved = Pipeline.from_pretrained(out)
    assert saved.detector_settings.portrait == "yunet"
    photo = str(sample_photo())
    (yunet,) = saved.predict([photo])
    api = Pipeline.from_runs(*runs)
    (mtcnn,) = api.predict([photo])
    assert yunet.face_box != mtcnn.face_box  # another detector's box for the same face
    assert main(["predict", photo, "--pipeline", str(tmp_path / "pipe"), "--portrait", "mtcnn",
                 "--out", str(tmp_path / "m.csv")]) == 0
    row = _rows(tmp_path / "m.csv")[0]
    assert row["class"] == str(mtcnn.class_id) and row["face_box"] == mtcnn.to_row()["face_box"]
    api.detector_settings = replace(api.detector_settings, portrait="yunet")
    assert main(["predict", photo, "--pipeline", str(tmp_path / "pipe"), "--out", str(tmp_path / "y.csv")]) == 0
    row = _rows(tmp_path / "y.csv")[0]
    (again,) = api.predict([photo])
    assert again.face_box == yunet.face_box and row["face_box"] == again.to_row()["face_box"]
    assert row["class"] == str(again.class_id)


def test_predict_without_out_prints_a_table_and_json_on_request(toy_root, tmp_path, capsys):
    import json

    pipe = Pipeline(tiny_model("mask", 4), tiny_model("gender", 5), tiny_model("age", 6))
    d = pipe.save(tmp_path / "pipe")
    images = sorted(str(p) for p in (toy_root / "eval" / "images").glob("*.jpg"))[:3]
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    api = Pipeline.from_pretrained(d).predict(images + [str(bad)])
    assert main(["predict", *images, str(bad), "--pipeline", str(d), "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:5] == ["photo", "face", "box", "mask", "gender"] and len(lines) == 1 + len(api)
    for line, p in zip(lines[1:4], api):
        assert line.startswith(Path(p.source).name)
        for label, probs in ((p.mask, p.mask_probs), (p.gender, p.gender_probs), (p.age, p.age_probs)):
            assert f"{label} {probs[label]:.2f}" in line
    assert "bad.png" in lines[4] and "error:" in lines[4]
    # --json: the same predictions, machine-readable, as the service's face records
    assert main(["predict", *images, str(bad), "--pipeline", str(d), "--quiet", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in records] == images + [str(bad)]
    for r, p in zip(records[:3], api):
        face = r["faces"][0]
        assert r["error"] is None and face["class_id"] == p.class_id and face["mask"] == p.mask
        assert face["mask_probs"] == pytest.approx(p.mask_probs)
    assert records[3]["faces"] == [] and "bad.png" in records[3]["error"]
    # --out x.json writes the same records; --format overrides the suffix
    assert main(["predict", *images, "--pipeline", str(d), "--quiet", "--out", str(tmp_path / "p.json")]) == 0
    assert json.loads((tmp_path / "p.json").read_text()) == records[:3]
    assert main(["predict", *images, "--pipeline", str(d), "--quiet", "--out", str(tmp_path / "p.txt"),
                 "--format", "csv"]) == 0
    assert [r["class"] for r in _rows(tmp_path / "p.txt")] == [str(p.class_id) for p in api[:3]]
    capsys.readouterr()
    assert main(["predict", *images, "--pipeline", str(d), "--format", "json"]) == 2
    assert "--format sets the file type of --out" in capsys.readouterr().err


def test_bare_command_prints_help_and_version_is_reported(capsys):
    import maskage

    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: maskage" in out and "predict" in out and "train" in out
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"maskage {maskage.__version__}"
    assert main(["predict"]) == 2 and "give photos" in capsys.readouterr().err
    assert main(["predict", "entrance.mp4"]) == 2 and "add --out rows.csv" in capsys.readouterr().err


def test_ray_options_are_checked_before_any_cluster_starts(toy_root, tmp_path, capsys):
    photos = str(toy_root / "eval" / "images")
    assert main(["predict", photos, "--ray"]) == 2 and "--ray writes rows into --out" in capsys.readouterr().err
    assert main(["predict", photos, "--ray", "--out", str(tmp_path / "rows.txt")]) == 2
    assert "writes .parquet or .csv" in capsys.readouterr().err
    assert main(["predict", photos, "--actors", "2", "--out", str(tmp_path / "p.csv")]) == 2
    assert "--actors is for --ray" in capsys.readouterr().err
    assert main(["serve", "--replicas", "2"]) == 2 and "--replicas is for --ray" in capsys.readouterr().err
