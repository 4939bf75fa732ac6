""""How the mask is worn" as a training signal for the mask model: a second head, used in training only.

The mask model outputs three states. Where a photo also says how its mask sits (a drawn mask's kind in train.csv,
MaskedFace-Net's file names), a small head on the same pooled features learns that finer label (``HOW_WORN``), so
that the features must tell a nose that shows from a mask under the chin. The head is dropped when the model is
saved: the shipped file and its outputs stay the three states. Real faces worn wrongly, whose kind is not given,
teach the three states alone (their finer label is unknown, -1).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..labels import CHIN_EXPOSED, NOSE_EXPOSED, ONE_EAR, UNDER_CHIN, Mask

WORN_WRONGLY = (NOSE_EXPOSED, CHIN_EXPOSED, UNDER_CHIN, ONE_EAR)
# covered and bare mirror the other two states
HOW_WORN = ("covered", *WORN_WRONGLY, "bare")
UNKNOWN = -1

# MaskedFace-Net's incorrect file names (shared/data/README.md): which part of the face shows
_MFN_SUFFIXES = {"_Mask_Mouth_Chin": NOSE_EXPOSED, "_Mask_Nose_Mouth": CHIN_EXPOSED, "_Mask_Chin": UNDER_CHIN}


def kind_from_name(path: str | Path) -> str:
    """The mask's kind a MaskedFace-Net file name tells (``12345_Mask_Mouth_Chin.jpg`` -> "nose_exposed"); "" if
    it tells none."""
    stem = Path(path).stem
    return next((kind for suffix, kind in _MFN_SUFFIXES.items() if stem.endswith(suffix)), "")


def how_worn_index(mask: int, kind: str) -> int:
    """The finer label learnt for a photo: covered / bare for the masks worn well / not worn, the kind for a mask
    worn wrongly where it is known (``HOW_WORN``), else ``UNKNOWN``."""
    if mask == Mask.WEAR:
        return HOW_WORN.index("covered")
    if mask == Mask.NOT_WEAR:
        return HOW_WORN.index("bare")
    return HOW_WORN.index(kind) if kind in WORN_WRONGLY else UNKNOWN


def pack(targets: np.ndarray, how: np.ndarray, n_classes: int) -> np.ndarray:
    """Both labels in one integer a loader can carry (and MixUp can pair): ``target + n_classes * (how + 1)``."""
    return np.asarray(targets, dtype=np.int64) + n_classes * (np.asarray(how, dtype=np.int64) + 1)


def unpack(packed: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``pack``'s inverse: the state and the finer label (``UNKNOWN`` where not given)."""
    return packed % n_classes, packed // n_classes - 1


class HowWornNet(nn.Module):
    """The model being trained with the second head: its outputs are the model's logits then the head's."""

    def __init__(self, model: nn.Module, n_kinds: int = len(HOW_WORN)) -> None:
        super().__init__()
        self.model = model
        features = model.net.get_classifier().in_features
        self.head = nn.Linear(features, n_kinds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.model.net
        pooled = net.forward_head(net.forward_features(x), pre_logits=True)
        return torch.cat([net.get_classifier()(pooled), self.head(pooled)], dim=1)


class HowWornLoss(nn.Module):
    """The model's own loss on its logits plus ``weight`` x cross-entropy of the head on the photos whose finer
    label is known (class-weighted by ``how_weights``); the target is ``pack``ed."""

    def __init__(self, loss: nn.Module, n_classes: int, weight: float, how_weights: torch.Tensor | None = None) -> None:
        super().__init__()
        self.loss, self.n_classes, self.weight = loss, n_classes, weight
        self.register_buffer("how_weights", how_weights)

    def forward(self, logits: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        target, how = unpack(packed, self.n_classes)
        loss = self.loss(logits[:, :self.n_classes], target)
        known = how >= 0
        if not bool(known.any()):
            return loss + 0.0 * logits[:, self.n_classes:].sum()  # keeps the head in the graph
        aux = F.cross_entropy(logits[known, self.n_classes:].float(), how[known], weight=self.how_weights)
        return loss + self.weight * aux


def how_worn_labels(samples: Sequence) -> np.ndarray:
    """Each sample's finer label (``how_worn_index`` of its mask state and kind)."""
    return np.array([how_worn_index(s.mask, s.kind) for s in samples], dtype=np.int64)
