import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from maskage.training.config import load_config
from maskage.training.data import DatasetError, load_train_samples, person_folds
from maskage.models.torch_model import TaskModel
from maskage.training.train import evaluate, train


def _log_rows(out):
    return list(csv.DictReader((out / "log.csv").open()))


def test_train_writes_a_loadable_run_with_person_disjoint_validation(tiny_overrides):
    cfg = load_config(None, dict(tiny_overrides, epochs=2), task="age")
    result = train(cfg, progress=False)
    out = result.output_dir
    assert load_config(out / "config.yaml") == cfg  # the resolved config is saved with the run
    assert len(_log_rows(out)) == 2
    model = TaskModel.load(out, "age")
    assert len(model.spec.labels) == 11 and model.spec.input_size == 32
    metrics = json.loads((out / "metrics.json").read_text())
    assert "group_macro_f1" in metrics and metrics["best_epoch"] == result.best_epoch
    assert 0.0 <= metrics["face_found_rate"] <= 0.2  # drawings: nearly every crop is the centre fallback
    folds = person_folds(load_train_samples(cfg.data_dir), cfg.n_folds, cfg.seed, cfg.age_threshold)
    val_rows = list(csv.DictReader((out / "val_predictions.csv").open()))
    assert {r["face_found"] for r in val_rows} <= {"0", "1"}
    val_people = {r["person"] for r in val_rows}
    assert val_people == {p for p, f in folds.items() if f == cfg.fold}
    # correctly-masked photos only for the age task: 5 per validation person
    assert metrics["n_val"] == 5 * len(val_people)


@pytest.mark.parametrize(
    "extra",
    [
        {"optimizer": "sgd", "scheduler": "step", "step_size": 1},
        {"optimizer": "adam", "grad_accum": 2, "weighted_sampler": True},
        {"loss": "0.4*f1+0.6*focal", "class_weights": "balanced", "label_smoothing": 0.1},
        {"freeze_stages": 1, "scheduler": "none"},
        {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "clahe": 0.5},
    ],
)
def test_training_options_run(tiny_overrides, extra):
    result = train(load_config(None, dict(tiny_overrides, **extra), task="gender"), progress=False)
    rows = _log_rows(result.output_dir)
    best = max(rows, key=lambda r: float(r["val_selection_f1"]))
    assert result.best_epoch == int(best["epoch"]) and result.best_f1 == pytest.approx(float(best["val_selection_f1"]), abs=1e-5)
    loaded = TaskModel.load(result.output_dir, "gender")
    probs = loaded.predict_proba(np.full((2, 40, 40, 3), 128, np.uint8))
    assert probs.shape == (2, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_early_stopping(tiny_overrides, monkeypatch):
    import maskage.training.train as train_mod

    real = train_mod.evaluate

    def flat(*args, **kwargs):  # validation F1 that never improves after epoch 1
        m = real(*args, **kwargs)
        m["selection_f1"] = 0.5
        return m

    monkeypatch.setattr(train_mod, "evaluate", flat)
    cfg = load_config(None, dict(tiny_overrides, epochs=6, patience=2), task="mask")
    result = train(cfg, progress=False)
    assert len(_log_rows(cfg.resolved_output_dir())) == 3  # epochs 2 and 3 stale -> stop
    assert result.best_epoch == 1


def test_save_epochs_keeps_every_epoch_and_the_best_matches_the_run(tiny_overrides):
    cfg = load_config(None, dict(tiny_overrides, epochs=3, save_epochs=True), task="mask")
    result = train(cfg, progress=False)
    out = result.output_dir
    assert sorted(p.name for p in out.glob("epoch_*")) == ["epoch_1", "epoch_2", "epoch_3"]
    crops = np.random.default_rng(1).integers(0, 255, (4, 40, 40, 3), dtype=np.uint8)
    probs = {k: TaskModel.load(out / f"epoch_{k}", "mask").predict_proba(crops) for k in (1, 2, 3)}
    assert np.array_equal(TaskModel.load(out, "mask").predict_proba(crops), probs[result.best_epoch])
    assert not np.allclose(probs[1], probs[3])  # each epoch's own weights, not the best one three times


def test_save_epochs_off_by_default(tiny_overrides):
    cfg = load_config(None, dict(tiny_overrides, epochs=1), task="mask")
    assert not list(train(cfg, progress=False).output_dir.glob("epoch_*"))


def test_mask_model_learns_the_toy_task(tiny_overrides):
    # the pretrained EfficientNet-Lite0 picks the mask band up in a few epochs
    cfg = load_config(None, dict(tiny_overrides, backbone="tf_efficientnet_lite0", pretrained=True,
                                 input_size=64, crop_size=64, epochs=3, lr=0.003), task="mask")
    result = train(cfg, progress=False)
    assert result.best_f1 >= 0.7, result.metrics


def test_evaluate_age_groups():
    from .conftest import tiny_model

    model = tiny_model("age")
    crops = np.random.default_rng(0).integers(0, 255, (6, 40, 40, 3), dtype=np.uint8)
    probs = model.predict_proba(crops)
    targets = probs.argmax(1)  # a model scored on its own predictions is perfect
    m = evaluate(model, crops, targets)
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0
    groups = np.array(model.spec.age_groups)
    summed = np.stack([probs[:, groups == k].sum(1) for k in range(3)], 1).argmax(1)
    assert m["group_accuracy"] == pytest.approx(np.mean(summed == groups[targets]))
    assert m["selection_f1"] == m["group_macro_f1"]


def test_unreadable_photos_fail_fast_with_a_list(tiny_overrides, toy_root, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(toy_root / "train", root)
    people = sorted((root / "images").iterdir())
    (people[0] / "mask1.jpg").write_bytes(b"broken")
    (people[1] / "normal.png").write_bytes(b"")
    cfg = load_config(None, dict(tiny_overrides, data_dir=str(root)), task="mask")
    with pytest.raises(DatasetError, match="2 photo\\(s\\) could not be read") as info:
        train(cfg, progress=False)
    assert "mask1.jpg" in str(info.value) and "normal.png" in str(info.value)
    result = train(load_config(None, dict(tiny_overrides, data_dir=str(root), skip_bad_images=True), task="mask"),
                   progress=False)
    n_all = len(load_train_samples(root))
    assert result.metrics["n_skipped"] == 2
    assert result.metrics["n_train"] + result.metrics["n_val"] == n_all - 2


def test_device_choice(tiny_overrides):
    import torch

    from maskage.training.distributed import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA GPU"):
            train(load_config(None, dict(tiny_overrides, device="cuda"), task="mask"), progress=False)


def test_framed_crops_train_and_the_model_describes_them(tiny_overrides):
    from maskage.detect.faces import CropSettings

    result = train(load_config(None, dict(tiny_overrides, frame=0.8, frame_shift=0.1), task="gender"), progress=False)
    spec = TaskModel.load(result.output_dir, "gender").spec
    assert spec.crop_settings == CropSettings(crop_size=spec.crop_settings.crop_size, margin=0.2, frame=0.8,
                                              frame_shift=0.1)


def test_shifted_crops_train_and_the_model_crops_so_when_it_predicts(tiny_overrides):
    from maskage.detect.faces import CropSettings

    import torch

    from maskage import Pipeline
    from maskage.apps.demo import sample_photo
    from maskage.detect.faces import DetectorSettings, crop_face
    from maskage.images import load_image
    from maskage.labels import AgeBins
    from maskage.models.torch_model import make_spec

    from .conftest import tiny_model

    result = train(load_config(None, dict(tiny_overrides, crop_shift=0.15), task="mask"), progress=False)
    model = TaskModel.load(result.output_dir, "mask")
    assert model.spec.crop_settings == CropSettings(crop_size=model.spec.crop_settings.crop_size, margin=0.2,
                                                    shift=0.15)
    # a model that says so is given shifted crops when it predicts (an untrained one: its outputs follow its input)
    torch.manual_seed(0)
    shifted = TaskModel(make_spec("mask", "test_efficientnet", 32, CropSettings(crop_size=40, shift=0.3),
                                  DetectorSettings(min_face_size=20), AgeBins())).eval()
    photo = sample_photo()  # a real face, found by the detector
    pred = Pipeline(shifted, tiny_model("gender", 2), tiny_model("age", 3)).predict([str(photo)])[0]
    image = load_image(photo)
    want = shifted.predict_proba(crop_face(image, pred.face_box, shifted.spec.crop_settings)[None])[0]
    centred = shifted.predict_proba(crop_face(image, pred.face_box, CropSettings(crop_size=40))[None])[0]
    assert pred.face_box is not None and list(pred.mask_probs.values()) == pytest.approx(want.tolist(), abs=1e-5)
    assert not np.allclose(want, centred, atol=1e-5)  # the shift changed what the model saw


def test_portrait_yunet_cuts_the_training_crops_and_the_model_says_so(tiny_overrides, tmp_path, monkeypatch):
    import maskage.detect.faces as faces
    from maskage.detect.cache import CropCache

    calls = []
    real = faces._yunet_detect
    monkeypatch.setattr(faces, "_yunet_detect", lambda *a, **k: calls.append(a[0].shape) or real(*a, **k))
    cfg = load_config(None, dict(tiny_overrides, portrait="yunet", cache_dir=str(tmp_path / "cache")), task="gender")
    result = train(cfg, progress=False)
    entries = list((tmp_path / "cache" / "crops").glob("*/??/*.npz"))
    assert len(calls) == len(entries) > 0  # every crop of the run was cut around a YuNet box, each photo once
    spec = TaskModel.load(result.output_dir, "gender").spec
    assert faces.DetectorSettings.from_dict(spec.detector).portrait == "yunet"
    # the crops live in YuNet's own part of the cache, apart from MTCNN's
    assert [d.name for d in (tmp_path / "cache" / "crops").iterdir()] == [
        CropCache(tmp_path / "cache", spec.crop_settings, faces.DetectorSettings.from_dict(spec.detector)).dir.name]


def test_same_seed_same_model_with_fresh_or_cached_crops(tiny_overrides, tmp_path):
    import torch

    models = []
    for name in ("fresh", "cached"):  # the first run detects faces, the second reads the crop cache
        cfg = load_config(None, dict(tiny_overrides, cache_dir=str(tmp_path / "cache"),
                                     output_dir=str(tmp_path / name)), task="mask")
        train(cfg, progress=False)
        models.append(torch.load(tmp_path / name / "weights.pt", weights_only=True))
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[0])


def test_samples_per_epoch_and_real_mask_sources(tiny_overrides, toy_root, tmp_path):
    from PIL import Image

    from maskage.training.data import source_samples

    folder = tmp_path / "real" / "with_mask"
    folder.mkdir(parents=True)
    for i in range(30):
        Image.new("RGB", (48, 48), (i * 8, 90, 120)).save(folder / f"person{i}_0001_0123abcd.jpg")
    sources = [f"{folder}=wear"]
    cfg = load_config(None, dict(tiny_overrides, samples_per_epoch=16, mask_sources=sources, source_holdout=0.3),
                      task="mask")
    result = train(cfg, progress=False)
    n_toy = len(load_train_samples(toy_root / "train"))
    n_real = len(source_samples(sources, "train", 0.3))
    assert 0 < n_real < 30  # the held-out share stays out of training and validation
    assert result.metrics["n_train"] + result.metrics["n_val"] == n_toy + n_real
    val_rows = list(csv.DictReader((result.output_dir / "val_predictions.csv").open()))
    held = {s.path for s in source_samples(sources, "holdout", 0.3)}
    assert not held & {r["path"] for r in val_rows}
    # one epoch saw samples_per_epoch photos, not the whole training set
    assert result.metrics["n_seen_per_epoch"] == 16


def test_epoch_sampler_draws_and_weights():
    import torch

    from maskage.training.train import epoch_sampler

    targets = np.array([0] * 90 + [1] * 10)
    sources = np.array([False] * 95 + [True] * 5)
    g = torch.Generator().manual_seed(0)
    plain = list(epoch_sampler(targets, sources, 2, load_config(None, {"samples_per_epoch": 30}), g))
    assert len(plain) == len(set(plain)) == 30  # without replacement
    balanced = list(epoch_sampler(targets, np.zeros(100, bool), 2,
                                  load_config(None, {"weighted_sampler": True, "samples_per_epoch": 4000}), g))
    assert 0.45 < np.mean(targets[balanced]) < 0.55  # the 10% class drawn half the time
    heavy = list(epoch_sampler(targets, sources, 2, load_config(None, {"source_weight": 100.0}), g))
    assert len(heavy) == 100 and np.mean(sources[heavy]) > 0.7  # 5 source photos x 100 vs 95 others


def _weights(out):
    import torch

    return torch.load(out / "weights.pt", weights_only=True)


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_uninterrupted_result(tiny_overrides, tmp_path):
    import signal
    import subprocess
    import sys

    import torch

    settings = dict(tiny_overrides, epochs=4, lr=0.01)
    straight = train(load_config(None, dict(settings, output_dir=str(tmp_path / "straight")), task="age"),
                     progress=False)
    # the same run as a process, SIGKILLed (no clean-up) right after its first checkpoint is on disk: the process
    # kills itself from inside the checkpoint writer, so no polling race decides when
    out = tmp_path / "killed"
    argv = ["train", "age", "", *[f"{k}={v}" for k, v in settings.items()], f"output_dir={out}", "--quiet"]
    code = (
        "import os, signal, maskage.training.train as t\n"
        "real = t.write_checkpoint\n"
        "def once(*a, **k):\n    real(*a, **k)\n    os.kill(os.getpid(), signal.SIGKILL)\n"
        "t.write_checkpoint = once\n"
        f"from maskage.apps.cli import main\nmain({argv!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert torch.load(out / "checkpoint.pt", weights_only=True)["epoch"] == 1
    assert not (out / "metrics.json").exists()
    resumed = train(load_config(None, dict(settings, output_dir=str(out), resume=True), task="age"), progress=False)
    assert resumed.best_epoch == straight.best_epoch and resumed.best_f1 == straight.best_f1
    a, b = _weights(straight.output_dir), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in _log_rows(out)] == ["1", "2", "3", "4"]
    assert [r["train_loss"] for r in _log_rows(out)] == [r["train_loss"] for r in _log_rows(straight.output_dir)]


def test_resume_refuses_other_settings_and_finished_runs_stay_finished(tiny_overrides):
    cfg = load_config(None, dict(tiny_overrides, epochs=2), task="gender")
    first = train(cfg, progress=False)
    again = train(load_config(None, dict(tiny_overrides, epochs=2, resume=True), task="gender"), progress=False)
    assert again.best_f1 == first.best_f1 and len(_log_rows(first.output_dir)) == 2  # nothing left to train
    with pytest.raises(ValueError, match="other settings.*lr: 0.001 -> 0.5"):
        train(load_config(None, dict(tiny_overrides, epochs=2, lr=0.5, resume=True), task="gender"), progress=False)


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu_train_a_working_model(tiny_overrides, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "ddp"
    settings = dict(tiny_overrides, backbone="tf_efficientnet_lite0", pretrained=True, input_size=64, crop_size=64,
                    epochs=5, lr=0.003, output_dir=str(out), device="cpu")
    args = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
            "-m", "maskage", "train", "mask", "", *[f"{k}={v}" for k, v in settings.items()], "--quiet"]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["n_seen_per_epoch"] <= metrics["n_train"] // 2  # each process trained on its half
    assert metrics["macro_f1"] >= 0.7, metrics  # the toy mask task is learnt (one process needs 3 epochs: half the steps each)
    model = TaskModel.load(out, "mask")
    assert len(_log_rows(out)) == 5 and model.task == "mask"


def test_init_from_starts_from_a_saved_model(tiny_overrides, tmp_path):
    import torch

    from maskage.models.torch_model import ModelFileError

    first = train(load_config(None, dict(tiny_overrides, epochs=1), task="gender"), progress=False).output_dir
    # lr=0: training moves no parameter, so the new run's parameters are the saved model's (buffers such as
    # batch-norm statistics still move)
    cfg = load_config(None, dict(tiny_overrides, epochs=1, lr=0.0, init_from=str(first),
                                 output_dir=str(tmp_path / "second")), task="gender")
    second = train(cfg, progress=False).output_dir
    a, b = TaskModel.load(first), TaskModel.load(second)
    for (name, pa), (_, pb) in zip(a.net.named_parameters(), b.net.named_parameters()):
        assert torch.equal(pa, pb), name
    fresh = train(load_config(None, dict(tiny_overrides, epochs=1, lr=0.0, output_dir=str(tmp_path / "x")),
                              task="gender"), progress=False).output_dir
    assert not all(torch.equal(pa, pb) for pa, pb in zip(a.net.parameters(), TaskModel.load(fresh).net.parameters()))
    # another input size takes the same weights (global pooling): trained further at 48 px from the 32 px model
    larger = train(load_config(None, dict(tiny_overrides, epochs=1, lr=0.0, input_size=48, crop_size=56,
                                          init_from=str(first), output_dir=str(tmp_path / "48")), task="gender"),
                   progress=False).output_dir
    c = TaskModel.load(larger)
    assert c.spec.input_size == 48
    assert all(torch.equal(pa, pc) for pa, pc in zip(a.net.parameters(), c.net.parameters()))
    with pytest.raises(ValueError, match="init_from: .* has backbone 'test_efficientnet', this run 'test_resnet'"):
        train(load_config(None, dict(tiny_overrides, backbone="test_resnet", init_from=str(first)), task="gender"),
              progress=False)
    with pytest.raises(ModelFileError, match="age"):
        train(load_config(None, dict(tiny_overrides, init_from=str(first)), task="age"), progress=False)


@pytest.mark.slow
def test_kfold_trains_every_fold_with_out_of_fold_predictions_for_every_person(tiny_overrides, tmp_path, capsys):
    from maskage.apps.cli import main
    from maskage.models.ensemble import TaskEnsemble
    from maskage.pipeline.core import Pipeline
    from maskage.training.results import score_probs

    from .conftest import tiny_model

    cfg = load_config(None, dict(tiny_overrides, folds=3), task="age")
    result = train(cfg, progress=False)
    out = result.output_dir
    oof = list(csv.DictReader((out / "oof_predictions.csv").open()))
    # every training person's correctly-masked photos exactly once, each predicted by the fold that did not train on it
    people = {s.person for s in load_train_samples(cfg.data_dir)}
    assert {r["person"] for r in oof} == people
    assert len(oof) == 5 * len(people) and len({r["path"] for r in oof}) == len(oof)
    for k in range(3):
        fold_cfg = load_config(out / f"fold{k}" / "config.yaml")
        assert (fold_cfg.fold, fold_cfg.n_folds, fold_cfg.folds) == (k, 3, 0)
        trained_on = {p for p, f in person_folds(load_train_samples(cfg.data_dir), 3, cfg.seed, 60).items() if f != k}
        assert {r["person"] for r in oof if r["fold"] == str(k)}.isdisjoint(trained_on)
    # the reported out-of-fold score is the score of those predictions
    metrics = json.loads((out / "metrics.json").read_text())
    probs = np.array([[float(r[f"p{i}"]) for i in range(11)] for r in oof])
    want = score_probs(probs, np.array([int(r["target"]) for r in oof]), TaskModel.load(out / "fold0").spec)
    assert metrics["oof"]["selection_f1"] == pytest.approx(want["selection_f1"], abs=1e-4)
    assert result.best_f1 == metrics["oof"]["selection_f1"] and len(metrics["per_fold"]) == 3
    # the fold models load as one ensemble, from the API and the CLI
    mask, gender = (str(tiny_model(t, s).save(tmp_path / t)) for t, s in (("mask", 1), ("gender", 2)))
    pipe = Pipeline.from_runs(mask, gender, out)
    assert isinstance(pipe.models["age"], TaskEnsemble) and len(pipe.models["age"].members) == 3
    assert main(["pipeline", mask, gender, str(out), "--out", str(tmp_path / "p")]) == 0
    assert len(json.loads((tmp_path / "p" / "pipeline.json").read_text())["models"]["age"]["members"]) == 3
    # resume keeps finished folds
    stamp = (out / "fold1" / "weights.pt").stat().st_mtime_ns
    train(load_config(None, dict(tiny_overrides, folds=3, resume=True), task="age"), progress=False)
    assert (out / "fold1" / "weights.pt").stat().st_mtime_ns == stamp
    capsys.readouterr()
    (tmp_path / "kfold.yaml").write_text("folds: 2\n")
    assert main(["train", "gender", str(tmp_path / "kfold.yaml"), "--quiet",  # overrides may follow options
                 *[f"{k}={v}" for k, v in tiny_overrides.items()], f"output_dir={tmp_path / 'g'}"]) == 0
    assert "2 fold models: out-of-fold F1" in capsys.readouterr().out
    with pytest.raises(ValueError, match="folds must be 0"):
        load_config(None, {"folds": 1})


@pytest.mark.slow
def test_pseudo_labels_train_but_never_validate(tiny_overrides, toy_root, tmp_path, capsys):
    from maskage.apps.cli import main
    from maskage.pipeline.core import Pipeline
    from maskage.training.pseudo import pseudo_label, pseudo_samples

    from .conftest import tiny_model

    pipe = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3))
    unlabelled = sorted(str(p) for p in (toy_root / "eval" / "images").glob("*.jpg"))
    csv_path = pseudo_label(pipe, unlabelled, tmp_path / "pseudo.csv")
    rows = list(csv.DictReader(csv_path.open()))
    assert [r["path"] for r in rows] == unlabelled
    preds = pipe.predict(unlabelled)
    assert [r["mask"] for r in rows] == [p.mask for p in preds]
    assert [float(r["p_gender"]) for r in rows] == pytest.approx([max(p.gender_probs.values()) for p in preds], abs=1e-4)
    # the CLI writes the same file
    pipe.save(tmp_path / "pipe")
    assert main(["pseudo", str(toy_root / "eval" / "images"), "--pipeline", str(tmp_path / "pipe"),
                 "--out", str(tmp_path / "cli.csv")]) == 0
    cli_rows = list(csv.DictReader((tmp_path / "cli.csv").open()))
    assert [(r["path"], r["mask"], r["gender"], r["age_bin"]) for r in cli_rows] == \
        [(r["path"], r["mask"], r["gender"], r["age_bin"]) for r in rows]
    # a threshold keeps only the confident photos
    confs = [float(r["p_mask"]) for r in rows]
    cut = sorted(confs)[len(confs) // 2]
    assert len(pseudo_samples(csv_path, "mask", cut)) == sum(c >= cut for c in confs)
    assert pseudo_samples(csv_path, "mask", 1.01) == []
    # an age pseudo-label is its predicted fine bin; gender and age keep correctly-masked photos only by default
    from maskage.labels import AgeBins

    bins, by_path = AgeBins(), {r["path"]: r for r in rows}
    ages = pseudo_samples(csv_path, "age", 0.0, "all")
    assert len(ages) == len(rows)
    assert all(bins.bin_of(s.age) == int(by_path[s.path]["age_bin"]) for s in ages)
    assert len(pseudo_samples(csv_path, "age", 0.0)) == sum(r["mask"] == "wear" for r in rows)
    # training adds them to the training photos only
    base = train(load_config(None, tiny_overrides, task="mask"), progress=False).metrics
    cfg = load_config(None, dict(tiny_overrides, output_dir=str(tmp_path / "student"), pseudo_labels=str(csv_path),
                                 pseudo_threshold=0.0), task="mask")
    student = train(cfg, progress=False).metrics
    assert student["n_pseudo"] == len(rows) and base["n_pseudo"] == 0
    assert student["n_train"] == base["n_train"] + len(rows) and student["n_val"] == base["n_val"]
    val_paths = {r["path"] for r in csv.DictReader((tmp_path / "student" / "val_predictions.csv").open())}
    assert val_paths.isdisjoint(unlabelled)
    # with k-fold training too: out-of-fold predictions hold no pseudo-labelled photo
    kf = train(load_config(None, dict(tiny_overrides, output_dir=str(tmp_path / "kf"), pseudo_labels=str(csv_path),
                                      pseudo_threshold=0.0, folds=2), task="mask"), progress=False)
    oof_paths = {r["path"] for r in csv.DictReader((kf.output_dir / "oof_predictions.csv").open())}
    assert oof_paths.isdisjoint(unlabelled) and len(oof_paths) == base["n_train"] + base["n_val"]


def test_races_trains_and_validates_on_those_people_only(tiny_overrides, toy_root, tmp_path):
    data = tmp_path / "mixed"
    data.mkdir()
    (data / "images").symlink_to(toy_root / "train" / "images")
    rows = list(csv.DictReader((toy_root / "train" / "train.csv").open()))
    for k, r in enumerate(rows):
        r["race"] = "White" if k % 3 == 0 else "Asian"
    with (data / "train.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    white = {r["id"] for r in rows if r["race"] == "White"}
    cfg = load_config(None, dict(tiny_overrides, data_dir=str(data), races="white", n_folds=2), task="mask")
    assert cfg.races == ["white"]
    metrics = train(cfg, progress=False).metrics
    assert metrics["n_train"] + metrics["n_val"] == 7 * len(white)
    val_people = {r["person"] for r in csv.DictReader((cfg.resolved_output_dir() / "val_predictions.csv").open())}
    assert val_people and val_people <= white
    with pytest.raises(DatasetError, match="no one in train.csv is black"):
        train(load_config(None, dict(tiny_overrides, data_dir=str(data), races=["Black", "White"])), progress=False)


def test_balance_cells_draw_every_gender_age_cell_equally():
    import torch

    from maskage.training.data import Sample
    from maskage.training.train import balance_cells, epoch_sampler

    samples = ([Sample("a", "p", 0, 0, 25, dataset="utkface")] * 80 + [Sample("b", "q", 0, 1, 70, dataset="utkface")] * 5
               + [Sample("c", "r", 0, 1, 25, dataset="aaf")] * 10 + [Sample("d", "s", 0, 1, -1, dataset="lfw")] * 5)
    assert balance_cells(samples, "none", 60) is None
    cells = balance_cells(samples, "cell", 60)
    assert len(set(cells)) == 4  # male <30, female 60+, female <30 (utkface and aaf together), female age unknown
    by_source = balance_cells(samples, "source_cell", 60)
    assert len(set(by_source)) == 4 and by_source[85] != by_source[0]
    by_source, targets = np.tile(by_source, 40), np.tile([s.gender for s in samples], 40)  # 4,000 draws an epoch
    g = torch.Generator().manual_seed(0)
    drawn = list(epoch_sampler(targets, np.zeros(len(targets), bool), 2, load_config(None, {}), g, by_source))
    share = np.bincount(by_source[drawn], minlength=4) / len(drawn)
    assert np.allclose(share, 0.25, atol=0.03)


def test_faceres_backbone_trains_with_its_batchnorm_frozen(tiny_overrides, tmp_path):
    import torch

    from maskage.models import faceres

    faceres.fetch()
    over = {**tiny_overrides, "backbone": faceres.BACKBONE, "pretrained": True, "input_size": 64, "crop_size": 64,
            "freeze_stages": 3, "lr": 3e-5, "balance": "cell", "photo_aug": 0.5, "output_dir": str(tmp_path / "g")}
    result = train(load_config(None, {**over, "task": "gender"}), progress=False)
    model = TaskModel.load(result.output_dir, "gender")
    assert model.spec.backbone == faceres.BACKBONE and model.spec.std == list(faceres.STD)
    # the folded BatchNorms kept their affine maps: training mode did not let batch statistics in
    bn = model.net.blocks[4][1].bn2
    assert torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    model.train()
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # the frozen stem is FaceRes's own, the trained last stage moved away from it
    state = faceres.load_state()
    assert torch.equal(model.net.conv_stem.weight, state["conv_stem.weight"])
    assert not torch.equal(model.net.blocks[4][1].conv_pw.weight, state["blocks.4.1.conv_pw.weight"])


def test_occlude_pastes_over_bare_faces_only_and_is_a_mask_setting(tiny_overrides, monkeypatch):
    import maskage.training.data as data_mod
    from maskage.errors import UsageError

    calls = []
    real = data_mod.paste_occluder

    def spy(crop, other, rng):
        calls.append(1)
        return real(crop, other, rng)

    monkeypatch.setattr(data_mod, "paste_occluder", spy)
    seen = {}
    real_init = data_mod.CropDataset.__init__

    def keep(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        seen["targets"], seen["rows"], seen["indices"] = self.targets, self.occlude_rows, self.indices

    monkeypatch.setattr(data_mod.CropDataset, "__init__", keep)
    result = train(load_config(None, dict(tiny_overrides, occlude=0.5), task="mask"), progress=False)
    assert calls and result.best_epoch >= 1
    # the rows it may occlude are exactly the training photos labelled not_wear
    not_wear = set(seen["indices"][seen["targets"] == 2].tolist())
    assert set(seen["rows"].tolist()) == not_wear and not_wear
    with pytest.raises(UsageError, match="occlude"):
        load_config(None, dict(tiny_overrides, occlude=0.5), task="gender")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["mask", "gender", "age"])
def test_competition_recipes_train_from_the_shipped_models_on_the_competition_layout(task, toy_root, tmp_path):
    """The recipes a competition user runs, as the README says, on the generated competition layout (one short
    epoch): each starts from the shipped model of its task and saves a model of the same network."""
    from maskage.apps.cli import main
    from maskage.models.spec import PRETRAINED_DIR

    recipe = Path(__file__).resolve().parents[1] / "experiments" / "competition" / f"{task}.yaml"
    out = tmp_path / task
    assert main(["train", task, str(recipe), f"data_dir={toy_root / 'train'}", f"output_dir={out}",
                 "epochs=1", "samples_per_epoch=16", "batch_size=8", "--quiet"]) == 0
    trained, shipped = TaskModel.load(out, task), TaskModel.load(PRETRAINED_DIR / task, task)
    assert (trained.spec.backbone, trained.spec.input_size, trained.spec.labels) == \
        (shipped.spec.backbone, shipped.spec.input_size, shipped.spec.labels)
    # it started from the shipped weights: the frozen stem is theirs, not ImageNet's or a random draw
    a, b = trained.net.state_dict(), shipped.net.state_dict()
    first = next(iter(a))
    assert torch.allclose(a[first].float(), b[first].float(), atol=1e-3)
