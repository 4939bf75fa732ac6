"""The competition data layout, person-disjoint folds, task datasets and transforms."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import UsageError
from ..tables import DatasetError, read_csv_rows
from ..images import IMAGE_EXTENSIONS
from ..labels import (MASK_FILE_STEMS, UNKNOWN_AGE, AgeBins, Mask, age_to_group, cell, gender_from_text,
                     mask_from_filename)
from ..models.tasks import keeps_photo, task_kind
from ..models.transforms import preprocess
from .augment import TrainAugment, paste_occluder
from .how_worn import kind_from_name

TRAIN_COLUMNS = ("id", "gender", "race", "age", "path")


@dataclass(frozen=True)
class Sample:
    """One photo of the training set with its labels."""

    path: str
    person: str
    mask: int
    gender: int
    age: int
    race: str = ""  # train.csv's race column; "" for photos from elsewhere
    dataset: str = ""  # train.csv's dataset column (the source adapter's name), "" when it has none
    box: tuple[float, float, float, float] | None = None  # the labelled face in the photo (x0, y0, x1, y1), if given
    kind: str = ""  # how a mask worn wrongly sits (how_worn.HOW_WORN), where the source says; "" otherwise

    def age_group(self, threshold: int) -> int:
        return int(age_to_group(self.age, threshold))


def read_corrections(path: str | Path) -> dict[str, dict[str, str]]:
    """Label corrections keyed by person id: columns ``id`` and any of gender, age, swap_normal_incorrect."""
    rows = read_csv_rows(Path(path), ["id"])
    return {r["id"]: {k: v for k, v in r.items() if k != "id"} for r in rows}


def load_train_samples(data_dir: str | Path, corrections: str | Path | None = None) -> list[Sample]:
    """Every photo under ``data_dir/images`` listed by ``data_dir/train.csv``, with its labels."""
    root = Path(data_dir)
    rows = read_csv_rows(root / "train.csv", TRAIN_COLUMNS)
    fixes = read_corrections(corrections) if corrections else {}
    samples: list[Sample] = []
    seen: dict[str, int] = {}
    for line, row in enumerate(rows, start=2):
        pid = row["id"].strip()
        where = f"{root / 'train.csv'} line {line} (id {pid})"
        if pid in seen:
            raise DatasetError(f"{where}: duplicate id, first seen on line {seen[pid]}")
        seen[pid] = line
        fix = fixes.get(pid, {})
        try:
            gender = gender_from_text(fix.get("gender") or row["gender"])
            age = int(float(fix.get("age") or row["age"]))
        except ValueError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        if not (0 <= age <= 130 or age == UNKNOWN_AGE):
            raise DatasetError(f"{where}: age {age} is outside 0..130 (-1: unknown)")
        folder = root / "images" / row["path"].strip()
        if not folder.is_dir():
            raise DatasetError(f"{where}: image folder {folder} not found")
        # a build with fewer photos a person lists them (maskage synth --photos)
        stems = [x for x in row["photos"].split(";") if x] if row.get("photos") else list(MASK_FILE_STEMS)
        photos = _person_photos(folder, where, stems)
        pid = row.get("person") or pid  # a source's person key: several photos of one person stay in one fold
        swap = fix.get("swap_normal_incorrect", "").lower() in ("1", "true", "yes")
        kind = (row.get("incorrect_kind") or "").strip()  # a drawn build's incorrect photo: how its mask was drawn
        for p in photos:
            mask = mask_from_filename(p.name)
            if swap and mask != Mask.WEAR:
                mask = Mask.NOT_WEAR if mask == Mask.INCORRECT else Mask.INCORRECT
            samples.append(Sample(str(p), pid, int(mask), gender, age, row["race"].strip(), row.get("dataset", ""),
                                  kind=kind if mask == Mask.INCORRECT and not swap else ""))
    if not samples:
        raise DatasetError(f"{root / 'train.csv'}: no people listed")
    return samples


def filter_races(samples: Sequence[Sample], races: Sequence[str]) -> list[Sample]:
    """The samples of people whose race (train.csv's column, any case) is one of ``races``; all when it is empty."""
    if not races:
        return list(samples)
    wanted = {r.strip().lower() for r in races}
    present = {s.race.lower() for s in samples}
    missing = sorted(wanted - present)
    if missing:
        raise DatasetError(f"races={list(races)}: no one in train.csv is {', '.join(missing)} "
                           f"(its races: {', '.join(sorted({s.race for s in samples}))})")
    return [s for s in samples if s.race.lower() in wanted]


def filter_datasets(samples: Sequence[Sample], datasets: Sequence[str]) -> list[Sample]:
    """The samples of the given sources (train.csv's dataset column), all when ``datasets`` is empty: a run
    without a source, tested on that source's held-out people (leave-one-source-out)."""
    if not datasets:
        return list(samples)
    present = {s.dataset for s in samples}
    missing = sorted(set(datasets) - present)
    if missing:
        raise DatasetError(f"datasets={list(datasets)}: no photo in train.csv is from {', '.join(missing)} "
                           f"(its datasets: {', '.join(sorted(present)) or 'none; build from NAME=DIR sources'})")
    return [s for s in samples if s.dataset in set(datasets)]


def _person_photos(folder: Path, where: str, stems: Sequence[str] = tuple(MASK_FILE_STEMS)) -> list[Path]:
    """The photos of one person's folder (the seven, or the ``stems`` a build wrote); DatasetError naming what is
    missing, extra or doubled."""
    photos: dict[str, Path] = {}
    extra: list[str] = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):  # macOS resource forks and other hidden files
            continue
        stem = p.stem.lower()
        if p.suffix.lower() not in IMAGE_EXTENSIONS or stem not in stems:
            extra.append(p.name)
        elif stem in photos:
            raise DatasetError(f"{where}: two photos for {stem} in {folder}: {photos[stem].name} and {p.name}")
        else:
            photos[stem] = p
    missing = [s for s in stems if s not in photos]
    if missing or extra:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])
        raise DatasetError(f"{where}: {folder} must hold exactly {', '.join(stems)} (any image "
                           f"extension); {'; '.join(parts)}")
    return [photos[s] for s in sorted(photos)]


def task_samples(samples: Sequence[Sample], task: str, gender_age_photos: str = "wear") -> list[Sample]:
    """The photos a task trains on: all of them for mask; for gender and age the correctly masked ones
    (``gender_age_photos="wear"``) or all of them (``"all"``); the baselines all, as mask. Photos without the
    task's labels are left out (``tasks.keeps_photo``)."""
    kind = task_kind(task)
    return [s for s in samples if keeps_photo(kind, s, gender_age_photos)]


_HASH_SUFFIX = re.compile(r"_[0-9a-f]{8}$")
_TRAILING_NUMBER = re.compile(r"_\d+$")


def source_person(path: str | Path) -> str:
    """Who is in a photo of a labelled folder, from its file name, so that splits keep a person on one side.

    MaskedFace-Net names start with the FFHQ id (``01234_Mask_Chin.jpg``, one face in several mask states);
    RMFD-style names are ``NAME_NUMBER_HASH.jpg`` or ``NUMBER_HASH.jpg``.
    """
    stem = Path(path).stem
    if "_Mask" in stem:
        return stem.split("_", 1)[0]
    stem = _HASH_SUFFIX.sub("", stem)
    return _TRAILING_NUMBER.sub("", stem) if "_" in stem else stem


def in_holdout(key: str, fraction: float) -> bool:
    """Whether a person (any string key) is in the held-out share: a fixed hash, the same on every machine."""
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "little") / 2**64
    return h < fraction


MASK_NAMES = {"wear": Mask.WEAR, "incorrect": Mask.INCORRECT, "not_wear": Mask.NOT_WEAR}
FACES_CSV_COLUMNS = ("file", "x0", "y0", "x1", "y1", "mask", "photo")


def parse_source(entry: str) -> tuple[Path, str]:
    """``"DIR=wear"`` -> (DIR, "wear"): a folder of one mask state; ``"DIR=faces.csv"`` -> (DIR, "faces.csv"): a
    folder whose CSV labels each face (``read_faces_csv``); ``"DIR=faces.csv:incorrect"`` -> (DIR,
    "faces.csv:incorrect"): the CSV's faces of the states after the colon alone (``split_csv_label``)."""
    if "=" not in entry:
        raise DatasetError(f"mask source {entry!r} is not DIR=wear|incorrect|not_wear or DIR=LABELS.csv[:STATE,...]")
    folder, label = (x.strip() for x in entry.rsplit("=", 1))
    if label not in MASK_NAMES:
        name, states = split_csv_label(label)
        if not name.lower().endswith(".csv"):
            raise DatasetError(f"mask source {entry!r}: label must be one of {sorted(MASK_NAMES)} or a CSV file "
                               "name")
        if bad := [x for x in states if x not in MASK_NAMES]:
            raise DatasetError(f"mask source {entry!r}: {bad[0]!r} is not one of {sorted(MASK_NAMES)}")
    return Path(folder), label


def split_csv_label(label: str) -> tuple[str, tuple[str, ...]]:
    """``"faces.csv:incorrect,wear"`` -> ("faces.csv", ("incorrect", "wear")); no colon: every state (())."""
    name, _, states = label.partition(":")
    return name, tuple(x.strip() for x in states.split(",") if x.strip())


def read_faces_csv(folder: Path, name: str = "faces.csv", states: Sequence[str] = ()) -> list[Sample]:
    """Faces labelled by a CSV in ``folder`` (``file,x0,y0,x1,y1,mask,photo``, as ``facemask_faces``): one mask-only
    sample per row with its face box, of the mask ``states`` alone where given; the person key is the source photo
    (``folder name:photo``), so that a split keeps the faces of one photo together."""
    where = folder / name
    out = []
    for line, row in enumerate(read_csv_rows(where, FACES_CSV_COLUMNS), start=2):
        if row["mask"] not in MASK_NAMES:
            raise DatasetError(f"{where} line {line}: mask {row['mask']!r} is not one of {sorted(MASK_NAMES)}")
        try:
            x0, y0, x1, y1 = (float(row[k]) for k in ("x0", "y0", "x1", "y1"))
        except ValueError as exc:
            raise DatasetError(f"{where} line {line}: {exc}") from None
        if not (x1 > x0 and y1 > y0):
            raise DatasetError(f"{where} line {line}: box ({x0}, {y0}, {x1}, {y1}) is empty")
        if states and row["mask"] not in states:
            continue
        out.append(Sample(str(folder / row["file"]), f"{folder.name}:{row['photo']}", int(MASK_NAMES[row["mask"]]),
                          -1, -1, box=(x0, y0, x1, y1)))
    if not out:
        raise DatasetError(f"{where}: no faces listed" + (f" of {', '.join(states)}" if states else ""))
    return out


def _folder_samples(folder: Path, mask: int) -> list[Sample]:
    """The photos of a folder of one mask state; the folder's parent names the source (a person id is only unique
    within one source)."""
    photos = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not photos:
        raise DatasetError(f"mask source folder {folder} holds no images")
    return [Sample(str(p), f"{folder.parent.name}:{source_person(p)}", mask, -1, -1,
                   kind=kind_from_name(p) if mask == Mask.INCORRECT else "") for p in photos]


def source_samples(entries: Sequence[str], part: str = "train", holdout: float = 0.2) -> list[Sample]:
    """Photos of labelled folders (``"DIR=label"``) or of CSV-labelled faces (``"DIR=faces.csv"``, or
    ``"DIR=faces.csv:incorrect"`` for the faces of some states: a source listed again to weight them) as mask-only
    samples (gender and age -1).

    ``part="train"`` gives the people (for a CSV: the source photos) outside the held-out share, ``"holdout"``
    those inside it, by a fixed hash of the key (``in_holdout``), so that the split never moves.
    """
    if part not in ("train", "holdout"):
        raise UsageError(f"part must be train or holdout, got {part!r}")
    out: list[Sample] = []
    for entry in entries:
        folder, label = parse_source(entry)
        if not folder.is_dir():
            raise DatasetError(f"mask source folder {folder} not found")
        found = (_folder_samples(folder, int(MASK_NAMES[label])) if label in MASK_NAMES
                 else read_faces_csv(folder, *split_csv_label(label)))
        out += [s for s in found if in_holdout(s.person, holdout) == (part == "holdout")]
    return out


def task_target(sample: Sample, task: str, bins: AgeBins) -> int:
    """The class index a task model learns for a photo (the fine age bin for the age task)."""
    return task_kind(task).target(sample, bins)


def person_strata(samples: Sequence[Sample], threshold: int) -> dict[str, int]:
    """Each person's stratum, ``gender*3 + age_group``, the cell of the 18 classes that mask state leaves."""
    return {s.person: cell(s.gender, s.age_group(threshold)) for s in samples}


def person_folds(samples: Sequence[Sample], n_folds: int, seed: int, threshold: int) -> dict[str, int]:
    """Fold index of each person: stratified group k-fold over people, stratified on gender x age group."""
    from sklearn.model_selection import StratifiedGroupKFold

    stratum = person_strata(samples, threshold)
    people = sorted(stratum)
    if len(people) < n_folds:
        raise DatasetError(f"{len(people)} people cannot be split into {n_folds} folds")
    # gender x age group; on data too small for that, gender alone, then no stratification
    for strata in (
        [stratum[p] for p in people],
        [stratum[p] // 3 for p in people],
        [0] * len(people),
    ):
        if max(np.bincount(strata)) >= n_folds:
            break
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    folds: dict[str, int] = {}
    for k, (_, val_idx) in enumerate(splitter.split(np.zeros(len(people)), strata, groups=people)):
        for i in val_idx:
            folds[people[i]] = k
    return folds


def subset_people(samples: Sequence[Sample], max_people: int, seed: int, threshold: int) -> list[Sample]:
    """At most ``max_people`` people, drawn per gender x age-group stratum in proportion."""
    stratum = person_strata(samples, threshold)
    people = sorted(stratum)
    if max_people <= 0 or max_people >= len(people):
        return list(samples)
    rng = np.random.default_rng(seed)
    by_stratum: dict[int, list[str]] = {}
    for i in rng.permutation(len(people)):
        by_stratum.setdefault(stratum[people[i]], []).append(people[i])
    keep: set[str] = set()
    # round-robin over strata keeps their shares and every stratum present
    while len(keep) < max_people:
        for members in by_stratum.values():
            if members and len(keep) < max_people:
                keep.add(members.pop())
    return [s for s in samples if s.person in keep]


class CropDataset(Dataset):
    """Cached uint8 face crops (rows ``indices`` of ``crops``, default all; a memory map works) and their targets,
    preprocessed for one model."""

    def __init__(
        self,
        crops: np.ndarray,
        targets: Sequence[int],
        input_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        augment: TrainAugment | None = None,
        indices: Sequence[int] | None = None,
        occlude: float = 0.0,
        occlude_rows: Sequence[int] = (),
    ) -> None:
        """``occlude``: the probability that a crop among ``occlude_rows`` (rows of ``crops``: the bare faces) gets
        a piece of another such crop pasted over its mouth (``paste_occluder``); it draws from ``augment``'s stream."""
        self.indices = np.arange(len(crops)) if indices is None else np.asarray(indices, dtype=np.int64)
        if len(self.indices) != len(targets):
            raise UsageError(f"{len(self.indices)} crops but {len(targets)} targets")
        self.crops, self.targets = crops, np.asarray(targets, dtype=np.int64)
        self.input_size, self.mean, self.std, self.augment = input_size, mean, std, augment
        self.occlude_rows = np.asarray(occlude_rows, dtype=np.int64)
        self.occlude = occlude if len(self.occlude_rows) > 1 and augment is not None else 0.0
        self._occludable = set(self.occlude_rows.tolist())

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        row = int(self.indices[i])
        crop = np.array(self.crops[row])  # a private copy: the crops may be a read-only memory map
        if self.occlude and row in self._occludable and self.augment.rng.random() < self.occlude:
            other = int(self.occlude_rows[self.augment.rng.integers(len(self.occlude_rows))])
            crop = paste_occluder(crop, np.asarray(self.crops[other]), self.augment.rng)
        if self.augment is not None:
            crop = self.augment(crop)
        return preprocess(crop, self.input_size, self.mean, self.std)[0], int(self.targets[i])
