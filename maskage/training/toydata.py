"""A small generated dataset in the competition layout, for tests and the demo.

The faces are drawings, not photos: mask state shows as a band over the lower face, gender as hair
length, age group as hair colour, so a small model can learn them. MTCNN finds no face in them, so
they also exercise the centre-crop fallback.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..labels import MASK_FILE_STEMS, Mask, age_to_group, encode

AGES_BY_GROUP = {0: (18, 29), 1: (30, 59), 2: (60, 75)}
HAIR = {0: (30, 20, 10), 1: (110, 90, 70), 2: (225, 225, 225)}


def draw_face(mask: int, gender: int, age_group: int, size: tuple[int, int] = (96, 128), seed: int = 0) -> Image.Image:
    """A cartoon face of W x H pixels showing the three labels."""
    rng = np.random.default_rng(seed)
    w, h = size
    bg = tuple(int(v) for v in rng.integers(60, 200, 3))
    im = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(im)
    cx, cy = w / 2 + rng.uniform(-3, 3), h / 2 + rng.uniform(-3, 3)
    fw, fh = w * 0.32, h * 0.3
    hair = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in HAIR[age_group])
    if gender == 1:  # long hair behind the face
        d.rectangle([cx - fw * 1.25, cy - fh * 1.1, cx + fw * 1.25, cy + fh * 1.3], fill=hair)
    skin = tuple(int(v) for v in (rng.integers(170, 235), rng.integers(130, 190), rng.integers(100, 160)))
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    d.chord([cx - fw, cy - fh * 1.15, cx + fw, cy - fh * 0.2], 180, 360, fill=hair)
    for ex in (-0.4, 0.4):
        d.ellipse([cx + ex * fw - 4, cy - fh * 0.2 - 3, cx + ex * fw + 4, cy - fh * 0.2 + 3], fill=(20, 20, 20))
    d.line([cx, cy - fh * 0.05, cx, cy + fh * 0.2], fill=(120, 70, 50), width=2)  # nose
    d.line([cx - fw * 0.3, cy + fh * 0.5, cx + fw * 0.3, cy + fh * 0.5], fill=(150, 40, 40), width=3)  # mouth
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    if mask == Mask.WEAR:
        d.rectangle([cx - fw * 1.05, cy - fh * 0.05, cx + fw * 1.05, cy + fh * 0.95], fill=colour)
    elif mask == Mask.INCORRECT:  # under the nose, on mouth and chin
        d.rectangle([cx - fw * 1.05, cy + fh * 0.35, cx + fw * 1.05, cy + fh * 1.0], fill=colour)
    return im


def make_toy_dataset(
    root: str | Path,
    n_people: int = 18,
    n_eval_people: int = 6,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
) -> Path:
    """Write ``root/train`` (train.csv, images/) and ``root/eval`` (info.csv, gt.csv, images/)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    train_img = root / "train" / "images"
    train_img.mkdir(parents=True, exist_ok=True)
    eval_img = root / "eval" / "images"
    eval_img.mkdir(parents=True, exist_ok=True)
    stems = list(MASK_FILE_STEMS)
    train_rows, info_rows, gt_rows = [], [], []
    for k in range(n_people + n_eval_people):
        gender, group = k % 2, (k // 2) % 3
        age = int(rng.integers(*AGES_BY_GROUP[group], endpoint=True))
        assert age_to_group(age) == group
        pid = f"{k:06d}"
        if k < n_people:
            folder = f"{pid}_{'female' if gender else 'male'}_Asian_{age}"
            (train_img / folder).mkdir(exist_ok=True)
            for j, stem in enumerate(stems):
                ext = ".png" if stem == "normal" else ".jpg"
                img = draw_face(MASK_FILE_STEMS[stem], gender, group, size, seed=seed * 100_000 + k * 10 + j)
                img.save(train_img / folder / f"{stem}{ext}")
            train_rows.append([pid, "female" if gender else "male", "Asian", age, folder])
        else:
            for j, stem in enumerate(stems):
                mask = MASK_FILE_STEMS[stem]
                name = f"{pid}_{j}.jpg"
                draw_face(mask, gender, group, size, seed=seed * 100_000 + k * 10 + j).save(eval_img / name)
                info_rows.append([name, 0])
                gt_rows.append([name, encode(mask, gender, group)])
    order = rng.permutation(len(info_rows))
    with (root / "train" / "train.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "gender", "race", "age", "path"])
        w.writerows(train_rows)
    for name, rows in (("info.csv", info_rows), ("gt.csv", gt_rows)):
        with (root / "eval" / name).open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["ImageID", "ans"])
            w.writerows(rows[i] for i in order)
    return root
