"""End-to-end ``Pipeline.predict`` speed on 384x512 photos (the competition's size), and each stage alone.

Usage: .venv/bin/python benchmarks/pipeline_speed.py [--n 64] [--batch-size 32] [--input-size 224]
The photos are real UTKFace faces from ../shared/data placed on a 384x512 canvas (or generated cartoons when
that folder is missing). The models are untrained EfficientNet-Lite0s: speed does not depend on the weights.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from maskage.faces import CropSettings, DetectorSettings, crop_face
from maskage.labels import AgeBins
from maskage.models import TaskModel, make_spec
from maskage.pipeline import Pipeline
from maskage.toydata import draw_face

ROOT = Path(os.environ.get("MASKAGE_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")


def photos(n: int) -> list[np.ndarray]:
    files = sorted((ROOT / "utkface").glob("*.jpg"))[:n]
    out = []
    for i in range(n):
        canvas = Image.new("RGB", (384, 512), (90 + i % 50, 110, 130))
        face = Image.open(files[i]).convert("RGB").resize((260, 260)) if files else draw_face(0, i % 2, i % 3, (260, 260), i)
        canvas.paste(face, (62, 90))
        out.append(np.asarray(canvas))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--min-face", type=int, default=40)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.n} photos 384x512, input {args.input_size}")
    det = DetectorSettings(min_face_size=args.min_face, batch_size=args.batch_size)
    models = [TaskModel(make_spec(t, input_size=args.input_size, detector=det, bins=AgeBins())) for t in ("mask", "gender", "age")]
    pipe = Pipeline(*models, detector=det)
    images = photos(args.n)
    pipe.predict(images[:2])  # warm-up
    t = time.perf_counter()
    preds = pipe.predict(images, batch_size=args.batch_size)
    total = time.perf_counter() - t
    found = np.mean([p.face_box is not None for p in preds])
    t = time.perf_counter()
    dets = pipe.detector.detect(images)
    t_det = time.perf_counter() - t
    crops = np.stack([crop_face(a, d.box, CropSettings()) for a, d in zip(images, dets)])
    stage = {}
    for m in models:
        t = time.perf_counter()
        m.predict_proba(crops, batch_size=args.batch_size)
        stage[m.task] = time.perf_counter() - t
    print(f"end to end: {args.n / total:.1f} photos/s ({total / args.n * 1000:.1f} ms/photo), faces found {found:.0%}")
    parts = {"detect": t_det, **stage}
    s = sum(parts.values())
    for k, v in parts.items():
        print(f"  {k:7} {args.n / v:8.1f} photos/s  {v / s:5.1%} of stage time")


if __name__ == "__main__":
    main()
