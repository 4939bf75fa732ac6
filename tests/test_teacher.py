"""The teacher's soft labels (knowledge distillation) and training with them."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskage.training import teacher
from maskage.training.config import load_config
from maskage.errors import UsageError
from maskage.labels import AgeBins
from maskage.models.torch_model import TaskModel
from maskage.training.train import train


def test_age_bin_matrix_places_every_age_as_bin_of():
    bins = AgeBins()
    m = teacher.age_bin_matrix(bins, 100)
    assert m.shape == (100, len(bins)) and np.all(m.sum(1) == 1)
    assert [int(m[a].argmax()) for a in (0, 17, 21, 29, 30, 59, 60, 99)] == [bins.bin_of(a) for a in (0, 17, 21, 29, 30, 59, 60, 99)]


def test_shift_ages_moves_mass_and_keeps_it_at_the_ends():
    dist = np.zeros((2, 10), np.float32)
    dist[0, 3], dist[1, 8], dist[1, 1] = 1.0, 0.5, 0.5
    older = teacher.shift_ages(dist, 2)
    assert older[0, 5] == 1.0 and older[1, 9] == 0.5 and older[1, 3] == 0.5
    younger = teacher.shift_ages(dist, -3)
    assert younger[0, 0] == 1.0 and younger[1, 5] == 0.5 and younger[1, 0] == 0.5
    assert np.allclose(older.sum(1), 1) and np.allclose(younger.sum(1), 1)


def test_age_shift_is_the_median_gap_between_true_and_expected_ages():
    dist = np.zeros((3, 100), np.float32)
    dist[[0, 1, 2], [20, 40, 60]] = 1.0  # expected ages 20, 40, 60
    assert teacher.age_shift(dist, np.array([25, 44, 70])) == 5
    assert teacher.age_shift(dist[:0], np.array([])) == 0


def test_soft_targets_for_gender_and_age():
    p_male = np.array([0.9, 0.2], np.float32)
    gender = teacher.soft_targets("gender", ["male", "female"], AgeBins(), p_male, np.zeros((2, 100)))
    assert np.allclose(gender, [[0.9, 0.1], [0.2, 0.8]])
    dist = np.zeros((2, 100), np.float32)
    dist[0, 28], dist[1, 57] = 1.0, 1.0
    bins = AgeBins()
    age = teacher.soft_targets("age", [], bins, p_male, dist, shift=3)  # 28 -> 31, 57 -> 60
    assert age.argmax(1).tolist() == [bins.bin_of(31), bins.bin_of(60)]
    with pytest.raises(ValueError):
        teacher.soft_targets("mask", [], bins, p_male, dist)


def test_gaussian_ages_centre_on_the_true_age_with_the_given_spread():
    dist = teacher.gaussian_ages(np.array([31, 0]), sigma=3.0)
    assert dist.shape == (2, 100) and np.allclose(dist.sum(1), 1, atol=1e-5)
    ages = np.arange(100)
    assert dist[0].argmax() == 31 and abs(dist[0] @ ages - 31) < 1e-3
    assert abs(np.sqrt(dist[0] @ (ages - 31.0) ** 2) - 3.0) < 0.05
    # summed into bins, a 31-year-old keeps most weight in 30-34 and some on the <30 side of the boundary
    bins = AgeBins()
    b = teacher.soft_targets("age", [], bins, np.zeros(2), dist)[0]
    assert b.argmax() == bins.bin_of(31) and 0.1 < b[bins.bin_of(29)] < b[bins.bin_of(31)]


def test_distill_loss_mixes_true_and_soft_labels_by_row():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, requires_grad=True)
    hard = np.array([2, 0, 1, 3])
    soft = np.random.default_rng(0).dirichlet(np.ones(4), size=4).astype(np.float32)
    rows = torch.tensor([3, 0, 2])
    ce = torch.nn.CrossEntropyLoss()
    only_true = teacher.DistillLoss(ce, hard, soft, 0.0)(logits, rows)
    assert torch.allclose(only_true, F.cross_entropy(logits, torch.tensor([3, 2, 1])))
    only_soft = teacher.DistillLoss(ce, hard, soft, 1.0)(logits, rows)
    expected = -(torch.from_numpy(soft[[3, 0, 2]]) * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(only_soft, expected)
    half = teacher.DistillLoss(ce, hard, soft, 0.5)(logits, rows)
    assert torch.allclose(half, 0.5 * only_true + 0.5 * only_soft)
    half.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_teacher_settings_are_checked(tiny_overrides):
    with pytest.raises(UsageError, match="teacher must be"):
        load_config(None, dict(tiny_overrides, teacher="someone"), task="age")
    with pytest.raises(UsageError, match="gender or age"):
        load_config(None, dict(tiny_overrides, teacher="faceres"), task="mask")
    with pytest.raises(UsageError, match="teacher_age_shift"):
        load_config(None, dict(tiny_overrides, teacher="faceres", teacher_age_shift="older"), task="age")
    with pytest.raises(UsageError, match="teacher_weight"):
        load_config(None, dict(tiny_overrides, teacher="faceres", teacher_weight=1.5), task="age")


@pytest.mark.parametrize("task", ["age", "gender"])
def test_training_with_the_faceres_teacher_labels_once_and_caches(task, tiny_overrides, tmp_path, capsys, monkeypatch):
    from maskage.models import faceres

    faceres.fetch()  # the real FaceRes weights (the project's install step fetches them)
    over = dict(tiny_overrides, teacher="faceres", teacher_input_size=64, teacher_weight=0.7,
                cache_dir=str(tmp_path / "cache"), epochs=1)
    result = train(load_config(None, over, task=task), progress=True)
    out = capsys.readouterr().out
    assert "teacher faceres: weight 0.7" in out and "agrees with" in out
    assert "teacher: FaceRes labels" in out  # the long labelling step says so before it starts
    saved = list((tmp_path / "cache" / "crops").glob("*/teacher/faceres_*.npz"))  # beside the crops it labelled
    assert len(saved) == 1
    with np.load(saved[0]) as z:
        assert z["age"].shape[1] == faceres.AGES and np.allclose(z["age"].sum(1), 1, atol=1e-4)
        assert ((z["p_male"] >= 0) & (z["p_male"] <= 1)).all()
    model = TaskModel.load(result.output_dir, task)
    probs = model.predict_proba(np.full((2, 40, 40, 3), 128, np.uint8))
    assert np.allclose(probs.sum(1), 1, atol=1e-5)

    # a second run reads the cached labels: FaceRes is not run again
    monkeypatch.setattr(faceres, "FaceResHeads", lambda *a, **k: pytest.fail("the teacher ran again"))
    train(load_config(None, dict(over, output_dir=str(tmp_path / "again")), task=task), progress=False)


def test_gaussian_teacher_trains_age_without_faceres(tiny_overrides, tmp_path, capsys, monkeypatch):
    from maskage.models import faceres

    monkeypatch.setattr(faceres, "FaceResHeads", lambda *a, **k: pytest.fail("gaussian needs no network"))
    over = dict(tiny_overrides, teacher="gaussian", teacher_age_sigma=2.0, epochs=1)
    result = train(load_config(None, over, task="age"), progress=True)
    assert "teacher gaussian" in capsys.readouterr().out
    assert TaskModel.load(result.output_dir, "age").spec.task == "age"
    with pytest.raises(UsageError, match="age task"):
        load_config(None, dict(over, teacher="gaussian"), task="gender")


def test_the_teacher_changes_what_is_learnt(tiny_overrides, tmp_path):
    from maskage.models import faceres

    faceres.fetch()
    base = dict(tiny_overrides, cache_dir=str(tmp_path / "cache"), epochs=1)
    plain = train(load_config(None, dict(base, output_dir=str(tmp_path / "plain")), task="age"), progress=False)
    taught = train(load_config(None, dict(base, output_dir=str(tmp_path / "taught"), teacher="faceres",
                                          teacher_input_size=64, teacher_weight=1.0), task="age"), progress=False)
    x = np.random.default_rng(0).integers(0, 255, (4, 40, 40, 3), dtype=np.uint8)
    a = TaskModel.load(plain.output_dir, "age").predict_proba(x)
    b = TaskModel.load(taught.output_dir, "age").predict_proba(x)
    assert not np.allclose(a, b, atol=1e-4)


def test_saved_models_teach_their_averaged_probabilities_once(tmp_path, monkeypatch):
    from .conftest import tiny_model

    from maskage.models.ensemble import TaskEnsemble
    from maskage.models.spec import ModelFileError

    dirs = [str(tiny_model("gender", seed=s).save(tmp_path / f"g{s}")) for s in (0, 1)]
    assert teacher.model_dirs(",".join(dirs)) == dirs and teacher.model_dirs("faceres") == []
    crops = np.random.default_rng(0).integers(0, 255, (5, 40, 40, 3), dtype=np.uint8)
    paths = [f"p{i}.jpg" for i in range(5)]
    probs = teacher.model_outputs(crops, paths, tmp_path / "crops", dirs, "gender", ["male", "female"], progress=False)
    members = [TaskModel.load(d, "gender") for d in dirs]
    expected = np.mean([m.predict_proba(crops) for m in members], axis=0)
    assert probs.shape == (5, 2) and np.allclose(probs, expected, atol=1e-6)
    assert not np.allclose(members[0].predict_proba(crops), members[1].predict_proba(crops), atol=1e-3)

    # cached beside the crops: the models are not run again for the same crops
    monkeypatch.setattr(TaskEnsemble, "predict_proba", lambda *a, **k: pytest.fail("the teacher ran again"))
    again = teacher.model_outputs(crops, paths, tmp_path / "crops", dirs, "gender", ["male", "female"], progress=False)
    assert np.array_equal(again, probs)
    monkeypatch.undo()
    with pytest.raises(ModelFileError, match="labels"):  # another class order would teach the wrong classes
        teacher.model_outputs(crops, paths, tmp_path / "other", dirs, "gender", ["female", "male"], progress=False)
    with pytest.raises(ModelFileError, match="labels"):  # also where the labels are cached already
        teacher.model_outputs(crops, paths, tmp_path / "crops", dirs, "gender", ["female", "male"], progress=False)


def test_training_with_saved_models_as_teacher(tiny_overrides, tmp_path, capsys):
    over = dict(tiny_overrides, epochs=1, output_dir=str(tmp_path / "teacher_run"))
    first = train(load_config(None, over, task="mask"), progress=False)
    student = dict(tiny_overrides, epochs=1, teacher=str(first.output_dir), teacher_weight=0.5,
                   output_dir=str(tmp_path / "student"))
    result = train(load_config(None, student, task="mask"), progress=True)  # a model teacher teaches any task
    out = capsys.readouterr().out
    assert "teacher: 1 model(s) label" in out and f"teacher {first.output_dir}: weight 0.5" in out
    assert TaskModel.load(result.output_dir, "mask").spec.task == "mask"
    with pytest.raises(UsageError, match="no model.json"):
        load_config(None, dict(student, teacher=str(tmp_path / "nowhere")), task="mask")
