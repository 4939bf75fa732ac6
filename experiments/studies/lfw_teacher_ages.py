"""Experiment: FaceRes's own age head (trained on IMDB-Wiki: adults of every origin) labels the bare photo of
each LFW training person (news photos; no ages), 3 years older as it calls ages young (2026-12-02); the label
goes to the person's three photos (bare, masked, incorrect), as a true age goes to a person's drawn-mask photos.
Written as a `maskage pseudo` CSV (pseudo_labels=CSV pseudo_threshold=P: P on the teacher's mass in its group).
    .venv/bin/python experiments/studies/lfw_teacher_ages.py data/multi runs/lfw_teacher.csv
"""
import csv
import sys
from pathlib import Path

import numpy as np

from maskage import Pipeline
from maskage.atomic import write_csv_atomic
from maskage.models.faceres import FaceResHeads
from maskage.detect.faces import CropSettings, crop_faces
from maskage.images import batches, load_image
from maskage.labels import MASK_FILE_STEMS, MASK_LABELS, age_to_group
from maskage.progress import bar
from maskage.training.pseudo import PSEUDO_COLUMNS

SHIFT = 3
data, out = Path(sys.argv[1]), Path(sys.argv[2])
with (data / "train" / "train.csv").open(newline="") as f:
    people = [r for r in csv.DictReader(f) if r["dataset"] == "lfw"]
pipe = Pipeline.from_pretrained()
heads, crop = FaceResHeads(), CropSettings(crop_size=224, margin=0.2)
rows, ages_seen = [], []
for batch in bar(list(batches(people, 64)), desc="LFW people"):
    folders = [data / "train" / "images" / r["path"] for r in batch]
    arrays = [load_image(d / "normal.jpg") for d in folders]
    dets = pipe.detector.detect(arrays)
    crops = crop_faces(arrays, [d.box for d in dets], crop)
    _, dist = heads.predict(crops, 224)
    for r, d, folder, p in zip(batch, dets, folders, dist):
        if d.box is None:
            continue
        age = int(round(float(p @ np.arange(len(p))))) + SHIFT
        group = age_to_group(age)
        conf = float(sum(p[a] for a in range(len(p)) if age_to_group(a + SHIFT) == group))
        ages_seen.append(age)
        for stem in r["photos"].split(";"):
            rows.append([str(folder / f"{stem}.jpg"), MASK_LABELS[int(MASK_FILE_STEMS[stem])], r["gender"], -1, age,
                         "1", "1", f"{conf:.5f}"])
write_csv_atomic(out, PSEUDO_COLUMNS, rows)
a = np.array(ages_seen)
print(f"{len(a)} LFW people labelled, {len(rows)} photos -> {out}; ages median {np.median(a):.0f}, "
      f"groups <30/30-59/60+ {np.bincount([age_to_group(x) for x in a], minlength=3).tolist()}")
