import json

import numpy as np
import pytest

from maskage import Pipeline
from maskage.apps.cli import main
from maskage.combine import age_group_probs, hard_vote, soft_vote, vote
from maskage.models.ensemble import TaskEnsemble
from maskage.detect.faces import CropSettings, DetectorSettings, crop_face
from maskage.images import load_image
from maskage.labels import AgeBins
from maskage.models.torch_model import ModelFileError, TaskModel, make_spec

from .conftest import tiny_model

P1 = np.array([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
P2 = np.array([[0.1, 0.8, 0.1], [0.3, 0.4, 0.3]])
P3 = np.array([[0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])


def test_soft_vote_is_the_weighted_mean():
    np.testing.assert_allclose(soft_vote([P1, P2]), (P1 + P2) / 2)
    np.testing.assert_allclose(soft_vote([P1, P2, P3], [1, 2, 1]), (P1 + 2 * P2 + P3) / 4)
    np.testing.assert_allclose(soft_vote([P1]), P1)
    assert vote([P1, P2], voting="soft").tolist() == soft_vote([P1, P2]).tolist()


def test_hard_vote_counts_labels_weighs_them_and_breaks_ties_by_probability():
    shares = hard_vote([P1, P2, P3])
    # row 0: votes 0, 1, 1 -> label 1 with 2/3; row 1: votes 2, 1, 2 -> label 2 with 2/3
    assert shares.argmax(1).tolist() == [1, 2]
    np.testing.assert_allclose(shares, [[1 / 3, 2 / 3, 0], [0, 1 / 3, 2 / 3]], atol=1e-5)
    np.testing.assert_allclose(shares.sum(1), 1)
    # a weight can outvote the majority, which soft voting on the same weights would not follow here
    assert hard_vote([P1, P2, P3], [3, 1, 1]).argmax(1).tolist() == [0, 2]
    # a tie (one vote each) goes to the label with the higher mean probability: row 0 label 0 (0.35 vs 0.55 -> 1)
    tie = hard_vote([P1, P2])
    assert tie.argmax(1).tolist() == [1, 2]
    assert tie[0, 0] == pytest.approx(0.5, abs=1e-5) and tie[0, 1] == pytest.approx(0.5, abs=1e-5)


@pytest.mark.parametrize("bad", [[1], [1, -1], [0, 0], [1, float("nan")]])
def test_voting_refuses_bad_weights(bad):
    with pytest.raises(ValueError, match="weights"):
        soft_vote([P1, P2], bad)
    with pytest.raises(ValueError, match="weights"):
        hard_vote([P1, P2], bad)


def test_voting_refuses_nothing_or_mismatched_shapes_and_unknown_methods():
    with pytest.raises(ValueError, match="at least one"):
        soft_vote([])
    with pytest.raises(ValueError, match="one shape"):
        soft_vote([P1, P1[:1]])
    with pytest.raises(ValueError, match="soft, hard"):
        vote([P1], voting="median")


def _age_model(seed: int, input_size: int = 32, threshold: int = 60, backbone: str = "test_efficientnet") -> TaskModel:
    import torch

    torch.manual_seed(seed)
    spec = make_spec("age", backbone, input_size, CropSettings(crop_size=40), DetectorSettings(min_face_size=20),
                     AgeBins(threshold=threshold))
    return TaskModel(spec).eval()


def test_task_ensemble_votes_its_members_and_refuses_mixed_outputs():
    a, b = _age_model(3), _age_model(4, input_size=40)  # members may differ in input size
    crops = np.random.default_rng(0).integers(0, 255, (5, 40, 40, 3), dtype=np.uint8)
    ens = TaskEnsemble([a, b], weights=[1, 3])
    assert ens.task == "age" and ens.spec is a.spec
    np.testing.assert_allclose(ens.predict_proba(crops), (a.predict_proba(crops) + 3 * b.predict_proba(crops)) / 4,
                               atol=1e-6)
    # across backbones too
    c = _age_model(6, backbone="test_resnet")
    both = TaskEnsemble([a, c], voting="hard")
    np.testing.assert_allclose(both.predict_proba(crops), hard_vote([a.predict_proba(crops), c.predict_proba(crops)]),
                               atol=1e-6)
    with pytest.raises(ModelFileError, match="age_threshold"):
        TaskEnsemble([a, _age_model(5, threshold=58)])
    with pytest.raises(ModelFileError, match="task"):
        TaskEnsemble([tiny_model("gender", 1), tiny_model("mask", 1)])
    with pytest.raises(ValueError, match="weights"):
        TaskEnsemble([a, b], weights=[1])
    with pytest.raises(ValueError, match="voting"):
        TaskEnsemble([a, b], voting="average")


@pytest.fixture(scope="module")
def photos(toy_root):
    return sorted(str(p) for p in (toy_root / "eval" / "images").glob("*.jpg"))[:6]


def test_pipeline_with_an_age_ensemble_predicts_saves_and_loads(photos, tmp_path):
    a, b = _age_model(3), _age_model(4, input_size=40)
    pipe = Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), TaskEnsemble([a, b], [2, 1]))
    preds = pipe.predict(photos)
    for p, path in zip(preds, photos):
        crop = crop_face(load_image(path), p.face_box, a.spec.crop_settings)[None]
        bins = (2 * a.predict_proba(crop) + b.predict_proba(crop)) / 3
        want = age_group_probs(bins, a.spec.age_groups)[0]
        assert list(p.age_probs.values()) == pytest.approx(want.tolist(), abs=1e-6)
    # single-model pipelines keep their layout; an ensemble is stored member by member with its weights
    d = pipe.save(tmp_path / "pipe")
    meta = json.loads((d / "pipeline.json").read_text())
    assert meta["models"]["mask"]["dir"] == "mask"
    assert [m["dir"] for m in meta["models"]["age"]["members"]] == ["age/0", "age/1"]
    assert meta["models"]["age"]["weights"] == [2.0, 1.0] and meta["models"]["age"]["voting"] == "soft"
    loaded = Pipeline.from_pretrained(d, backend="torch")
    assert isinstance(loaded.models["age"], TaskEnsemble) and loaded.models["age"].members[1].spec.input_size == 40
    assert [p.age_probs for p in loaded.predict(photos)] == [p.age_probs for p in preds]
    # ONNX Runtime, from a cached export and from exported files, votes the same way
    auto = Pipeline.from_pretrained(d)
    assert auto.backend == "onnx"
    for pa, pb in zip(auto.predict(photos), preds):
        assert pa.age_probs == pytest.approx(pb.age_probs, abs=1e-5)
    assert main(["export", str(d)]) == 0
    meta = json.loads((d / "pipeline.json").read_text())
    assert all("model.onnx" in m["sha256"] for m in meta["models"]["age"]["members"])
    exported = Pipeline.from_pretrained(d, backend="onnx")
    for pa, pb in zip(exported.predict(photos), preds):
        assert pa.age_probs == pytest.approx(pb.age_probs, abs=1e-5)
    # a changed member file is caught like any other
    with open(d / "age" / "1" / "weights.pt", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelFileError, match="age/1/weights.pt: missing or changed"):
        Pipeline.from_pretrained(d, backend="torch")


def test_cli_pipeline_ensembles_comma_separated_runs(photos, tmp_path, capsys):
    mask = str(tiny_model("mask", 1).save(tmp_path / "mask"))
    gender = str(tiny_model("gender", 2).save(tmp_path / "gender"))
    ages = [str(_age_model(s).save(tmp_path / f"age{s}")) for s in (3, 4, 5)]
    out = tmp_path / "p"
    assert main(["pipeline", mask, gender, ",".join(ages), "--out", str(out),
                 "--weights", "age=1,2,1", "--voting", "age=hard"]) == 0
    meta = json.loads((out / "pipeline.json").read_text())["models"]["age"]
    assert len(meta["members"]) == 3 and meta["weights"] == [1.0, 2.0, 1.0] and meta["voting"] == "hard"
    api = Pipeline.from_runs(mask, gender, ages, weights={"age": [1, 2, 1]}, voting={"age": "hard"})
    cli = Pipeline.from_pretrained(out, backend="torch")
    for pc, pa in zip(cli.predict(photos), api.predict(photos)):
        assert pc.class_id == pa.class_id and pc.age_probs == pytest.approx(pa.age_probs, abs=1e-6)
        # hard voting: group shares are multiples of a quarter of the votes (weights 1, 2, 1)
        assert [round(v * 4, 3) for v in pc.age_probs.values()] == [round(v * 4) for v in pc.age_probs.values()]
    assert main(["pipeline", mask, gender, ",".join(ages), "--out", str(tmp_path / "q"), "--weights", "age=1,2"]) == 2
    assert "weights" in capsys.readouterr().err
    assert main(["pipeline", mask, gender, ages[0], "--out", str(tmp_path / "r"), "--voting", "hair=soft"]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_pipeline_ensemble_votes_at_the_18_class_level(photos, tmp_path):
    from maskage.combine import combine_probs
    from maskage.pipeline.ensemble import PipelineEnsemble

    pipes = [Pipeline(tiny_model("mask", s), tiny_model("gender", s + 1), tiny_model("age", s + 2)) for s in (1, 4, 7)]
    runs = [p.predict(photos) for p in pipes]

    def joint(pred):
        return combine_probs(np.array([list(pred.mask_probs.values())]), np.array([list(pred.gender_probs.values())]),
                             np.array([list(pred.age_probs.values())]))[0]

    soft = PipelineEnsemble(pipes, weights=[1, 1, 2]).predict(photos)
    hard = PipelineEnsemble(pipes, voting="hard").predict(photos)
    for i, (s, h) in enumerate(zip(soft, hard)):
        want = (joint(runs[0][i]) + joint(runs[1][i]) + 2 * joint(runs[2][i])) / 4
        assert s.class_id == int(want.argmax())
        assert list(s.mask_probs.values()) == pytest.approx(want.reshape(3, 6).sum(1).tolist(), abs=1e-6)
        assert sum(s.age_probs.values()) == pytest.approx(1, abs=1e-6)
        ids = [r[i].class_id for r in runs]
        if len(set(ids)) < 3:  # a majority exists
            assert h.class_id == max(set(ids), key=ids.count)
        assert s.face_box == runs[0][i].face_box
    # the CLI's repeated --pipeline gives the same ensemble
    from maskage.apps.cli import main

    dirs = [str(p.save(tmp_path / f"p{k}")) for k, p in enumerate(pipes)]
    out = tmp_path / "preds.csv"
    assert main(["predict", *photos, "--out", str(out), "--backend", "torch", "--weights", "1,1,2",
                 *[x for d in dirs for x in ("--pipeline", d)]]) == 0
    import csv

    rows = list(csv.DictReader(out.open()))
    assert [int(r["class"]) for r in rows] == [p.class_id for p in soft]
    with pytest.raises(ValueError, match="weights"):
        PipelineEnsemble(pipes, weights=[1, 2])
