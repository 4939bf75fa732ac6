import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from maskage.labels import AgeBins
from maskage.training.losses import AgeBinLoss, FocalLoss, SoftF1Loss, balanced_weights, build_loss, parse_loss


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(16, 3, generator=g, requires_grad=True), torch.randint(0, 3, (16,), generator=g)


def test_parse_loss():
    assert parse_loss("0.4*f1+0.6*focal") == [(0.4, "f1"), (0.6, "focal")]
    assert parse_loss("ce") == [(1.0, "ce")]
    for bad in ("0.4*dice", "ce+", "x*ce"):
        with pytest.raises(ValueError):
            parse_loss(bad)


def test_focal_gamma_zero_is_cross_entropy(batch):
    logits, y = batch
    w = torch.tensor([1.0, 2.0, 0.5])
    for ls in (0.0, 0.1):
        expected = F.cross_entropy(logits, y, weight=w, label_smoothing=ls)
        assert FocalLoss(0.0, w, ls)(logits, y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_focal_down_weights_easy_examples():
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.2, 0.0, 0.0]])
    y = torch.tensor([0, 0])
    ce = F.cross_entropy(logits, y, reduction="none")
    focal = [FocalLoss(2.0)(logits[i : i + 1], y[i : i + 1]).item() for i in range(2)]
    assert focal[0] / ce[0].item() < focal[1] / ce[1].item()


def test_soft_f1_is_zero_for_confident_right_answers():
    y = torch.tensor([0, 1, 2, 1])
    assert SoftF1Loss(3)(F.one_hot(y, 3).float() * 50, y).item() == pytest.approx(0.0, abs=1e-4)
    assert SoftF1Loss(3)(torch.zeros(4, 3), y).item() > 0.5


def test_weighted_sum_and_gradients(batch):
    logits, y = batch
    loss = build_loss("0.4*f1+0.6*focal", 3)
    expected = 0.4 * SoftF1Loss(3)(logits, y) + 0.6 * FocalLoss(2.0)(logits, y)
    value = loss(logits, y)
    assert value.item() == pytest.approx(expected.item(), rel=1e-6)
    value.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_age_bin_loss_adds_group_cross_entropy():
    bins = AgeBins()
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(8, 11, generator=g), torch.randint(0, 11, (8,), generator=g)
    base = torch.nn.CrossEntropyLoss()
    plain = AgeBinLoss(base, bins.groups, 0.0)(logits, y)
    assert plain.item() == pytest.approx(base(logits, y).item())
    p = torch.softmax(logits, 1)
    groups = torch.tensor(bins.groups)
    gp = torch.stack([p[:, groups == k].sum(1) for k in range(3)], 1)
    group_ce = F.nll_loss(gp.log(), groups[y])
    full = build_loss("ce", 11, age_groups=bins.groups, age_group_weight=0.5)(logits, y)
    assert full.item() == pytest.approx(base(logits, y).item() + 0.5 * group_ce.item(), rel=1e-5)


def test_balanced_weights_match_sklearn():
    y = [0, 0, 0, 1, 2, 2]
    ours = balanced_weights(y, 3)
    ref = compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=np.array(y))
    assert torch.allclose(ours, torch.tensor(ref, dtype=torch.float32))
    assert balanced_weights([0, 0], 2)[1] == 0  # absent class
