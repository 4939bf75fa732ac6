"""Real scenes: every face of photos of streets, shops and crowds, scored against their labelled boxes.

    .venv/bin/python benchmarks/scenes.py [--data ../shared/data/facemask_scenes] [--pipeline DIR]
        [--scene-mode auto|on|off] [--min-face-size N] [--min-face-fraction F] [--thresholds A B C]
        [--split all|eval|train] [--errors DIR] [--json out.json]
    .venv/bin/python benchmarks/scenes.py --split eval --video [--refresh 1 5] [--smooth 0 0.5]

For each photo, ``Pipeline.predict_all_faces`` (what ``maskage predict --all-faces`` runs); a detection matches a
labelled face when their boxes overlap with IoU >= 0.3 (one to one, best overlap first). Printed: faces found (all,
and those >= 40 px), mask-state macro F1 on the found faces, incorrect recall, detections that match no labelled
face, and photos/s. ``--split eval`` scores only the photos a fixed hash of the name holds out (``--eval-fraction``,
default 0.5): the ones no recipe of maskage trains on (see ``maskage.pipeline.scenes.photo_split``).

``--video``: the same photos filmed by a panning, zooming camera (16 frames of 640x480 each, mp4,
``canvas.camera_frames``), the labelled boxes moved with the view; ``Pipeline.predict_video`` with each
``--refresh`` and ``--smooth``, scored frame by frame as above (a face in 16 frames counts 16 times), with frames/s:
what tracking (``refresh`` > 1) costs in mask-state accuracy on moving real faces.

Targets: >= 0.90 of faces >= 40 px found; mask-state macro F1 >= 0.90 on found faces; incorrect recall
>= 0.70; unmatched detections <= 5% of found faces.
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maskage.pipeline.core import Pipeline  # noqa: E402
from maskage.pipeline.scenes import LabelledFace, SceneScore, format_report, photo_split, read_boxes  # noqa: E402


def save_errors(out: Path, errors: list[tuple[float, np.ndarray, str, str]], per_class: int = 24) -> None:
    """Per true mask state, a PNG of its most confidently wrong faces (or missed ones: "missed"), captioned; and
    unmatched.png: the detections no labelled face matches, highest detector score first."""
    from PIL import Image

    from maskage.pipeline.visualize import captioned_grid

    out.mkdir(parents=True, exist_ok=True)
    for label in sorted({e[2] for e in errors}):
        rows = sorted((e for e in errors if e[2] == label), key=lambda e: -e[0])[:per_class]
        tiles = [(Image.fromarray(crop), f"->{guess} {conf:.2f}") for conf, crop, _, guess in rows]
        captioned_grid(tiles, columns=8, tile=96).save(out / f"{label}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "facemask_scenes"))
    ap.add_argument("--pipeline", default=None, help="pipeline directory (default: the shipped one)")
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--scene-mode", choices=("auto", "on", "off"), default=None,
                    help="override the pipeline's detector scene mode")
    ap.add_argument("--min-face-size", type=int, default=None)
    ap.add_argument("--min-face-fraction", type=float, default=None)
    ap.add_argument("--thresholds", type=float, nargs=3, default=None)
    ap.add_argument("--split", choices=("all", "eval", "train"), default="all")
    ap.add_argument("--eval-fraction", type=float, default=0.5)
    ap.add_argument("--limit", type=int, default=None, help="first N photos only (quick looks)")
    ap.add_argument("--errors", metavar="DIR",
                    help="save grids of each mask state's worst errors and misses, and of unmatched detections, here")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--video", action="store_true", help="score a moving camera's video of the photos instead")
    ap.add_argument("--refresh", type=int, nargs="+", default=[1, 5], help="--video: predict_video's refresh values")
    ap.add_argument("--smooth", type=float, nargs="+", default=[0.0], help="--video: predict_video's smooth values")
    args = ap.parse_args()

    data = Path(args.data)
    faces = read_boxes(data / "boxes.csv")
    names = sorted(faces)
    if args.split != "all":
        names = [n for n in names if photo_split(n, args.eval_fraction) == (args.split == "eval")]
    names = names[: args.limit]
    pipe = Pipeline.from_pretrained(args.pipeline, backend=args.backend)
    changes = {k: v for k, v in (("scene", args.scene_mode), ("min_face_size", args.min_face_size),
                                 ("min_face_fraction", args.min_face_fraction),
                                 ("thresholds", tuple(args.thresholds) if args.thresholds else None)) if v is not None}
    pipe.detector_settings = replace(pipe.detector_settings, **changes)
    print(f"{len(names)} photos ({args.split}), detector {pipe.detector_settings.to_dict()}", flush=True)

    paths = [str(data / "images" / n) for n in names]
    if args.video:
        return video(pipe, paths, [faces[n] for n in names], args.refresh, args.json, args.smooth)
    pipe.predict_all_faces(paths[:2])  # load the models and export before timing
    start = time.time()
    results = pipe.predict_all_faces(paths, batch_size=8)
    seconds = time.time() - start
    score, errors = SceneScore(), []
    for name, path, preds in zip(names, paths, results):
        found = [p for p in preds if p.face_box is not None]
        pairs = score.add(faces[name], [p.face_box for p in found], [p.mask for p in found])
        if args.errors:
            errors += _errors(path, faces[name], found, pairs)
    r = score.report()
    r.update(photos=len(names), photos_per_s=len(names) / seconds, detector=pipe.detector_settings.to_dict())
    print(format_report("scenes", r))
    print(f"  {len(names)} photos in {seconds:.1f} s: {r['photos_per_s']:.2f} photos/s")
    if args.errors:
        save_errors(Path(args.errors), errors)
        print(f"  error grids in {args.errors}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))


def video(pipe: Pipeline, paths: list[str], truth: list[list[LabelledFace]], refreshes: list[int],
          json_path: str | None, smooths: Sequence[float] = (0.0,), frames_per_photo: int = 16) -> None:
    """Score ``predict_video`` on a moving camera's mp4 of the photos, once per refresh and smooth value."""
    import tempfile

    from canvas import view_box, write_camera_video
    from maskage.images import load_image

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenes.mp4"
        views = write_camera_video(path, (load_image(p) for p in paths), frames_per_photo)
        frame_truth = []  # per frame, the labelled faces as it shows them
        for faces, photo_views in zip(truth, views):
            for view in photo_views:
                moved = [(view_box(f.box, view), f.mask) for f in faces]
                frame_truth.append([LabelledFace(b, m) for b, m in moved if b is not None])
        list(pipe.predict_video(path, limit=4))  # load the models and export before timing
        for refresh, smooth in itertools.product(refreshes, smooths):
            score, start = SceneScore(), time.time()
            for f in pipe.predict_video(path, refresh=refresh, smooth=smooth):
                score.add(frame_truth[f.index], [p.face_box for p in f.predictions], [p.mask for p in f.predictions])
            r = score.report()
            r.update(frames=len(frame_truth), frames_per_s=len(frame_truth) / (time.time() - start))
            print(format_report(f"video, refresh {refresh}, smooth {smooth}", r))
            print(f"  {len(frame_truth)} frames of {len(paths)} photos: {r['frames_per_s']:.2f} frames/s", flush=True)
            out[f"refresh_{refresh}_smooth_{smooth}"] = r
    if json_path:
        Path(json_path).write_text(json.dumps(out, indent=1))


def _errors(path: str, truth, found, pairs) -> list:
    """(confidence, crop, true state, predicted state or "missed") for each wrongly called or missed face, and
    (detector score, crop, "unmatched", predicted state) for each detection that matches no labelled face."""
    from maskage.detect.faces import crop_face
    from maskage.images import load_image

    img = load_image(path)
    matched = dict(pairs)
    out = []
    for i, t in enumerate(truth):
        crop = crop_face(img, t.box)
        if i not in matched:
            out.append((t.side / 1000, crop, t.mask, "missed"))  # biggest misses first
        elif found[matched[i]].mask != t.mask:
            p = found[matched[i]]
            out.append((p.mask_probs[p.mask], crop, t.mask, p.mask))
    taken = set(matched.values())
    for j, p in enumerate(found):
        if j not in taken:
            out.append((p.face_prob or 0.0, crop_face(img, p.face_box), "unmatched", p.mask))
    return out


if __name__ == "__main__":
    main()
