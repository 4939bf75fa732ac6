"""Scoring every-face predictions against labelled face boxes (photos of scenes: streets, shops, crowds).

``benchmarks/scenes.py`` runs a pipeline and calls these; the tests call them on made-up boxes. ``export_faces``
cuts the boxed faces into mask-state folders for training (``maskage scene-faces``).
"""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.metrics import f1_score

from ..errors import UsageError
from ..detect.faces import HINT_IOU, Box, box_iou
from ..labels import MASK_LABELS
from ..metrics import bootstrap_f1, interval, resamples

SMALL_FACE = 40  # px: "faces of at least 40 px": the shorter side of the labelled box


@dataclass(frozen=True)
class LabelledFace:
    box: Box
    mask: str  # one of MASK_LABELS

    @property
    def side(self) -> float:
        return min(self.box[2] - self.box[0], self.box[3] - self.box[1])


def read_boxes(path: str | Path) -> dict[str, list[LabelledFace]]:
    """``boxes.csv`` (``image,x0,y0,x1,y1,mask``, mask in wear / incorrect / not_wear) -> faces by image name."""
    out: dict[str, list[LabelledFace]] = {}
    with Path(path).open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            if row["mask"] not in MASK_LABELS:
                raise UsageError(f"{path} line {line}: mask {row['mask']!r} is not one of {', '.join(MASK_LABELS)}")
            box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
            out.setdefault(row["image"], []).append(LabelledFace(box, row["mask"]))  # type: ignore[arg-type]
    return out


def photo_split(image: str, fraction: float) -> bool:
    """Whether this photo is in the held-out ``fraction`` (a fixed hash of its name, so a split never moves)."""
    return int(hashlib.sha1(image.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def match(truth: Sequence[Box], found: Sequence[Box], min_iou: float = HINT_IOU) -> list[tuple[int, int]]:
    """One-to-one pairs (truth index, found index), best overlap first, each with IoU >= ``min_iou``."""
    pairs = sorted(((box_iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    used_t, used_f, out = set(), set(), []
    for iou, i, j in pairs:
        if iou < min_iou:
            break
        if i not in used_t and j not in used_f:
            used_t.add(i), used_f.add(j), out.append((i, j))
    return sorted(out)


@dataclass
class SceneScore:
    """Counts over a set of scene photos; ``report`` gives the figures the issue asks for."""

    faces: int = 0
    faces_large: int = 0  # labelled faces of at least SMALL_FACE px
    found: int = 0
    found_large: int = 0
    detections: int = 0
    unmatched: int = 0  # detections that overlap no labelled face
    true_mask: list[str] = field(default_factory=list)  # of found faces
    pred_mask: list[str] = field(default_factory=list)

    def add(self, truth: Sequence[LabelledFace], found: Sequence[Box], masks: Sequence[str],
            min_iou: float = HINT_IOU) -> list[tuple[int, int]]:
        """Add one photo: its labelled faces, the detected boxes and the mask state predicted for each; returns
        the matched pairs."""
        pairs = match([t.box for t in truth], found, min_iou)
        self.faces += len(truth)
        self.faces_large += sum(t.side >= SMALL_FACE for t in truth)
        self.found += len(pairs)
        self.found_large += sum(truth[i].side >= SMALL_FACE for i, _ in pairs)
        self.detections += len(found)
        self.unmatched += len(found) - len(pairs)
        for i, j in pairs:
            self.true_mask.append(truth[i].mask)
            self.pred_mask.append(masks[j])
        return pairs

    def report(self) -> dict[str, Any]:
        """The figures, with bootstrap 95% intervals (the found faces resampled) on mask F1 and incorrect recall:
        with a dozen incorrect masks, one face moves recall by 0.07."""
        t, p = np.array(self.true_mask), np.array(self.pred_mask)
        incorrect = t == "incorrect"
        caught = (p[incorrect] == "incorrect").astype(float)
        recall_samples = caught[resamples(len(caught))].mean(1) if len(caught) else np.zeros(1)
        return {
            "faces": self.faces, "found": self.found, "found_share": self.found / max(self.faces, 1),
            "faces_40px": self.faces_large, "found_40px": self.found_large,
            "found_40px_share": self.found_large / max(self.faces_large, 1),
            "mask_f1": float(f1_score(t, p, labels=list(MASK_LABELS), average="macro", zero_division=0)) if len(t) else 0.0,
            "mask_f1_ci": interval(bootstrap_f1(t, [p], labels=MASK_LABELS)[:, 0]) if len(t) else [0.0, 0.0],
            "incorrect_found": int(incorrect.sum()), "incorrect_caught": int(caught.sum()),
            "incorrect_recall": float(caught.mean()) if len(caught) else 0.0,
            "incorrect_recall_ci": interval(recall_samples),
            "detections": self.detections, "unmatched": self.unmatched,
            "unmatched_share": self.unmatched / max(self.found, 1),
        }


def format_report(name: str, r: dict) -> str:
    """One block of text for a ``SceneScore.report``."""
    f1_lo, f1_hi = r["mask_f1_ci"]
    rec_lo, rec_hi = r["incorrect_recall_ci"]
    return (f"{name}: faces found {r['found']}/{r['faces']} ({r['found_share']:.3f}), >= {SMALL_FACE} px "
            f"{r['found_40px']}/{r['faces_40px']} ({r['found_40px_share']:.3f})\n"
            f"  mask-state macro F1 on found faces {r['mask_f1']:.3f} [{f1_lo:.3f}-{f1_hi:.3f}]; incorrect caught "
            f"{r['incorrect_caught']}/{r['incorrect_found']} (recall {r['incorrect_recall']:.3f} [{rec_lo:.2f}-"
            f"{rec_hi:.2f}]); unmatched detections {r['unmatched']} ({r['unmatched_share']:.3f} of found)")


def export_faces(scenes_dir: str | Path, out: str | Path, part: str = "train", fraction: float = 0.5) -> dict[str, int]:
    """Write each labelled face of the scene photos outside (``part="train"``) or inside (``"eval"``) the held-out
    ``fraction`` to ``out/<mask state>/<photo>_<k>.png``, for training as a ``mask_sources`` folder; returns counts
    per state.

    Each file is a square of twice the box's longer side around it (the photo's border repeated beyond its edge), at
    the photo's own resolution: where no face is detected in it, the centre crop of 0.7 of its side
    (``CropSettings.fallback_fraction``) is then the box plus the 0.2 margin the models are trained with. Small faces
    stay small, as a camera sees them.
    """
    import cv2

    from ..images import load_image

    if part not in ("train", "eval"):
        raise UsageError(f"part must be train or eval, got {part!r}")
    scenes_dir, out = Path(scenes_dir), Path(out)
    counts = {m: 0 for m in MASK_LABELS}
    for image, faces in sorted(read_boxes(scenes_dir / "boxes.csv").items()):
        if photo_split(image, fraction) != (part == "eval"):
            continue
        photo = load_image(scenes_dir / "images" / image)
        for k, face in enumerate(faces):
            x0, y0, x1, y1 = face.box
            side = max(x1 - x0, y1 - y0, 2.0) * 2
            left, top = int(round((x0 + x1 - side) / 2)), int(round((y0 + y1 - side) / 2))
            size = int(round(side))
            pad = max(0, -left, -top, left + size - photo.shape[1], top + size - photo.shape[0])
            padded = cv2.copyMakeBorder(photo, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else photo
            crop = padded[top + pad : top + pad + size, left + pad : left + pad + size]
            (out / face.mask).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / face.mask / f"{Path(image).stem}_{k}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
            counts[face.mask] += 1
    return counts
