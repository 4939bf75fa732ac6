"""Building a competition-style dataset from unmasked faces: each person's photos with masks drawn on
(``training.masks``), split by person into train and eval folders."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from ..atomic import write_csv_atomic
from ..errors import UsageError
from ..images import IMAGE_EXTENSIONS, ImageError, load_image
from ..labels import MASK_FILE_STEMS, age_to_group, encode
from ..progress import bar
from .masks import CORRECT, INCORRECT_KINDS, NOSE_EXPOSED, ONE_EAR, UNDER_CHIN, draw_mask
from .sources import FaceRecord, held_out, read_sources

RACES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Other"}
GENDERS = {0: "male", 1: "female"}


# ------------------------------------------------------------------------------------------------ dataset builder

_UTK = re.compile(r"^(\d+)_([01])_(\d)_")


def parse_utkface_name(name: str) -> FaceRecord | None:
    """Labels from a UTKFace file name ``AGE_GENDER_RACE_*.jpg``; None when the name does not follow it."""
    m = _UTK.match(Path(name).name)
    if not m:
        return None
    return FaceRecord(name, int(m.group(1)), int(m.group(2)), int(m.group(3)))


def read_faces(faces_dir: str | Path, labels_csv: str | Path | None = None) -> tuple[list[FaceRecord], list[str]]:
    """The face photos of a folder with their labels, and the names that could not be labelled.

    Labels come from UTKFace-style names, or from a CSV with columns ``path,age,gender[,race]`` (path relative
    to the folder; gender 0/1 or male/female; race a number as UTKFace's or empty).
    """
    from ..tables import read_csv_rows
    from ..labels import gender_from_text

    root = Path(faces_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"faces folder {root} not found")
    unlabelled: list[str] = []
    records: list[FaceRecord] = []
    if labels_csv:
        for line, row in enumerate(read_csv_rows(Path(labels_csv), ["path", "age", "gender"]), start=2):
            try:
                race = row.get("race", "").strip()
                records.append(FaceRecord(str(root / row["path"].strip()), int(float(row["age"])),
                                          gender_from_text(row["gender"]), int(race) if race else None))
            except ValueError as exc:
                raise UsageError(f"{labels_csv} line {line}: {exc}") from None
        return records, unlabelled
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        rec = parse_utkface_name(p.name)
        if rec is None:
            unlabelled.append(p.name)
        else:
            records.append(FaceRecord(str(p), rec.age, rec.gender, rec.race))
    return records, unlabelled


SCENE_SIZE = (384, 512)  # (width, height) of the competition's photos
SCENE_SIDES = (150, 320)  # side in pixels the face photo is resized to in a scene
SCENE_KINDS = ("plain", "gradient", "blotches", "noise")


def in_scene(images: Sequence[np.ndarray], rng: np.random.Generator, size: tuple[int, int] = SCENE_SIZE,
             sides: tuple[int, int] = SCENE_SIDES) -> tuple[list[np.ndarray], str]:
    """Square face photos of one size (one person's photos) resized to a random side in ``sides`` and pasted at
    one random place on one ``size`` (width, height) background of a random kind (``SCENE_KINDS``): the
    competition's framing, where a face crop's margin shows background instead of UTKFace's repeated border.
    Returns a scene per photo and the background's kind."""
    width, height = size
    if not 0 < sides[0] <= sides[1] <= min(width, height):
        raise UsageError(f"face sides {sides} must be positive and fit in a {width}x{height} scene")
    kind = SCENE_KINDS[int(rng.integers(len(SCENE_KINDS)))]
    a, b = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    if kind == "plain":
        bg = np.broadcast_to(a, (height, width, 3)).astype(np.float32)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = xx / width * np.cos(angle) + yy / height * np.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        bg = a + (b - a) * t[..., None]
    elif kind == "blotches":  # a smooth random colour field: walls, curtains, out-of-focus rooms
        coarse = rng.uniform(20, 235, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)).astype(np.float32)
        bg = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    else:
        bg = np.broadcast_to(a, (height, width, 3)) + rng.normal(0, rng.uniform(5, 25), (height, width, 1))
    background = np.clip(bg, 0, 255).astype(np.uint8)
    side = int(rng.integers(sides[0], sides[1] + 1))
    x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    scenes = []
    for image in images:
        scene = background.copy()
        scene[y : y + side, x : x + side] = cv2.resize(
            image, (side, side), interpolation=cv2.INTER_AREA if side < image.shape[0] else cv2.INTER_LINEAR)
        scenes.append(scene)
    return scenes, kind


def _person_seed(seed: int, path: str) -> int:
    return int.from_bytes(hashlib.sha1(f"{seed}:{Path(path).name}".encode()).digest()[:8], "little")


@dataclass
class BuildReport:
    out: Path
    n_train_people: int
    n_eval_people: int
    skipped: list[tuple[str, str]]  # (photo, why)
    unlabelled: list[str]


def _records(faces_dir: str | Path | Sequence[str], labels_csv: str | Path | None, races: Sequence[int] | None,
             min_age: int, max_age: int, limit: int) -> tuple[list[FaceRecord], list[str]]:
    """The labelled faces a build uses (a folder, or ``NAME=DIR`` sources; unknown ages kept for sources) and the
    names that carry no labels."""
    sourced = not isinstance(faces_dir, (str, Path))
    if sourced:
        records, unlabelled = read_sources(faces_dir)
    else:
        records, unlabelled = read_faces(faces_dir, labels_csv)
    records = [r for r in records if (min_age <= r.age <= max_age or (sourced and r.age < 0))
               and (not races or r.race in races)]
    records = records[:limit] if limit else records
    if not records:
        raise UsageError(f"no faces in {faces_dir} pass the filters (races={races}, ages {min_age}..{max_age})")
    return records, unlabelled


def _person_photos(img: np.ndarray, det, stems: Sequence[str], pseed: int, chin_share: float,
                   textures: Sequence[np.ndarray] | None = None,
                   texture_share: float = 0.5, chin_low: float = 0.0,
                   ear_share: float = 0.0) -> tuple[dict[str, np.ndarray], str]:
    """One person's photos by stem (five correct masks, the incorrect one, the bare photo) and how the incorrect
    mask is worn. Each mask has its own seed, so photos left out of ``stems`` change none of the others."""
    drawn: dict[str, np.ndarray] = {}
    for j in range(1, 6):
        if f"mask{j}" in stems:
            drawn[f"mask{j}"] = draw_mask(img, det.landmarks, det.box, CORRECT, pseed + j, textures, texture_share).image
    kind = NOSE_EXPOSED if np.random.default_rng(pseed).random() < 1.0 - chin_share else UNDER_CHIN
    if ear_share and np.random.default_rng([pseed, 4]).random() < ear_share:  # its own stream: 0 changes nothing
        kind = ONE_EAR
    if "incorrect_mask" in stems:
        drawn["incorrect_mask"] = draw_mask(img, det.landmarks, det.box, kind, pseed + 6, textures, texture_share,
                                             chin_low).image
    drawn["normal"] = img
    return drawn, kind


def _race_name(r: FaceRecord) -> str:
    return RACES.get(r.race, "Unknown") if r.race is not None else "Unknown"


def _write_eval_person(images: Path, r: FaceRecord, pid: str, drawn: dict[str, np.ndarray], stems: Sequence[str],
                       kind: str, seed: int, extra: list) -> list[list]:
    """An eval person's photos under hashed names (nothing in a name tells its label); their meta.csv rows."""
    rows = []
    for stem in stems:
        name = hashlib.sha1(f"{seed}:{pid}:{stem}".encode()).hexdigest()[:20] + ".jpg"
        Image.fromarray(drawn[stem]).save(images / name, quality=95)
        mask = MASK_FILE_STEMS[stem]
        rows.append([name, encode(mask, r.gender, age_to_group(r.age)), pid, int(mask), r.gender, r.age, _race_name(r),
                     kind if stem == "incorrect_mask" else "", Path(r.path).name] + extra)
    return rows


def _write_train_person(images: Path, r: FaceRecord, pid: str, drawn: dict[str, np.ndarray], stems: Sequence[str],
                        kind: str, scene: str) -> list:
    """A training person's folder of photos named by stem (the competition layout); their train.csv row's start."""
    folder = f"{pid}_{GENDERS[r.gender]}_{_race_name(r)}_{r.age}"
    (images / folder).mkdir(exist_ok=True)
    for stem in stems:
        Image.fromarray(drawn[stem]).save(images / folder / f"{stem}.jpg", quality=95)
    return [pid, GENDERS[r.gender], _race_name(r), r.age, folder, kind, Path(r.path).name, scene]


def build_dataset(  # long: checks, then one pass over the people; steps kept in reading order
    faces_dir: str | Path | Sequence[str],
    out: str | Path,
    eval_fraction: float = 0.2,
    seed: int = 0,
    races: Sequence[int] | None = None,
    eval_races: Sequence[int] | None = None,
    min_age: int = 18,
    max_age: int = 200,
    labels_csv: str | Path | None = None,
    limit: int = 0,
    train_scenes: float = 0.0,
    progress: bool = True,
    photos: Sequence[str] | None = None,
    chin_share: float = INCORRECT_KINDS[UNDER_CHIN],
    textures: Sequence[np.ndarray] | None = None,
    texture_share: float = 0.5,
    chin_low: float = 0.0,
    eval_only: bool = False,
    ear_share: float = 0.0,
) -> BuildReport:
    """Write a competition-style dataset: ``out/train`` (train.csv, images/PERSON/{mask1..5,incorrect_mask,normal})
    and ``out/eval`` (images/, info.csv, gt.csv and meta.csv with each eval photo's person and labels).

    Each face photo becomes one person: five differently drawn correct masks, one incorrect mask (nose exposed or
    under the chin), and the photo itself unmasked. People go to eval with probability ``eval_fraction`` (only
    people of ``eval_races`` when given), decided per person by the seed. Faces without landmarks are listed in
    ``out/skipped.csv`` and left out.

    ``train_scenes``: the share of training people whose seven photos are pasted into a competition-sized scene
    (``in_scene``), so that models learn both UTKFace's tight framing and a face with background around it. Eval
    people keep the faces' own framing, so eval scores compare across builds. 0 (the default) writes the same
    photos as before the option existed.

    ``faces_dir`` may instead be a list of ``NAME=DIR`` sources (``maskage.sources``: utkface, aaf, lfw). Then each
    record keeps its source and person (train.csv's ``dataset`` and ``person`` columns, meta.csv's ``dataset`` and
    ``source_person``), ages may be unknown (-1, kept whatever ``min_age``), and a person goes to eval by a fixed hash
    of their key (``sources.held_out``), so builds with fewer sources hold out the same people.
    ``photos``: the subset of the seven photo names to write per person (train.csv's ``photos`` column lists them).
    gt.csv's class of a person of unknown age uses the <30 group; meta.csv keeps the age as -1.
    ``chin_share``: the share of incorrect masks worn under the chin (the rest: nose exposed).
    ``textures`` (``real_textures``): real mask fabrics, used for ``texture_share`` of the masks (``draw_mask``).
    ``chin_low``: the share of masks under the chin drawn pulled down further and crumpled (``draw_mask``).
    ``ear_share``: the share of incorrect masks drawn hanging from one ear instead (of either kind above).
    ``eval_only``: write the eval people only (the same people, ids and masks as a full build; a fifth of its
    time), for benchmarks that read nothing else.
    """
    from ..detect.faces import DetectorSettings, FaceDetector

    if not 0.0 <= eval_fraction < 1.0:
        raise UsageError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    for name, share in (("chin_share", chin_share), ("texture_share", texture_share), ("chin_low", chin_low),
                        ("train_scenes", train_scenes), ("ear_share", ear_share)):
        if not 0.0 <= share <= 1.0:
            raise UsageError(f"{name} must be in [0, 1], got {share}")
    sourced = not isinstance(faces_dir, (str, Path))
    records, unlabelled = _records(faces_dir, labels_csv, races, min_age, max_age, limit)
    stems = list(MASK_FILE_STEMS) if photos is None else [s for s in MASK_FILE_STEMS if s in set(photos)]
    if photos is not None and (not stems or len(stems) != len(set(photos))):
        raise UsageError(f"photos must name some of {', '.join(MASK_FILE_STEMS)}; got {list(photos)}")
    out = Path(out)
    for sub in ("train/images", "eval/images"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    split = rng.random(len(records))
    detector = FaceDetector(DetectorSettings(min_face_size=20, batch_size=32))
    train_rows, eval_rows, skipped = [], [], []
    chunk = 128
    def in_eval(index: int, r: FaceRecord) -> bool:
        return held_out(r.person, eval_fraction) if sourced else bool(split[index] < eval_fraction)

    todo = [(i, r) for i, r in enumerate(records) if not eval_only or in_eval(i, r)]
    drawing = bar(total=len(todo), desc="drawing masks", enabled=progress)
    for start in range(0, len(todo), chunk):
        part = todo[start : start + chunk]
        images, ok = [], []
        for index, r in part:
            try:
                images.append(load_image(r.path))
                ok.append((index, r))
            except ImageError as exc:
                skipped.append((r.path, str(exc)))
        for (index, r), img, det in zip(ok, images, detector.detect(images)):
            if det.landmarks is None:
                skipped.append((r.path, "no face landmarks found"))
                continue
            pseed = _person_seed(seed, r.path)
            pid = f"{index:06d}"
            to_eval = in_eval(index, r) and (not eval_races or r.race in eval_races)
            drawn, kind = _person_photos(img, det, stems, pseed, chin_share, textures, texture_share, chin_low,
                                         ear_share)
            extra = [r.source, r.person] if sourced else []
            if to_eval:
                eval_rows += _write_eval_person(out / "eval" / "images", r, pid, drawn, stems, kind, seed, extra)
            else:
                # its own stream, so that the option leaves the masks and the split as they were
                srng = np.random.default_rng([pseed, 1])
                scene = ""
                if train_scenes and srng.random() < train_scenes:  # one placement and background for all seven
                    scenes, scene = in_scene([drawn[stem] for stem in stems], srng)
                    drawn = dict(zip(stems, scenes))
                train_rows.append(_write_train_person(out / "train" / "images", r, pid, drawn, stems, kind, scene)
                                  + extra + ([";".join(stems)] if photos else []))
        drawing.update(len(part))
    drawing.close()
    _write_build_csvs(out, train_rows, eval_rows, skipped, sourced, bool(photos), seed)
    return BuildReport(out, len(train_rows), len(eval_rows) // len(stems), skipped, unlabelled)


def _write_build_csvs(out: Path, train_rows: list, eval_rows: list, skipped: list, sourced: bool, photos: bool,
                      seed: int) -> None:
    """A build's CSVs: train.csv, the eval split's info.csv / gt.csv / meta.csv (its photos in a seeded order, so
    that neighbouring IDs are not one person's), and skipped.csv."""
    write_csv_atomic(out / "train" / "train.csv", ["id", "gender", "race", "age", "path", "incorrect_kind", "source", "scene"]
                     + (["dataset", "person"] if sourced else []) + (["photos"] if photos else []), train_rows)
    order = np.random.default_rng(seed + 1).permutation(len(eval_rows))
    eval_rows = [eval_rows[i] for i in order]
    write_csv_atomic(out / "eval" / "info.csv", ["ImageID", "ans"], ([r[0], 0] for r in eval_rows))
    write_csv_atomic(out / "eval" / "gt.csv", ["ImageID", "ans"], ([r[0], r[1]] for r in eval_rows))
    write_csv_atomic(out / "eval" / "meta.csv",
                     ["ImageID", "ans", "person", "mask", "gender", "age", "race", "incorrect_kind", "source"]
                     + (["dataset", "source_person"] if sourced else []), eval_rows)
    write_csv_atomic(out / "skipped.csv", ["photo", "why"], skipped)
