"""Face-photo sources with gender and age labels (UTKFace, All-Age-Faces, LFW): one adapter per naming scheme.

Every adapter gives ``FaceRecord``s with the person in the photo, so that splits keep a person on one side, and the
source's name, so that scores can be reported per source and sources left out of training.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import MaskageError
from ..images import IMAGE_EXTENSIONS
from .. import labels
from ..labels import UNKNOWN_AGE, age_to_group

_AGE_GENDER_RACE = re.compile(r"^(\d+)_([01])_(\d)_")


@dataclass(frozen=True)
class FaceRecord:
    """One unmasked face photo with its labels; each record is one person of the built dataset."""

    path: str
    age: int  # -1: unknown (a gender-only source)
    gender: int
    race: int | None = None
    person: str = ""  # who is in the photo, from a source adapter (maskage.sources); "" = the photo itself
    source: str = ""  # the adapter's name


class SourceError(MaskageError, ValueError):
    """A source folder that is missing or does not follow its naming scheme."""


def _image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise SourceError(f"source folder {folder} not found")
    return [p for p in sorted(folder.iterdir())
            if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS]


def _age_gender_race(folder: Path, source: str) -> tuple[list, list[str]]:
    """``AGE_GENDER_RACE_*.jpg`` (UTKFace, and All-Age-Faces as ../shared/data names it): one person per photo."""
    records, unlabelled = [], []
    for p in _image_files(folder):
        m = _AGE_GENDER_RACE.match(p.name)
        if not m:
            unlabelled.append(p.name)
            continue
        records.append(FaceRecord(str(p), int(m.group(1)), int(m.group(2)), int(m.group(3)),
                                  person=f"{source}:{p.stem}", source=source))
    return records, unlabelled


def read_utkface(folder: str | Path) -> tuple[list, list[str]]:
    """UTKFace: ``AGE_GENDER_RACE_TIMESTAMP.jpg``; each photo is taken as its own person."""
    return _age_gender_race(Path(folder), "utkface")


def read_aaf(folder: str | Path) -> tuple[list, list[str]]:
    """All-Age-Faces: ``AGE_GENDER_2_aafNNNNN.jpg``, one person per photo."""
    return _age_gender_race(Path(folder), "aaf")


_LFW_NAME = re.compile(r"^(.+)_(\d{4})$")


def read_lfw(folder: str | Path) -> tuple[list, list[str]]:
    """LFW: ``male/`` and ``female/`` folders of ``Person_Name_NNNN.jpg``; same name = same person; no age."""
    root = Path(folder)
    records, unlabelled = [], []
    for gender, sub in ((0, "male"), (1, "female")):
        for p in _image_files(root / sub):
            m = _LFW_NAME.match(p.stem)
            if not m:
                unlabelled.append(f"{sub}/{p.name}")
                continue
            records.append(FaceRecord(str(p), UNKNOWN_AGE, gender, None, person=f"lfw:{m.group(1)}", source="lfw"))
    return records, unlabelled


ADAPTERS: dict[str, Callable[[str | Path], tuple[list, list[str]]]] = {
    "utkface": read_utkface,
    "aaf": read_aaf,
    "lfw": read_lfw,
}


def parse_source_arg(entry: str) -> tuple[str, Path]:
    """``"aaf=../shared/data/aaf"`` -> ("aaf", Path(...)); the name picks the adapter."""
    name, sep, folder = entry.partition("=")
    name = name.strip().lower()
    if not sep or not folder.strip():
        raise SourceError(f"source {entry!r} is not NAME=DIR (NAME one of {', '.join(ADAPTERS)})")
    if name not in ADAPTERS:
        raise SourceError(f"unknown source {name!r} in {entry!r}; known: {', '.join(ADAPTERS)}")
    return name, Path(folder.strip())


def read_sources(entries: Sequence[str]) -> tuple[list, list[str]]:
    """The records of several ``NAME=DIR`` sources, and the names no adapter could label (as ``NAME:FILE``)."""
    records, unlabelled = [], []
    seen = set()
    for entry in entries:
        name, folder = parse_source_arg(entry)
        if name in seen:
            raise SourceError(f"source {name!r} given twice")
        seen.add(name)
        recs, bad = ADAPTERS[name](folder)
        if not recs:
            raise SourceError(f"{folder}: no photo follows the {name} naming scheme")
        records += recs
        unlabelled += [f"{name}:{b}" for b in bad]
    return records, unlabelled


def held_out(person: str, fraction: float) -> bool:
    """Whether a person is in the held-out share: a fixed hash of the person key, the same in every build, so
    that a build without a source keeps the others' split (leave-one-source-out runs test on the same people)."""
    h = int.from_bytes(hashlib.sha1(person.encode()).digest()[:8], "little") / 2**64
    return h < fraction


def cell(gender: int, age: int, threshold: int = 60) -> int:
    """The gender x age-group cell of a person (``labels.cell``), or the gender's first cell when the age is unknown."""
    return labels.cell(gender, int(age_to_group(age, threshold)) if age >= 0 else 0)


def balanced_people(people: Sequence[tuple[str, int, int]], seed: int = 0, per_cell: int | None = None,
                    threshold: int = 60) -> list[str]:
    """An equal number of people from each gender x age-group cell present: ``people`` are (person, gender, age);
    the smallest cell's size, or ``per_cell`` when that is smaller. Sources without ages balance over gender alone."""
    cells: dict[int, list[str]] = {}
    for person, gender, age in sorted(set(people)):
        cells.setdefault(cell(gender, age, threshold), []).append(person)
    if not cells:
        return []
    n = min(len(v) for v in cells.values())
    n = n if per_cell is None else min(n, per_cell)
    rng = np.random.default_rng(seed)
    out: list[str] = []
    for key in sorted(cells):
        members = cells[key]
        pick = rng.permutation(len(members))[:n]
        out += [members[i] for i in sorted(pick)]
    return out
