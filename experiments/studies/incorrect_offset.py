"""Analysis: would a decision offset on "incorrect" (the mask model's log-probability plus b) help the scenes?
Chosen honestly: two-fold by photo on the eval half (choose b on one fold, score on the other), and b chosen on
the train half (the mask model saw its faces) scored on the eval half.
    .venv/bin/python experiments/studies/incorrect_offset.py [PIPELINE_DIR]
"""
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

from maskage import Pipeline
from maskage.labels import MASK_LABELS
from maskage.pipeline.scenes import match, photo_split, read_boxes

data = Path("../shared/data/facemask_scenes")
faces = read_boxes(data / "boxes.csv")
pipe = Pipeline.from_pretrained(sys.argv[1] if len(sys.argv) > 1 else None)
sets = {}
for half in ("eval", "train"):
    names = [n for n in sorted(faces) if photo_split(n, 0.5) == (half == "eval")]
    preds = pipe.predict_all_faces([str(data / "images" / n) for n in names], batch_size=8)
    rows = []
    for k, (n, ps) in enumerate(zip(names, preds)):
        found = [p for p in ps if p.face_box is not None]
        for i, j in match([t.box for t in faces[n]], [p.face_box for p in found]):
            rows.append((k, MASK_LABELS.index(faces[n][i].mask), [found[j].mask_probs[m] for m in MASK_LABELS]))
    sets[half] = (np.array([r[0] for r in rows]), np.array([r[1] for r in rows]), np.log(np.array([r[2] for r in rows]) + 1e-9))

GRID = np.round(np.arange(-3, 3.01, 0.25), 2)


def f1(y, logp, b):
    z = logp.copy()
    z[:, 1] += b
    return f1_score(y, z.argmax(1), labels=[0, 1, 2], average="macro", zero_division=0)


def best(y, logp):
    scores = [f1(y, logp, b) for b in GRID]
    return GRID[int(np.argmax(np.round(scores, 6) - 1e-6 * np.abs(GRID)))]  # ties: the smallest offset


pe, ye, le = sets["eval"]
pt, yt, lt = sets["train"]
print(f"eval half {len(ye)} faces ({(ye == 1).sum()} incorrect): F1 without offset {f1(ye, le, 0):.3f}; train half {len(yt)} faces: {f1(yt, lt, 0):.3f}")
for b in (-1, -0.5, 0.5, 1, 1.5, 2):
    print(f"  offset {b:+.2f}: eval {f1(ye, le, b):.3f}, train {f1(yt, lt, b):.3f}")
bt = best(yt, lt)
print(f"offset chosen on the train half {bt:+.2f}: eval {f1(ye, le, bt):.3f}")
fold = pe % 2
cross = np.empty(len(ye), int)
for k in (0, 1):
    b = best(ye[fold != k], le[fold != k])
    z = le[fold == k].copy(); z[:, 1] += b
    cross[fold == k] = z.argmax(1)
    print(f"  fold {k}: offset chosen on the other fold {b:+.2f}")
print(f"two-fold cross-fitted on the eval half: {f1_score(ye, cross, labels=[0, 1, 2], average='macro'):.3f}")
