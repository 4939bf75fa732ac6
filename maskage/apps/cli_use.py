"""The ``maskage`` commands that use a pipeline: predict, submit, pseudo, export, calibrate, evaluate, serve, demo."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import UsageError
from ..pipeline.outputs import evenly, expand_inputs
from .cli_options import BACKEND_HELP, add_batch_options, add_pipelines_args, predictor


def cmd_predict(args: argparse.Namespace) -> int:
    """Photos: a table on stdout (``--json``: JSON), or rows into ``--out`` (CSV or JSON); videos and cameras: rows
    into ``--out``."""
    from ..pipeline.outputs import format_table, photo_records, predict_files
    from ..pipeline.video import is_video

    videos = [i for i in args.inputs if is_video(i)]
    if args.camera is not None or videos:
        return _predict_video(args, videos)
    if args.every != 1 or args.limit is not None or args.refresh is not None:
        raise UsageError("--every, --limit and --refresh are for videos and cameras")
    if not args.inputs:
        raise UsageError("give photos or folders of photos (or one video, or --camera N)")
    if args.format and not args.out:
        raise UsageError("--format sets the file type of --out; for JSON on stdout use --json")
    if args.ray is not None:
        return _predict_ray(args)
    if args.actors is not None:
        raise UsageError("--actors is for --ray")
    paths = expand_inputs(args.inputs)
    if not paths:
        print("error: no images found in the given paths", file=sys.stderr)
        return 2
    if args.all_faces and len(args.pipeline or []) > 1:
        raise UsageError("--all-faces works with one pipeline, not an ensemble")
    preds = predict_files(paths, Path(args.out) if args.out else None, predictor(args),
                          Path(args.annotate) if args.annotate else None, args.batch_size, args.all_faces,
                          progress=not args.quiet, fmt=args.format)
    if args.json:
        print(json.dumps(photo_records(paths, preds), indent=2))
    elif not args.out:
        print(format_table(preds))
    if args.out:
        firsts = [faces[0] for faces in preds] if args.all_faces else preds
        n_err = sum(1 for p in firsts if p.error)
        n_noface = sum(1 for p in firsts if not p.error and p.face_box is None)
        print(f"{len(firsts)} image(s) -> {args.out} ({n_err} error(s), {n_noface} without a detected face)",
              file=sys.stderr if args.json else sys.stdout)
    return 0


def _predict_ray(args: argparse.Namespace) -> int:
    from .cluster import predict_on_ray

    if not args.out or args.json or args.annotate or len(args.pipeline or []) > 1:
        raise UsageError("--ray writes rows into --out rows.parquet (or .csv), with one pipeline; no --json or --annotate")
    report = predict_on_ray(args.inputs, args.out, (args.pipeline or [None])[0], address=args.ray or None,
                            all_faces=args.all_faces, batch_size=args.batch_size, actors=args.actors,
                            backend=args.backend)
    print(report)
    return 0


def _predict_video(args: argparse.Namespace, videos: list[str]) -> int:
    from ..pipeline.outputs import predict_video_to_csv

    if len(args.inputs) + (args.camera is not None) != 1:
        raise UsageError("give one video file or --camera N, on its own (photos go in a separate call)")
    if not args.out or args.json:
        raise UsageError("a video's rows (one per face per frame) go into a CSV file: add --out rows.csv")
    if len(args.pipeline or []) > 1:
        raise UsageError("videos work with one pipeline, not an ensemble")
    source = args.camera if args.camera is not None else videos[0]
    seen = predict_video_to_csv(predictor(args), source, args.out, args.annotate, args.every, args.limit,
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
    n = write_submission(Path(args.eval_dir), Path(args.out), predictor(args), args.batch_size, ids,
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
        calibration = evenly(expand_inputs(args.calibration), args.calibration_limit)
    tasks = args.tasks or ["mask", "gender", "age"]
    d = Pipeline.from_pretrained(args.pipeline_dir, backend="torch").export_onnx(
        args.pipeline_dir, int8=int8, calibration=calibration, tasks=tasks, weight_bits=args.weight_bits)
    which = "" if int8 is True else f" for {', '.join(int8)}" if int8 else ""
    kind = f"int8{which} ({args.weight_bits}-bit weights, calibrated on {len(calibration)} photos)" if int8 else "float32"
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


def cmd_serve(args: argparse.Namespace) -> int:
    if args.ray is not None:
        from .cluster import serve_on_ray

        serve_on_ray(args.host, args.port, args.replicas, args.pipeline, args.backend,
                     address=args.ray or None, max_batch=args.max_batch, max_queue=args.max_queue)
        return 0
    if args.replicas != 1:
        raise UsageError("--replicas is for --ray (one process serves without it)")
    from .serve import serve

    serve(args.host, args.port, args.pipeline, args.backend, max_batch=args.max_batch, max_queue=args.max_queue)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo, run_predict_demo

    if args.train:
        run_demo(args.out, n_people=args.people, epochs=args.epochs, progress=not args.quiet)
    else:
        run_predict_demo(args.out, args.pipeline)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # long: a flat block of declarations per command, as --help
    """Add the prediction commands' parsers."""
    p = sub.add_parser("predict", help="predict photos or folders of photos (a table, or rows into --out), a video or "
                       "a camera")
    p.add_argument("inputs", nargs="*", help="photos, folders of photos, or one video file (.mp4, .avi, ...)")
    add_pipelines_args(p)
    p.add_argument("--out", metavar="FILE", help="write the rows into FILE: CSV, or JSON when it ends in .json (or "
                   "as --format says); without it photos' predictions are printed as a table")
    p.add_argument("--format", choices=("csv", "json"), help="--out's file type (default: from its suffix)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON on stdout (for scripts)")
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
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="predict on a Ray cluster (ADDRESS, e.g. "
                   "auto or ray://head:10001; none: a local one for the job) into --out rows.parquet or rows.csv (a "
                   "folder of parts; also list files and s3://... folders as inputs); needs pip install 'maskage[ray]'")
    p.add_argument("--actors", type=int, metavar="N", help="--ray: actors in the pool (default: the cluster's CPUs "
                   "less one, one CPU each)")
    add_batch_options(p)
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto", help=BACKEND_HELP)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("submit", help="predict a competition eval folder into ImageID,ans")
    p.add_argument("eval_dir", help="folder holding info.csv and images/")
    add_pipelines_args(p)
    p.add_argument("--out", required=True)
    add_batch_options(p)
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto", help=BACKEND_HELP)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("pseudo", help="pseudo-label unlabelled photos with a pipeline, for training "
                       "(pseudo_labels=CSV pseudo_threshold=P)")
    p.add_argument("inputs", nargs="+", help="photos or folders of photos")
    p.add_argument("--pipeline", help="pipeline directory (default: the one shipped with maskage)")
    p.add_argument("--out", required=True, help="CSV of labels and their confidences")
    add_batch_options(p)
    p.set_defaults(func=cmd_pseudo)

    p = sub.add_parser("export", help="export a pipeline's three models to ONNX (run by ONNX Runtime afterwards)")
    p.add_argument("pipeline_dir")
    p.add_argument("--int8", nargs="*", choices=("mask", "gender", "age"), metavar="TASK",
                   help="quantise to int8, every model or the TASKs named (mask, gender, age): faster, at an "
                        "accuracy cost to measure (benchmarks/cross_source.py)")
    p.add_argument("--weight-bits", type=int, choices=(7, 8), default=7,
                   help="int8 weights: 7 (8 in depthwise convolutions) give the same numbers on every CPU; 8 run as "
                        "int8 only on CPUs with VNNI or ARM, elsewhere as float32 (default: 7)")
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
    add_batch_options(p)
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("evaluate", help="score predictions against ground truth")
    p.add_argument("pred_csv", help="ImageID,ans (from submit) or path,class (from predict)")
    p.add_argument("gt_csv", help="ImageID,ans")
    p.add_argument("--json", help="also write the scores as JSON here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("serve", help="an HTTP API (POST /predict, GET /health, /docs) and a web page (GET /) "
                                     "for the entrance desk")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--pipeline", help="pipeline directory (default: the one shipped with maskage)")
    p.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    p.add_argument("--max-batch", type=int, default=16, help="images run together from concurrent requests")
    p.add_argument("--max-queue", type=int, default=32, help="requests waiting before 503 answers")
    p.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="serve on Ray Serve (a running cluster's "
                   "ADDRESS, e.g. auto; none: a local one); needs pip install 'maskage[ray]'")
    p.add_argument("--replicas", type=int, default=1, help="--ray: copies of the service behind Serve's proxy")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="predict a bundled photo and masked variants of it (--train: the training job "
                                     "on a generated dataset)")
    p.add_argument("--out", default="demo_out")
    p.add_argument("--pipeline", help="pipeline directory (default: the one shipped with maskage)")
    p.add_argument("--train", action="store_true", help="train 3 tasks on generated data, assemble, submit, score")
    p.add_argument("--people", type=int, default=24, help="--train: generated training people (default 24)")
    p.add_argument("--epochs", type=int, default=None, help="--train: epochs per task (default 4)")
    p.add_argument("--quiet", action="store_true", help="--train: no progress bars")
    p.set_defaults(func=cmd_demo)
