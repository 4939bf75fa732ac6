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
        for p in photos:
            mask = mask_from_filename(p.name)
            if swap and mask != Mask.WEAR:
                mask = Mask.NOT_WEAR if mask == Mask.INCORRECT else Mask.INCORRECT
            samples.append(Sample(str(p), pid, int(mask), gender, age, row["race"].strip(), row.get("dataset", "")))
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
    folder whose CSV labels each face (``read_faces_csv``)."""
    if "=" not in entry:
        raise DatasetError(f"mask source {entry!r} is not DIR=wear|incorrect|not_wear or DIR=LABELS.csv")
    folder, label = (x.strip() for x in entry.rsplit("=", 1))
    if label not in MASK_NAMES and not label.lower().endswith(".csv"):
        raise DatasetError(f"mask source {entry!r}: label must be one of {sorted(MASK_NAMES)} or a CSV file name")
    return Path(folder), label


def read_faces_csv(folder: Path, name: str = "faces.csv") -> list[Sample]:
    """Faces labelled by a CSV in ``folder`` (``file,x0,y0,x1,y1,mask,photo``, as ``facemask_faces``): one mask-only
    sample per row with its face box; the person key is the source photo (``folder name:photo``), so that a split
    keeps the faces of one photo together."""
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
        out.append(Sample(str(folder / row["file"]), f"{folder.name}:{row['photo']}", int(MASK_NAMES[row["mask"]]),
                          -1, -1, box=(x0, y0, x1, y1)))
    if not out:
        raise DatasetError(f"{where}: no faces listed")
    return out


def _folder_samples(folder: Path, mask: int) -> list[Sample]:
    """The photos of a folder of one mask state; the folder's parent names the source (a person id is only unique
    within one source)."""
    photos = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not photos:
        raise DatasetError(f"mask source folder {folder} holds no images")
    return [Sample(str(p), f"{folder.parent.name}:{source_person(p)}", mask, -1, -1) for p in photos]


def source_samples(entries: Sequence[str], part: str = "train", holdout: float = 0.2) -> list[Sample]:
    """Photos of labelled folders (``"DIR=label"``) or of CSV-labelled faces (``"DIR=faces.csv"``) as mask-only
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
        found = _folder_samples(folder, int(MASK_NAMES[label])) if label in MASK_NAMES else read_faces_csv(folder, label)
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


class TrainAugment:
    """Random scale/shift crop, horizontal flip, brightness/contrast jitter and CLAHE on a uint8 crop."""

    def __init__(self, hflip: bool = True, color_jitter: float = 0.2, scale_jitter: float = 0.1, seed: int = 0,
                 clahe: float = 0.0, photo: float = 0.0, photo_min_scale: float = 0.25) -> None:
        """``clahe``: the probability of contrast-limited adaptive histogram equalisation of the lightness.
        ``photo``: the probability of each of the photo degradations (``degrade``): lower resolution, blur,
        JPEG, a small rotation, an occluding patch; ``photo_min_scale``: the lowest resolution, as a share of the side."""
        self.hflip, self.color_jitter, self.scale_jitter, self.clahe = hflip, color_jitter, scale_jitter, clahe
        self.photo, self.photo_min_scale = photo, photo_min_scale
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._worker_seeded = False

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        info = torch.utils.data.get_worker_info()
        if info is not None and not self._worker_seeded:
            # DataLoader workers start from copies of this object: without a reseed every worker, and every
            # epoch, would draw the same augmentations. torch's worker seed differs per worker and per epoch.
            self.rng = np.random.default_rng([self.seed, info.seed])
            self._worker_seeded = True
        out = crop
        s = crop.shape[0]
        if self.scale_jitter > 0:
            side = int(round(s * (1 - self.rng.uniform(0, self.scale_jitter))))
            x0 = int(self.rng.integers(0, s - side + 1))
            y0 = int(self.rng.integers(0, s - side + 1))
            out = out[y0 : y0 + side, x0 : x0 + side]
        if self.hflip and self.rng.random() < 0.5:
            out = out[:, ::-1]
        if self.color_jitter > 0:
            a = 1 + self.rng.uniform(-self.color_jitter, self.color_jitter)  # contrast
            b = 255 * self.rng.uniform(-self.color_jitter, self.color_jitter) / 2  # brightness
            mean = out.mean()
            out = np.clip((out.astype(np.float32) - mean) * a + mean + b, 0, 255).astype(np.uint8)
        if self.clahe > 0 and self.rng.random() < self.clahe:
            out = clahe(out)
        if self.photo > 0:
            out = degrade(out, self.rng, self.photo, self.photo_min_scale)
        return np.ascontiguousarray(out)


def degrade(crop: np.ndarray, rng: np.random.Generator, p: float, min_scale: float = 0.25) -> np.ndarray:
    """Each with probability ``p``: a small rotation (up to 12 degrees), a lower resolution (down to ``min_scale``
    of the side, scaled back up), a Gaussian blur, JPEG at quality 30..90, and a grey or noise patch over up to a third
    of the side, so that models trained on clean crops meet the photos they will be given."""
    import cv2

    out = np.ascontiguousarray(crop)
    s = out.shape[0]
    if rng.random() < p:
        m = cv2.getRotationMatrix2D((s / 2, s / 2), float(rng.uniform(-12, 12)), 1.0)
        out = cv2.warpAffine(out, m, (s, s), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < p:
        small = max(8, int(round(s * rng.uniform(min(min_scale, 0.8), 0.8))))
        out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (s, s),
                         interpolation=cv2.INTER_LINEAR)
    if rng.random() < p:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.5, 1.8)))
    if rng.random() < p:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 91))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if rng.random() < p:
        h, w = (int(s * rng.uniform(0.1, 0.33)) for _ in range(2))
        y, x = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
        out = out.copy()
        out[y : y + h, x : x + w] = (rng.integers(0, 256, (h, w, 3)) if rng.random() < 0.5
                                     else int(rng.integers(0, 256)))
    return out


def paste_occluder(crop: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Something in front of the lower face: an elliptical piece of ``other`` (another bare face's crop: skin as a
    hand's, hair as another head's, background as a phone's) over the mouth and chin, with a soft edge. Real scenes'
    bare faces behind a hand or a head were called masked; pasted on bare crops, it teaches that a covered mouth is
    not yet a mask."""
    import cv2

    s = crop.shape[0]
    h, w = int(s * rng.uniform(0.25, 0.5)), int(s * rng.uniform(0.3, 0.65))
    sy, sx = int(rng.integers(0, other.shape[0] - h + 1)), int(rng.integers(0, other.shape[1] - w + 1))
    piece = other[sy : sy + h, sx : sx + w].astype(np.float32)
    # the crop is the face's box plus 20% a side: the mouth sits near 0.68 of its height
    y0 = int(np.clip(s * rng.uniform(0.6, 0.85) - h / 2, 0, s - h))
    x0 = int(np.clip(s * rng.uniform(0.25, 0.75) - w / 2, 0, s - w))
    yy, xx = np.mgrid[:h, :w]
    alpha = ((((yy + 0.5) / h - 0.5) / 0.5) ** 2 + (((xx + 0.5) / w - 0.5) / 0.5) ** 2 <= 1).astype(np.float32)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, s / 80))[..., None]
    out = crop.copy()
    region = out[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    out[y0 : y0 + h, x0 : x0 + w] = np.clip(alpha * piece + (1 - alpha) * region + 0.5, 0, 255).astype(np.uint8)
    return out


def clahe(crop: np.ndarray, clip_limit: float = 2.0, grid: int = 8) -> np.ndarray:
    """CLAHE on the L channel of an RGB uint8 image (colours kept), as the competition's teams applied it."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(grid, grid)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def mix_batch(x: torch.Tensor, y: torch.Tensor, mixup_alpha: float, cutmix_alpha: float,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """MixUp or CutMix of a batch with a shuffled copy of itself: ``(x, y, y_other, lam)``, the loss being
    ``lam * loss(out, y) + (1 - lam) * loss(out, y_other)``. With both alphas set, each batch takes one of the two
    at random (as timm's Mixup). CutMix pastes a box of the other images; ``lam`` is then the share of each image
    left unpasted, so the labels mix exactly by area."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return x, y, y, 1.0
    r = torch.rand(3, generator=generator)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or bool(r[0] < 0.5))
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=generator)
    if not use_cutmix:
        return lam * x + (1 - lam) * x[perm], y, y[perm], lam
    h, w = x.shape[-2:]
    cut_h, cut_w = int(round(h * (1 - lam) ** 0.5)), int(round(w * (1 - lam) ** 0.5))
    cy, cx = int(r[1] * h), int(r[2] * w)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + (cut_h - cut_h // 2), h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + (cut_w - cut_w // 2), w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the box as clipped at the border
    return out, y, y[perm], lam


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
