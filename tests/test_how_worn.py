import csv

import numpy as np
import pytest
import torch
from PIL import Image

from maskage.errors import UsageError
from maskage.labels import Mask
from maskage.models.torch_model import TaskModel
from maskage.training.config import load_config
from maskage.training.data import load_train_samples, source_samples
from maskage.training.how_worn import (HOW_WORN, UNKNOWN, HowWornLoss, HowWornNet, how_worn_index, how_worn_labels,
                                       kind_from_name, pack, unpack)
from maskage.training.train import train

from .conftest import tiny_model


def test_file_names_and_states_give_the_finer_label():
    assert kind_from_name("00012_Mask_Mouth_Chin.jpg") == "nose_exposed"
    assert kind_from_name("dir/00012_Mask_Nose_Mouth.png") == "chin_exposed"
    assert kind_from_name("00012_Mask_Chin.jpg") == "under_chin"
    assert kind_from_name("00012_Mask_Incorrect.jpg") == kind_from_name("person_0001_0123abcd.jpg") == ""
    assert how_worn_index(Mask.WEAR, "nose_exposed") == HOW_WORN.index("covered")  # the state decides first
    assert how_worn_index(Mask.NOT_WEAR, "") == HOW_WORN.index("bare")
    assert how_worn_index(Mask.INCORRECT, "one_ear") == HOW_WORN.index("one_ear")
    assert how_worn_index(Mask.INCORRECT, "") == how_worn_index(Mask.INCORRECT, "covered") == UNKNOWN


def test_pack_and_unpack_are_inverse():
    targets, how = np.array([0, 1, 2, 1]), np.array([0, UNKNOWN, 5, 3])
    state, finer = unpack(torch.as_tensor(pack(targets, how, 3)), 3)
    assert state.tolist() == targets.tolist() and finer.tolist() == how.tolist()


def test_the_loss_adds_the_head_on_known_rows_only():
    base = torch.nn.CrossEntropyLoss()
    loss = HowWornLoss(base, 3, weight=0.5)
    logits = torch.randn(4, 3 + len(HOW_WORN), requires_grad=True)
    targets, how = np.array([0, 1, 1, 2]), np.array([0, UNKNOWN, 1, 5])
    packed = torch.as_tensor(pack(targets, how, 3))
    value = loss(logits, packed)
    known = torch.tensor([0, 2, 3])
    expected = base(logits[:, :3], torch.as_tensor(targets)) + 0.5 * torch.nn.functional.cross_entropy(
        logits[known, 3:], torch.as_tensor(how)[known])
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    value.backward()
    assert torch.all(logits.grad[1, 3:] == 0) and torch.any(logits.grad[0, 3:] != 0)  # the unknown row: no head loss
    none_known = loss(logits, torch.as_tensor(pack(targets, np.full(4, UNKNOWN), 3)))
    assert none_known.item() == pytest.approx(base(logits[:, :3], torch.as_tensor(targets)).item(), rel=1e-6)


def test_the_net_gives_the_model_s_own_logits_then_the_head_s():
    model = tiny_model("mask")
    net = HowWornNet(model).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = net(x)
        assert out.shape == (2, 3 + len(HOW_WORN))
        assert torch.allclose(out[:, :3], model(x), atol=1e-6)


def _with_kinds(toy_root, tmp_path):
    """The toy train set with an incorrect_kind column, as a drawn build writes it."""
    data = tmp_path / "kinds"
    data.mkdir()
    (data / "images").symlink_to(toy_root / "train" / "images")
    rows = list(csv.DictReader((toy_root / "train" / "train.csv").open()))
    with (data / "train.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, [*rows[0], "incorrect_kind"])
        w.writeheader()
        for i, r in enumerate(rows):
            w.writerow(dict(r, incorrect_kind=("nose_exposed", "under_chin")[i % 2]))
    return data


def test_samples_carry_the_kind_of_a_mask_worn_wrongly(toy_root, tmp_path):
    samples = load_train_samples(_with_kinds(toy_root, tmp_path))
    assert {s.kind for s in samples if s.mask == Mask.INCORRECT} == {"nose_exposed", "under_chin"}
    assert {s.kind for s in samples if s.mask != Mask.INCORRECT} == {""}
    folder = tmp_path / "mfn" / "incorrect"
    folder.mkdir(parents=True)
    for i, suffix in enumerate(("Mask_Mouth_Chin", "Mask_Chin", "Mask_Incorrect")):
        Image.new("RGB", (40, 40)).save(folder / f"{i:05d}_{suffix}.jpg")
    kinds = {s.path.rsplit("/", 1)[1]: s.kind for s in source_samples([f"{folder}=incorrect"], "train", 0.0)}
    assert kinds == {"00000_Mask_Mouth_Chin.jpg": "nose_exposed", "00001_Mask_Chin.jpg": "under_chin",
                     "00002_Mask_Incorrect.jpg": ""}
    assert list(how_worn_labels([s for s in samples if s.mask == Mask.INCORRECT][:2])) == [1, 3]


class _Stop(Exception):
    pass


def test_a_run_with_the_head_saves_the_three_state_model_and_resumes_exactly(tiny_overrides, toy_root, tmp_path,
                                                                            capsys, monkeypatch):
    import maskage.training.train as train_module

    settings = dict(tiny_overrides, data_dir=str(_with_kinds(toy_root, tmp_path)), how_worn_weight=1.0,
                    class_weights="balanced", mixup_alpha=0.4, epochs=2, lr=0.01)
    straight = train(load_config(None, dict(settings, output_dir=str(tmp_path / "straight")), task="mask"))
    assert "how-worn head: covered" in capsys.readouterr().out
    saved = torch.load(straight.output_dir / "weights.pt", weights_only=True)
    assert not any(k.startswith("head.") for k in saved)  # the head stays out of the model file
    checkpoint = torch.load(straight.output_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["model"]["head.weight"].shape[0] == len(HOW_WORN)  # ... and in the checkpoint, to resume
    model = TaskModel.load(straight.output_dir, "mask")
    probs = model.predict_proba(np.full((2, 40, 40, 3), 128, np.uint8))
    assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)

    real = train_module.write_checkpoint

    def stop_after_one(out, state):
        real(out, state)
        raise _Stop

    out = tmp_path / "stopped"
    monkeypatch.setattr(train_module, "write_checkpoint", stop_after_one)
    with pytest.raises(_Stop):
        train(load_config(None, dict(settings, output_dir=str(out)), task="mask"), progress=False)
    monkeypatch.setattr(train_module, "write_checkpoint", real)
    train(load_config(None, dict(settings, output_dir=str(out), resume=True), task="mask"), progress=False)
    # the head's weights and optimiser state came back too: the resumed run is the uninterrupted one
    a, b = torch.load(out / "checkpoint.pt", weights_only=True)["model"], checkpoint["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_head_is_a_mask_setting_without_a_teacher(tmp_path):
    with pytest.raises(UsageError, match=">= 0"):
        load_config(None, {"how_worn_weight": -1.0}, task="mask")
    with pytest.raises(UsageError, match="mask task"):
        load_config(None, {"how_worn_weight": 1.0}, task="gender")
    tiny_model("mask").save(tmp_path / "teacher")
    load_config(None, {"teacher": str(tmp_path / "teacher")}, task="mask")  # a mask teacher alone is fine
    with pytest.raises(UsageError, match="cannot be combined"):
        load_config(None, {"how_worn_weight": 1.0, "teacher": str(tmp_path / "teacher")}, task="mask")
