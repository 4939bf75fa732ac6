"""Face-detection rate and speed of maskage's MTCNN cropper on the real photos in ../shared/data.

Usage: .venv/bin/python benchmarks/face_detection.py [--limit N] [--min-face 40] [--compare] [--scene]
Prints, per folder: photos, faces found (%), photos/s batched and one at a time. --compare also runs
facenet-pytorch's own MTCNN.detect (the same networks; maskage re-implements its batching) on the same photos and
prints its rate, its faces found and how well the two agree (box IoU, landmark distance). --scene also runs the
scene detector (YuNet, what every-face prediction uses) on the same photos: faces found, photos/s, box IoU with
MTCNN's where both found one.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from maskage.detect.faces import DetectorSettings, FaceDetector, box_iou
from maskage.images import load_image
from maskage.detect.mtcnn import facenet_mtcnn

ROOT = Path(os.environ.get("MASKAGE_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
FOLDERS = ["utkface", "maskedfacenet/correct", "maskedfacenet/incorrect", "rmfd/with_mask", "rmfd/without_mask"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit", type=int, default=0, help="photos per folder (0 = all), drawn with a fixed seed")
    ap.add_argument("--min-face", type=int, default=40)
    ap.add_argument("--single", type=int, default=100, help="photos timed one at a time per folder")
    ap.add_argument("--compare", action="store_true", help="also facenet-pytorch's MTCNN.detect, and the agreement")
    ap.add_argument("--scene", action="store_true", help="also the scene detector (YuNet)")
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
        if args.scene:
            t = time.perf_counter()
            yunet = [faces[0] if faces else None for faces in det.detect_all(images, scene=True)]
            rate = len(images) / (time.perf_counter() - t)
            ious = [box_iou(d.box, y.box) for d, y in zip(dets, yunet) if d.box is not None and y is not None]
            print(f"  scene detector (YuNet): found {np.mean([y is not None for y in yunet]):.1%}, {rate:.1f} photos/s; "
                  f"box IoU with MTCNN's median {np.median(ious):.3f}", flush=True)
        if args.compare:
            t = time.perf_counter()
            ref = reference(det, images)
            ref_rate = len(images) / (time.perf_counter() - t)
            both = [(d, r) for d, r in zip(dets, ref) if d.box is not None and r is not None]
            ious = np.array([box_iou(d.box, tuple(r[0])) for d, r in both])
            marks = np.array([np.abs(np.asarray(d.landmarks) - r[1]).max() / (d.box[2] - d.box[0]) for d, r in both])
            print(f"  facenet-pytorch MTCNN.detect: found {np.mean([r is not None for r in ref]):.1%}, "
                  f"{ref_rate:.1f} photos/s batched; where both found a face: box IoU mean {ious.mean():.3f}, "
                  f"IoU > 0.5 {np.mean(ious > 0.5):.1%}, landmark max distance median {np.median(marks):.1%} "
                  f"of the box width", flush=True)


def reference(det: FaceDetector, images: list) -> list:
    """facenet-pytorch's MTCNN.detect with the detector's settings and batching: (box, landmarks) or None."""
    out: list = [None] * len(images)
    s = det.settings
    ref = facenet_mtcnn(s.min_face_size, s.thresholds, s.factor)
    for chunk in det.batches(images):
        ref.min_face_size = det.min_face(*images[chunk[0]].shape[:2])
        try:
            boxes, _, points = ref.detect(np.stack([images[i] for i in chunk]), landmarks=True)
        except (ValueError, RuntimeError):  # its empty pyramid for photos smaller than the smallest face
            continue
        for i, b, p in zip(chunk, boxes, points):
            if b is not None:
                out[i] = (b[0], p[0])  # select_largest: the largest first
    return out


if __name__ == "__main__":
    main()
