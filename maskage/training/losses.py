"""Losses: weighted cross-entropy, focal, soft F1, label smoothing, weighted sums, and the age-bin loss."""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from ..labels import GENDER_LABELS, MASK_LABELS, unpack_heads

LOSS_TERMS = ("ce", "focal", "f1")


def parse_loss(spec: str) -> list[tuple[float, str]]:
    """``"0.4*f1+0.6*focal"`` -> ``[(0.4, 'f1'), (0.6, 'focal')]``; a bare name has weight 1."""
    terms = []
    for part in spec.replace(" ", "").split("+"):
        m = re.fullmatch(r"(?:([0-9]*\.?[0-9]+)\*)?([a-z0-9_]+)", part)
        if not m or m.group(2) not in LOSS_TERMS:
            raise UsageError(f"bad loss term {part!r} in {spec!r}; use e.g. 'ce', 'focal' or '0.4*f1+0.6*focal'")
        terms.append((float(m.group(1) or 1.0), m.group(2)))
    return terms


class FocalLoss(nn.Module):
    """Focal loss (Lin et al.); gamma=0 is cross-entropy. Class weights and label smoothing apply as in CE."""

    def __init__(self, gamma: float = 2.0, weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.gamma, self.label_smoothing = gamma, label_smoothing
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=1)
        ce = F.nll_loss(logp, target, weight=self.weight, reduction="none")
        if self.label_smoothing:
            # as torch's cross_entropy: the uniform part weighs each class by its own weight
            w = self.weight if self.weight is not None else torch.ones_like(logp[0])
            smooth = -(logp * w).mean(dim=1)
            ce = (1 - self.label_smoothing) * ce + self.label_smoothing * smooth
        pt = logp.gather(1, target[:, None]).squeeze(1).exp()
        loss = (1 - pt) ** self.gamma * ce
        if self.weight is not None:
            return loss.sum() / self.weight[target].sum()
        return loss.mean()


class SoftF1Loss(nn.Module):
    """1 - macro soft F1, computed from probabilities so it has a gradient."""

    def __init__(self, num_classes: int, eps: float = 1e-7) -> None:
        super().__init__()
        self.num_classes, self.eps = num_classes, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(logits, dim=1)
        y = F.one_hot(target, self.num_classes).to(p.dtype)
        tp = (p * y).sum(0)
        fp = (p * (1 - y)).sum(0)
        fn = ((1 - p) * y).sum(0)
        f1 = 2 * tp / (2 * tp + fp + fn + self.eps)
        return 1 - f1.mean()


class WeightedSum(nn.Module):
    def __init__(self, terms: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.weights = [w for w, _ in terms]
        self.terms = nn.ModuleList([m for _, m in terms])

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(w * m(logits, target) for w, m in zip(self.weights, self.terms))


class AgeBinLoss(nn.Module):
    """Loss on the fine bins plus ``group_weight`` x cross-entropy on group probabilities summed from the bins."""

    def __init__(self, bin_loss: nn.Module, groups: Sequence[int], group_weight: float = 1.0) -> None:
        super().__init__()
        self.bin_loss, self.group_weight = bin_loss, group_weight
        g = torch.as_tensor(list(groups), dtype=torch.long)
        self.register_buffer("groups", g)
        self.register_buffer("onehot", F.one_hot(g, int(g.max()) + 1).float())  # bins x groups

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.bin_loss(logits, target)
        if self.group_weight:
            group_p = torch.softmax(logits.float(), dim=1) @ self.onehot
            loss = loss + self.group_weight * F.nll_loss(torch.log(group_p.clamp_min(1e-8)), self.groups[target])
        return loss


class MultiHeadLoss(nn.Module):
    """The multi-head model's loss: the sum of each head's loss on its own outputs. The target packs the three
    labels as ``labels.pack_heads`` does (``data.task_target``)."""

    def __init__(self, mask_loss: nn.Module, gender_loss: nn.Module, age_loss: nn.Module, n_bins: int) -> None:
        super().__init__()
        self.mask_loss, self.gender_loss, self.age_loss, self.n_bins = mask_loss, gender_loss, age_loss, n_bins

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        mask_logits, gender_logits, age_logits = torch.split(logits, [len(MASK_LABELS), len(GENDER_LABELS), self.n_bins], dim=1)
        mask, gender, age = unpack_heads(target, self.n_bins)
        return self.mask_loss(mask_logits, mask) + self.gender_loss(gender_logits, gender) + self.age_loss(age_logits, age)


def balanced_weights(targets: Sequence[int], num_classes: int) -> torch.Tensor:
    """Class weights n / (k * count), as scikit-learn's 'balanced'; absent classes get weight 0."""
    counts = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def build_loss(
    spec: str,
    num_classes: int,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    focal_gamma: float = 2.0,
    age_groups: Sequence[int] | None = None,
    age_group_weight: float = 1.0,
) -> nn.Module:
    """The loss a config asks for; with ``age_groups``, wrapped in the age-bin loss."""
    modules: list[tuple[float, nn.Module]] = []
    for w, name in parse_loss(spec):
        if name == "ce":
            m: nn.Module = nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        elif name == "focal":
            m = FocalLoss(focal_gamma, weight, label_smoothing)
        else:
            m = SoftF1Loss(num_classes)
        modules.append((w, m))
    loss: nn.Module = modules[0][1] if len(modules) == 1 and modules[0][0] == 1.0 else WeightedSum(modules)
    if age_groups is not None:
        loss = AgeBinLoss(loss, age_groups, age_group_weight)
    return loss
