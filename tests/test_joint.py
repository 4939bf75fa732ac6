import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskage import Pipeline
from maskage.combine import age_group_probs
from maskage.training.config import load_config
from maskage.models.joint import SharedModel, TaskView, view_probs
from maskage.labels import AgeBins, class_labels, encode
from maskage.training.losses import MultiHeadLoss
from maskage.models.torch_model import TaskModel, head_softmax, make_spec
from maskage.training.train import train


def test_joint_views_are_the_marginals_of_the_18_classes():
    spec = make_spec("joint", "test_efficientnet", 32)
    assert spec.labels == list(class_labels()) and spec.labels[encode(2, 1, 0)] == "not_wear/female/<30"
    p = np.random.default_rng(0).dirichlet(np.ones(18), size=4)
    want = {"mask": np.zeros((4, 3)), "gender": np.zeros((4, 2)), "age": np.zeros((4, 3))}
    for m in range(3):
        for g in range(2):
            for a in range(3):
                c = encode(m, g, a)
                want["mask"][:, m] += p[:, c]
                want["gender"][:, g] += p[:, c]
                want["age"][:, a] += p[:, c]
    for task, w in want.items():
        np.testing.assert_allclose(view_probs(p, spec, task), w)
    # the class a pipeline gives: each task's most likely label
    from maskage.models.joint import class_ids

    ids = class_ids(p, spec)
    assert ids.tolist() == [encode(want["mask"][i].argmax(), want["gender"][i].argmax(), want["age"][i].argmax())
                            for i in range(4)]


def test_multihead_outputs_softmax_per_head_and_its_loss_is_the_sum_of_the_heads():
    spec = make_spec("multihead", "test_efficientnet", 32)
    assert spec.heads == (3, 2, 11) and len(spec.labels) == 16
    logits = torch.randn(5, 16)
    p = head_softmax(logits.numpy(), spec.heads)
    for task, n in (("mask", 3), ("gender", 2), ("age", 11)):
        part = view_probs(p, spec, task)
        assert part.shape == (5, n)
        np.testing.assert_allclose(part.sum(1), 1, atol=1e-6)
    m, g, b = torch.tensor([0, 1, 2, 2, 0]), torch.tensor([1, 0, 1, 0, 0]), torch.tensor([0, 4, 10, 7, 5])
    target = (m * 2 + g) * 11 + b
    ce = torch.nn.CrossEntropyLoss()
    loss = MultiHeadLoss(ce, ce, ce, 11)(logits, target)
    want = F.cross_entropy(logits[:, :3], m) + F.cross_entropy(logits[:, 3:5], g) + F.cross_entropy(logits[:, 5:], b)
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("task", ["joint", "multihead"])
def test_baseline_trains_and_serves_all_three_slots_with_one_forward_pass(task, tiny_overrides, toy_root, tmp_path,
                                                                        monkeypatch):
    result = train(load_config(None, tiny_overrides, task=task), progress=False)
    metrics = result.metrics
    assert {"macro_f1", "mask_f1", "gender_f1", "age_f1"} <= set(metrics)
    assert metrics["selection_f1"] == metrics["macro_f1"]
    # every photo of every training person: 7 each
    assert metrics["n_train"] + metrics["n_val"] == 7 * 12
    run = result.output_dir
    pipe = Pipeline.from_runs(run, run, run)
    assert all(isinstance(m, TaskView) for m in pipe.models.values())
    model = pipe.models["mask"].model
    calls = []
    real = model.predict_inputs
    monkeypatch.setattr(model, "predict_inputs", lambda x, *a, **k: calls.append(1) or real(x, *a, **k))
    photos = sorted(str(p) for p in (toy_root / "eval" / "images").glob("*.jpg"))[:5]
    preds = pipe.predict(photos)
    assert len(calls) == 1  # one pass of the backbone for the three tasks
    monkeypatch.undo()
    # the slots' probabilities are views of the model's own output
    from maskage.detect.faces import crop_face
    from maskage.images import load_image

    for p, path in zip(preds, photos):
        out = model.predict_proba(crop_face(load_image(path), p.face_box, model.spec.crop_settings)[None])
        age = view_probs(out, model.spec, "age")
        if task == "multihead":
            age = age_group_probs(age, model.spec.age_groups)
        assert list(p.mask_probs.values()) == pytest.approx(view_probs(out, model.spec, "mask")[0].tolist(), abs=1e-6)
        assert list(p.age_probs.values()) == pytest.approx(age[0].tolist(), abs=1e-6)
    # saved once, loaded as views again, same outputs; ONNX Runtime runs it too
    d = pipe.save(tmp_path / "pipe")
    meta = json.loads((d / "pipeline.json").read_text())
    assert {meta["models"][t]["dir"] for t in ("mask", "gender", "age")} == {task}
    loaded = Pipeline.from_pretrained(d, backend="torch")
    assert [p.class_id for p in loaded.predict(photos)] == [p.class_id for p in preds]
    assert [p.age_probs for p in loaded.predict(photos)] == [p.age_probs for p in preds]
    auto = Pipeline.from_pretrained(d)
    assert auto.backend == "onnx"
    for pa, pb in zip(auto.predict(photos), preds):
        assert pa.gender_probs == pytest.approx(pb.gender_probs, abs=1e-5)
    # a separate model cannot take another task's slot
    age_model = TaskModel(make_spec("age", "test_efficientnet", 32, bins=AgeBins()))
    age_model.save(tmp_path / "age")
    from maskage.models.torch_model import ModelFileError

    with pytest.raises(ModelFileError, match="expected a mask model"):
        Pipeline.from_runs(tmp_path / "age", run, run)
    assert isinstance(SharedModel(model).views()["age"], TaskView)


@pytest.mark.parametrize("task", ["joint", "multihead"])
def test_set_frame_reaches_every_view_at_once(task):
    from maskage.detect.faces import CropSettings
    from maskage.pipeline.core import set_frame

    spec = make_spec(task, "test_efficientnet", 32, bins=AgeBins()) if task == "multihead" else \
        make_spec(task, "test_efficientnet", 32)
    views = SharedModel(TaskModel(spec)).views()
    pipe = Pipeline(views["mask"], views["gender"], views["age"])
    img = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    from maskage.detect.faces import Detection

    before = pipe.model_inputs([img], [Detection((20.0, 20.0, 70.0, 70.0))])
    set_frame(pipe, "gender", 0.6, 0.1)
    # every slot's crop settings changed before any save/load: the model behind the views is one
    for t in ("mask", "gender", "age"):
        assert pipe.models[t].spec.crop_settings == CropSettings(**{**spec.crop_settings.to_dict(), "frame": 0.6,
                                                                     "frame_shift": 0.1})
    after = pipe.model_inputs([img], [Detection((20.0, 20.0, 70.0, 70.0))])
    assert not np.array_equal(before["mask"][0], after["mask"][0])  # the framed crop is another crop
