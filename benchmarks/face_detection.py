"""Face-detection rate and speed of maskage's MTCNN cropper on the real photos in ../shared/data.

Usage: .venv/bin/python benchmarks/face_detection.py [--limit N] [--min-face 40]
Prints, per folder: photos, faces found (%), photos/s batched and one at a time.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from maskage.faces import DetectorSettings, FaceDetector
from maskage.images import load_image

ROOT = Path(os.environ.get("MASKAGE_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
FOLDERS = ["utkface", "maskedfacenet/correct", "maskedfacenet/incorrect", "rmfd/with_mask", "rmfd/without_mask"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit", type=int, default=0, help="photos per folder (0 = all), drawn with a fixed seed")
    ap.add_argument("--min-face", type=int, default=40)
    ap.add_argument("--single", type=int, default=100, help="photos timed one at a time per folder")
    args = ap.parse_args()
    det = FaceDetector(DetectorSettings(min_face_size=args.min_face))
    print(f"{'folder':28} {'photos':>7} {'found':>8} {'batched/s':>10} {'single/s':>9}")
    for name in FOLDERS:
        files = sorted(p for p in (ROOT / name).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        if args.limit:
            idx = np.random.default_rng(0).permutation(len(files))[: args.limit]
            files = [files[i] for i in sorted(idx)]
        images = [load_image(p) for p in files]
        t = time.perf_counter()
        dets = det.detect(images)
        batched = len(images) / (time.perf_counter() - t)
        few = images[: args.single]
        t = time.perf_counter()
        for im in few:
            det.detect([im])
        single = len(few) / (time.perf_counter() - t)
        found = np.mean([d.box is not None for d in dets])
        print(f"{name:28} {len(files):>7} {found:>8.1%} {batched:>10.1f} {single:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
