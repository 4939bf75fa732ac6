"""Mask state on real photos: the shipped pipeline and candidates side by side, paired, with intervals by photo.

    .venv/bin/python benchmarks/real_masks.py [--pipeline NAME=DIR ...] [--sets faces scenes sources]
        [--holdout 0.2] [--errors DIR] [--review CSV] [--json out.json]

Sets (each held out of every maskage recipe):
  faces    ``facemask_faces``: the faces of the held-out share of its photos (a fixed hash of the photo id,
           ``data.source_samples(..., "holdout")``); each face as prediction frames it: the portrait detector on the
           crop, the detection that overlaps the labelled box (IoU >= 0.3), else the labelled box (how often is
           printed). All sizes, and faces >= 40 px in the source photo (``face_px``).
  scenes   ``facemask_scenes`` eval half: every face (``predict_all_faces``), found faces matched to the labelled boxes.
  sources  MaskedFace-Net + RMFD, held-out people: the largest face of each photo (``predict``).
Per set and pipeline: mask-state macro F1 and incorrect recall with 95% bootstrap intervals (photos resampled: the
faces of one photo go together), recall per state, the confusion matrix (rows true, columns predicted: wear,
incorrect, not_wear), and each candidate's paired difference from the first pipeline (the shipped one unless
``--pipeline`` names others first). ``--errors DIR``: per pipeline and true state, a grid of its most confident
errors (``DIR/NAME/SET_STATE.png``), and every error listed (``DIR/NAME/SET_errors.csv``: face, true, predicted,
probability) so that its label can be checked. ``--review CSV`` (``file,mask,note``: held-out ``facemask_faces`` files
a reviewer labels otherwise; ``benchmarks/reviews/``): the faces set is scored again with those labels, beside the
source's own (which stay the headline figures).

Targets: faces >= 40 px incorrect recall >= 0.85 and macro F1 >= 0.92 (all sizes reported); scenes eval half F1
>= 0.90, incorrect recall >= 0.80; MaskedFace-Net + RMFD F1 >= 0.97.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maskage.training.data import source_samples  # noqa: E402
from maskage.detect.faces import HINT_IOU, box_iou, crop_face, pick_face  # noqa: E402
from maskage.images import load_image  # noqa: E402
from maskage.labels import MASK_LABELS  # noqa: E402
from maskage.metrics import interval, resamples  # noqa: E402
from maskage.pipeline.core import Pipeline  # noqa: E402
from maskage.pipeline.scenes import match, photo_split, read_boxes  # noqa: E402
from maskage.tables import read_csv_rows  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
SOURCES = ["maskedfacenet/correct=wear", "maskedfacenet/incorrect=incorrect",
           "rmfd/with_mask=wear", "rmfd/without_mask=not_wear"]
K = len(MASK_LABELS)


def confusions(groups: np.ndarray, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per group (photo), the K x K confusion counts: (G, K, K) for group ids 0..G-1."""
    out = np.zeros((groups.max() + 1 if len(groups) else 0, K, K))
    np.add.at(out, (groups, truth, pred), 1)
    return out


def macro_f1(conf: np.ndarray) -> np.ndarray:
    """Macro F1 over the K states of confusion matrices (..., K, K); a state absent from truth and guesses
    counts 0, as scikit-learn's ``labels=`` with ``zero_division=0``."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    wrong = conf.sum(-1) + conf.sum(-2) - 2 * tp
    return (np.where(2 * tp + wrong > 0, 2 * tp / np.maximum(2 * tp + wrong, 1), 0)).mean(-1)


def recall(conf: np.ndarray, k: int) -> np.ndarray:
    return conf[..., k, k] / np.maximum(conf[..., k, :].sum(-1), 1)


def bootstrap(per_group: list[np.ndarray], rounds: int = 1000, seed: int = 0) -> np.ndarray:
    """Summed confusions of ``rounds`` resamples of the groups, the same resamples for every pipeline:
    (pipelines, rounds, K, K)."""
    n = per_group[0].shape[0]
    idx = resamples(n, rounds, seed)
    weights = np.stack([np.bincount(r, minlength=n) for r in idx]).astype(float)
    return np.stack([np.einsum("rg,gij->rij", weights, c) for c in per_group])


def report(name: str, names: list[str], groups: np.ndarray, truth: np.ndarray, preds: list[np.ndarray]) -> dict:
    """Print and return one set's figures for every pipeline, paired against the first."""
    per_group = [confusions(groups, truth, p) for p in preds]
    boot = bootstrap(per_group)
    inc = MASK_LABELS.index("incorrect")
    out = {}
    print(f"{name}: {len(truth)} faces of {len(np.unique(groups))} photos "
          f"({', '.join(f'{m} {int((truth == k).sum())}' for k, m in enumerate(MASK_LABELS))})")
    for j, pipe_name in enumerate(names):
        conf = per_group[j].sum(0)
        f1, rec = float(macro_f1(conf)), float(recall(conf, inc))
        entry = {"mask_f1": f1, "mask_f1_ci": interval(macro_f1(boot[j])),
                 "incorrect_recall": rec, "incorrect_recall_ci": interval(recall(boot[j], inc)),
                 "recall": {m: float(recall(conf, k)) for k, m in enumerate(MASK_LABELS)},
                 "confusion": conf.astype(int).tolist()}
        line = (f"  {pipe_name:<12} F1 {f1:.3f} [{entry['mask_f1_ci'][0]:.3f}-{entry['mask_f1_ci'][1]:.3f}]  "
                f"incorrect recall {rec:.3f} [{entry['incorrect_recall_ci'][0]:.2f}-"
                f"{entry['incorrect_recall_ci'][1]:.2f}]  recall " +
                " / ".join(f"{entry['recall'][m]:.3f}" for m in MASK_LABELS) +
                f"  confusion {entry['confusion']}")
        if j:
            d_f1, d_rec = macro_f1(boot[j]) - macro_f1(boot[0]), recall(boot[j], inc) - recall(boot[0], inc)
            entry.update(paired_f1=f1 - out[names[0]]["mask_f1"], paired_f1_ci=interval(d_f1),
                         paired_recall=rec - out[names[0]]["incorrect_recall"], paired_recall_ci=interval(d_rec))
            line += (f"\n  {'':<12} vs {names[0]}: F1 {entry['paired_f1']:+.3f} [{entry['paired_f1_ci'][0]:+.3f}, "
                     f"{entry['paired_f1_ci'][1]:+.3f}], incorrect recall {entry['paired_recall']:+.3f} "
                     f"[{entry['paired_recall_ci'][0]:+.3f}, {entry['paired_recall_ci'][1]:+.3f}]")
        print(line, flush=True)
        out[pipe_name] = entry
    return out


def read_review(path: Path) -> dict[str, int]:
    """A label review: ``file`` (as in ``facemask_faces/faces.csv``) -> the state a reviewer gives it."""
    review = {}
    for line, row in enumerate(read_csv_rows(path, ["file", "mask"]), start=2):
        if row["mask"] not in MASK_LABELS:
            raise SystemExit(f"{path} line {line}: mask {row['mask']!r} is not one of {', '.join(MASK_LABELS)}")
        review[row["file"]] = MASK_LABELS.index(row["mask"])
    return review


def reviewed(files: list[str], truth: np.ndarray, review: dict[str, int]) -> np.ndarray:
    """The labels with a review's applied; every reviewed file must be one of ``files`` (else the review is stale)."""
    index = {f: i for i, f in enumerate(files)}
    if missing := sorted(set(review) - set(index)):
        raise SystemExit(f"the review names {len(missing)} file(s) not in this set, e.g. {missing[0]}")
    out = truth.copy()
    for f, state in review.items():
        out[index[f]] = state
    return out


def face_set(pipes: dict[str, Pipeline], holdout: float):
    """The held-out ``facemask_faces``: per pipeline the predicted states, and each face's photo, size, crop, file."""
    folder = SHARED / "facemask_faces"
    samples = source_samples([f"{folder}=faces.csv"], "holdout", holdout)
    face_px = {str(folder / r["file"]): float(r["face_px"]) for r in read_csv_rows(folder / "faces.csv", ["face_px"])}
    arrays = [load_image(s.path) for s in samples]
    preds, detected = {}, None
    for name, pipe in pipes.items():
        found = pipe.detector.detect_all(arrays)  # the portrait detector, as `maskage predict` runs on these crops
        boxes = [pick_face(d, s.box) for d, s in zip(found, samples)]
        detected = np.mean([box_iou(b, s.box) >= HINT_IOU and b != tuple(map(float, s.box))
                            for b, s in zip(boxes, samples)])
        got = pipe.predict_boxes(arrays, boxes)
        preds[name] = (np.array([MASK_LABELS.index(p.mask) for p in got]), np.array([p.mask_probs[p.mask] for p in got]))
    print(f"facemask_faces: the portrait detector found the labelled face in {detected:.1%} of the held-out faces "
          "(the labelled box framed the rest)")
    crops = [crop_face(a, s.box) for a, s in zip(arrays, samples)]
    return ([s.person for s in samples], np.array([s.mask for s in samples]), preds, crops,
            np.array([face_px[s.path] for s in samples]), [str(Path(s.path).relative_to(folder)) for s in samples])


def scene_set(pipes: dict[str, Pipeline]):
    """The scenes' eval half: found faces, matched to labelled boxes by the first pipeline's detector (the
    detector is the pipelines' shared one unless they differ)."""
    data = SHARED / "facemask_scenes"
    faces = read_boxes(data / "boxes.csv")
    names = [n for n in sorted(faces) if photo_split(n, 0.5)]
    paths = [str(data / "images" / n) for n in names]
    groups, truth, crops, preds, ids = [], [], [], {}, []
    for j, (name, pipe) in enumerate(pipes.items()):
        states, confs = [], []
        for img_name, path, found in zip(names, paths, pipe.predict_all_faces(paths, batch_size=8)):
            found = [p for p in found if p.face_box is not None]
            for i, k in match([t.box for t in faces[img_name]], [p.face_box for p in found]):
                states.append(MASK_LABELS.index(found[k].mask))
                confs.append(found[k].mask_probs[found[k].mask])
                if j == 0:
                    groups.append(img_name)
                    ids.append(f"{img_name}#{i}")
                    truth.append(MASK_LABELS.index(faces[img_name][i].mask))
                    crops.append(crop_face(load_image(path), faces[img_name][i].box))
        if len(states) != len(truth):
            raise SystemExit(f"{name} found other faces than the first pipeline; compare pipelines with one detector")
        preds[name] = (np.array(states), np.array(confs))
    return groups, np.array(truth), preds, crops, ids


def source_set(pipes: dict[str, Pipeline], holdout: float):
    samples = source_samples([f"{SHARED / e.split('=')[0]}={e.split('=')[1]}" for e in SOURCES], "holdout", holdout)
    paths = [s.path for s in samples]
    preds = {}
    for name, pipe in pipes.items():
        got = pipe.predict(paths, batch_size=64)
        preds[name] = (np.array([MASK_LABELS.index(p.mask) for p in got]), np.array([p.mask_probs[p.mask] for p in got]))
    crops = [crop_face(load_image(p), None) for p in paths]
    return ([s.person for s in samples], np.array([s.mask for s in samples]), preds, crops,
            [str(Path(p).relative_to(SHARED)) for p in paths])


def save_errors(out: Path, set_name: str, truth: np.ndarray, preds: dict, crops: list, ids: list[str],
                per_state: int = 32) -> None:
    """Per pipeline and true state, the most confident errors as a captioned grid; every error listed in a CSV in
    the grids' order (by true state, the most confident first)."""
    from PIL import Image

    from maskage.atomic import write_csv_atomic
    from maskage.pipeline.visualize import captioned_grid

    for name, (states, confs) in preds.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        rows = []
        for k, state in enumerate(MASK_LABELS):
            wrong = np.flatnonzero((truth == k) & (states != k))
            wrong = wrong[np.argsort(-confs[wrong], kind="stable")]
            rows += [[ids[i], state, MASK_LABELS[states[i]], f"{confs[i]:.3f}"] for i in wrong]
            if len(wrong):
                tiles = [(Image.fromarray(crops[i]), f"->{MASK_LABELS[states[i]]} {confs[i]:.2f}")
                         for i in wrong[:per_state]]
                captioned_grid(tiles, columns=8, tile=96).save(out / name / f"{set_name}_{state}.png")
        write_csv_atomic(out / name / f"{set_name}_errors.csv", ["face", "true", "predicted", "probability"], rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pipeline", action="append", default=[], metavar="NAME=DIR",
                    help="a pipeline to score (repeat; the first is the baseline); default: shipped=the shipped one")
    ap.add_argument("--sets", nargs="+", choices=("faces", "scenes", "sources"), default=["faces", "scenes", "sources"])
    ap.add_argument("--holdout", type=float, default=0.2, help="the recipes' source_holdout")
    ap.add_argument("--errors", metavar="DIR", help="save grids of each pipeline's worst errors per true state here")
    ap.add_argument("--review", metavar="CSV", help="labels a reviewer gives some held-out facemask_faces files "
                    "(file,mask,note): the faces set scored again with them")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    entries = args.pipeline or ["shipped="]
    pipes = {}
    for e in entries:
        name, _, folder = e.partition("=")
        pipes[name] = Pipeline.from_pretrained(folder or None)
    names = list(pipes)
    results = {}
    if "faces" in args.sets:
        groups, truth, preds, crops, px, files = face_set(pipes, args.holdout)
        gid = np.unique(groups, return_inverse=True)[1]
        big = px >= 40
        labels = [("", truth)]
        if args.review:
            review = read_review(Path(args.review))
            labels.append((", reviewed labels", reviewed(files, truth, review)))
            print(f"review {args.review}: {len(review)} labels changed, "
                  f"{int((labels[1][1] != truth)[big].sum())} of them on faces >= 40 px")
        for suffix, y in labels:
            key = "_reviewed" if suffix else ""
            results[f"faces{key}"] = report(f"facemask_faces held out, all sizes{suffix}", names, gid, y,
                                            [preds[n][0] for n in names])
            results[f"faces_40px{key}"] = report(f"facemask_faces held out, faces >= 40 px{suffix}", names,
                                                 np.unique(gid[big], return_inverse=True)[1], y[big],
                                                 [preds[n][0][big] for n in names])
        if args.errors:
            save_errors(Path(args.errors), "faces", truth, preds, crops, files)
    if "scenes" in args.sets:
        groups, truth, preds, crops, ids = scene_set(pipes)
        results["scenes_eval"] = report("facemask_scenes eval half, found faces", names,
                                        np.unique(groups, return_inverse=True)[1], truth, [preds[n][0] for n in names])
        if args.errors:
            save_errors(Path(args.errors), "scenes", truth, preds, crops, ids)
    if "sources" in args.sets:
        groups, truth, preds, crops, ids = source_set(pipes, args.holdout)
        results["sources"] = report("MaskedFace-Net + RMFD held-out people", names,
                                    np.unique(groups, return_inverse=True)[1], truth, [preds[n][0] for n in names])
        if args.errors:
            save_errors(Path(args.errors), "sources", truth, preds, crops, ids)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
