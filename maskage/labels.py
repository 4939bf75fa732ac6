"""Labels, the 18-class encoding and the age bins. The only place they are defined."""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from .errors import UsageError

# the three task models of a pipeline, in slot order; the baselines that serve all three from one model
PIPELINE_TASKS = ("mask", "gender", "age")
JOINT_TASKS = ("joint", "multihead")


class Mask(IntEnum):
    WEAR = 0
    INCORRECT = 1
    NOT_WEAR = 2


class Gender(IntEnum):
    MALE = 0
    FEMALE = 1


class AgeGroup(IntEnum):
    YOUNG = 0  # < 30
    MIDDLE = 1  # 30 .. threshold-1
    OLD = 2  # >= threshold


MASK_LABELS: tuple[str, ...] = ("wear", "incorrect", "not_wear")
GENDER_LABELS: tuple[str, ...] = ("male", "female")
# how a mask worn wrongly sits, where a source says: drawn masks' kinds (training.masks, a build's incorrect_kind
# column) and MaskedFace-Net's file names; what training.how_worn learns beside the three states
NOSE_EXPOSED, CHIN_EXPOSED, UNDER_CHIN, ONE_EAR = "nose_exposed", "chin_exposed", "under_chin", "one_ear"
DEFAULT_AGE_THRESHOLD = 60
YOUNG_LIMIT = 30
UNKNOWN_AGE = -1  # a photo from a gender-only source (LFW)
NUM_CLASSES = 18  # 3 mask states x 2 genders x 3 age groups
# Lower edges of the 11 fine age bins; everything below the second edge falls in the first bin.
DEFAULT_AGE_BIN_EDGES: tuple[int, ...] = (18, 19, 20, 21, 25, 30, 49, 53, 56, 58, 60)

# Photo file stems of the competition layout and the mask state each one shows.
MASK_FILE_STEMS: dict[str, Mask] = {
    **{f"mask{i}": Mask.WEAR for i in range(1, 6)},
    "incorrect_mask": Mask.INCORRECT,
    "normal": Mask.NOT_WEAR,
}


def encode(mask: int, gender: int, age_group: int) -> int:
    """Class id of a (mask, gender, age group) triple: ``mask*6 + gender*3 + age_group``."""
    for name, value, n in (("mask", mask, 3), ("gender", gender, 2), ("age_group", age_group, 3)):
        if not 0 <= int(value) < n:
            raise UsageError(f"{name} must be in 0..{n - 1}, got {value}")
    return int(mask) * 6 + int(gender) * 3 + int(age_group)


# the 18 classes as a grid: class id = the flat index of (mask, gender, age group) in it (``encode``'s layout)
CLASS_SHAPE: tuple[int, int, int] = (3, 2, 3)
# a multi-head model's outputs side by side: the mask head, the gender head, then the age bins
AGE_HEAD_START = len(MASK_LABELS) + len(GENDER_LABELS)


def class_grid(probs):
    """N x 18 class probabilities (a numpy array) -> N x 3 x 2 x 3, indexed (mask, gender, age group); one
    18-vector -> 3 x 2 x 3. Summing over the other axes gives each task's distribution."""
    return probs.reshape(*probs.shape[:-1], *CLASS_SHAPE)


def cell(gender: int, age_group: int) -> int:
    """A person's gender x age-group cell, ``gender*3 + age_group``: the 18 classes with mask state left out (what
    validation folds and balanced benchmarks stratify on); ``cell // 3`` is the gender again."""
    return int(gender) * CLASS_SHAPE[2] + int(age_group)


def decode(class_id: int) -> tuple[int, int, int]:
    """(mask, gender, age group) of a class id in 0..17."""
    if not 0 <= int(class_id) < NUM_CLASSES:
        raise UsageError(f"class id must be in 0..{NUM_CLASSES - 1}, got {class_id}")
    c = int(class_id)
    return c // 6, (c // 3) % 2, c % 3


def age_to_group(age: float, threshold: int = DEFAULT_AGE_THRESHOLD) -> int:
    """Age group of an age in years: <30 -> 0, 30..threshold-1 -> 1, >=threshold -> 2."""
    if age < YOUNG_LIMIT:
        return AgeGroup.YOUNG
    return AgeGroup.MIDDLE if age < threshold else AgeGroup.OLD


def age_group_labels(threshold: int = DEFAULT_AGE_THRESHOLD) -> tuple[str, str, str]:
    """Names of the three age groups for a threshold: ('<30', '30-59', '60+') at 60."""
    return (f"<{YOUNG_LIMIT}", f"{YOUNG_LIMIT}-{threshold - 1}", f"{threshold}+")


def class_labels(threshold: int = DEFAULT_AGE_THRESHOLD) -> tuple[str, ...]:
    """Names of the 18 classes in id order, e.g. 'wear/male/<30' for class 0."""
    return tuple(f"{m}/{g}/{a}" for m in MASK_LABELS for g in GENDER_LABELS for a in age_group_labels(threshold))


def pack_heads(mask, gender, age_bin, n_bins: int):
    """The multi-head model's three targets as one class-index-like number: ``(mask*2 + gender)*n_bins + age_bin``
    (ints, numpy arrays or tensors)."""
    return (mask * 2 + gender) * n_bins + age_bin


def unpack_heads(target, n_bins: int):
    """``(mask, gender, age_bin)`` of ``pack_heads``'s number (ints, numpy arrays or tensors)."""
    return target // (2 * n_bins), (target // n_bins) % 2, target % n_bins


def gender_from_text(value: str | int) -> int:
    """Gender id from a CSV cell: 'male'/'female' (any case) or 0/1."""
    text = str(value).strip().lower()
    if text in ("male", "m", "0"):
        return Gender.MALE
    if text in ("female", "f", "1"):
        return Gender.FEMALE
    raise UsageError(f"unknown gender {value!r}: expected male/female or 0/1")


def mask_from_filename(name: str) -> Mask:
    """Mask state of a competition photo from its file name (``mask3.jpg``, ``normal.png``...)."""
    stem = Path(name).stem.lower()
    try:
        return MASK_FILE_STEMS[stem]
    except KeyError:
        raise UsageError(
            f"photo name {name!r} is not one of {sorted(MASK_FILE_STEMS)} (with any image extension)"
        ) from None


@dataclass(frozen=True)
class AgeBins:
    """Fine age bins given by their lower edges, and the age group each bin falls in.

    The group threshold must be one of the edges, so that no bin straddles two groups.
    """

    edges: tuple[int, ...] = DEFAULT_AGE_BIN_EDGES
    threshold: int = DEFAULT_AGE_THRESHOLD

    def __post_init__(self) -> None:
        edges = tuple(int(e) for e in self.edges)
        object.__setattr__(self, "edges", edges)
        if list(edges) != sorted(set(edges)) or len(edges) < 3:
            raise UsageError(f"age bin edges must be at least 3 strictly increasing ages, got {edges}")
        for limit, name in ((YOUNG_LIMIT, "30"), (self.threshold, "age_threshold")):
            if limit not in edges:
                raise UsageError(
                    f"{name}={limit} must be one of the age bin edges {edges} so no bin straddles two groups"
                )

    def __len__(self) -> int:
        return len(self.edges)

    @property
    def labels(self) -> tuple[str, ...]:
        """Human-readable bin names, e.g. ('18', '19', '20', '21-24', ..., '60+')."""
        out = []
        for i, lo in enumerate(self.edges):
            if i == len(self.edges) - 1:
                out.append(f"{lo}+")
            else:
                hi = self.edges[i + 1] - 1
                out.append(str(lo) if hi == lo else f"{lo}-{hi}")
        return tuple(out)

    @property
    def groups(self) -> tuple[int, ...]:
        """Age group of each bin."""
        return tuple(int(age_to_group(lo, self.threshold)) for lo in self.edges)

    def bin_of(self, age: float) -> int:
        """Index of the bin an age falls in (ages below the first edge go to the first bin)."""
        idx = 0
        for i, lo in enumerate(self.edges):
            if age >= lo:
                idx = i
        return idx
