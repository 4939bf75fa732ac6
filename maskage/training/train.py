"""Training one task model: a straight-line loop, plus ``evaluate``."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from ..atomic import write_csv_atomic
from ..detect.cache import CachedCrops, CropCache
from ..detect.faces import CropSettings, DetectorSettings
from ..errors import UsageError
from ..labels import AgeBins, unpack_heads
from ..models.torch_model import TaskModel, make_spec
from ..progress import bar
from .checkpoint import LOG_FIELDS, read_checkpoint, restore, rng_states, write_checkpoint
from .config import TrainConfig, save_config
from .augment import TrainAugment, mix_batch
from .data import (CropDataset, DatasetError, Sample, filter_datasets, filter_races, load_train_samples, person_folds,
                   source_samples, subset_people, task_samples, task_target)
from .distributed import DistContext, ShardSampler, resolve_device, seed_everything
from .losses import MultiHeadLoss, balanced_weights, build_loss
from .results import TrainResult, score_probs


def balance_cells(samples: Sequence[Sample], balance: str, threshold: int) -> np.ndarray | None:
    """Each sample's balancing cell (``TrainConfig.balance``): gender x age group, optionally per source; None for
    "none". A sample of unknown age is in a cell of its own per gender."""
    if balance == "none":
        return None
    keys = [(s.dataset if balance == "source_cell" else "", s.gender,
             s.age_group(threshold) if s.age >= 0 else -1) for s in samples]
    index: dict[tuple, int] = {}
    return np.array([index.setdefault(k, len(index)) for k in keys], dtype=np.int64)


def epoch_sampler(
    targets: np.ndarray, from_sources: np.ndarray, n_classes: int, config: TrainConfig, generator: torch.Generator,
    cells: np.ndarray | None = None,
) -> torch.utils.data.Sampler:
    """What one epoch draws: ``samples_per_epoch`` photos (default all), class-balanced with ``weighted_sampler``
    or equally from each of ``cells`` (``balance_cells``), with ``mask_sources`` photos ``source_weight`` times as
    likely as dataset photos."""
    per_epoch = min(config.samples_per_epoch, len(targets)) if config.samples_per_epoch else len(targets)
    weights = np.ones(len(targets))
    if config.weighted_sampler:
        counts = np.bincount(targets, minlength=n_classes)
        weights = weights / np.maximum(counts[targets], 1)
    if cells is not None:
        weights = weights / np.bincount(cells)[cells]
    weights = np.where(from_sources, weights * config.source_weight, weights)
    if np.ptp(weights) > 0:
        return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), per_epoch, generator=generator)
    return RandomSampler(range(len(targets)), num_samples=per_epoch, generator=generator)


@torch.inference_mode()
def evaluate(model: TaskModel, crops: np.ndarray, targets: np.ndarray, batch_size: int = 64) -> dict[str, Any]:
    """Accuracy and macro F1 of a model on uint8 crops; for the age task also on the 3 age groups.

    ``selection_f1`` is the score a run keeps its best checkpoint by: the class macro F1, or for the age
    task the age-group macro F1, since the groups are what the 18 classes use.
    """
    return score_probs(model.predict_proba(crops, batch_size), targets, model.spec)


def _criterion(config: TrainConfig, spec, targets: np.ndarray) -> torch.nn.Module:
    """The loss the config asks for; the multi-head model gets it on each head (summed)."""
    def one(y: np.ndarray, n: int, groups) -> torch.nn.Module:
        weight = balanced_weights(y, n) if config.class_weights == "balanced" else None
        return build_loss(config.loss, n, weight, config.label_smoothing, config.focal_gamma, groups,
                          config.age_group_loss_weight)

    if spec.heads is None:
        return one(targets, len(spec.labels), spec.age_groups if spec.task == "age" else None)
    n_mask, n_gender, n_bins = spec.heads
    mask, gender, age_bin = unpack_heads(targets, n_bins)
    return MultiHeadLoss(one(mask, n_mask, None), one(gender, n_gender, None), one(age_bin, n_bins, spec.age_groups), n_bins)


def _teacher_loss(config: TrainConfig, spec, bins: AgeBins, samples: list, crops: np.ndarray, crop_dir: Path,
                  targets: np.ndarray, tr_idx: np.ndarray, criterion: torch.nn.Module,
                  progress: bool) -> torch.nn.Module:
    """The loss with the teacher's soft labels (``maskage.teacher``), for every photo; the age shift is fitted on
    the training rows. A FaceRes teacher's labels are cached in the crop cache's folder ``crop_dir``."""
    from .teacher import DistillLoss, age_shift, faceres_outputs, gaussian_ages, model_dirs, model_outputs, soft_targets

    dirs, shift = model_dirs(config.teacher), 0
    if dirs:
        soft = model_outputs(crops, [s.path for s in samples], crop_dir, dirs, config.task, spec.labels, progress)
    else:
        if config.teacher == "gaussian":
            p_male, age_dist = np.zeros(len(samples), np.float32), gaussian_ages([s.age for s in samples],
                                                                                 config.teacher_age_sigma)
        else:
            p_male, age_dist = faceres_outputs(crops, [s.path for s in samples], crop_dir,
                                               config.teacher_input_size, progress)
        if config.task == "age" and config.teacher == "faceres":
            shift = (age_shift(age_dist[tr_idx], np.array([samples[i].age for i in tr_idx]))
                     if config.teacher_age_shift == "auto" else int(config.teacher_age_shift))
        soft = soft_targets(config.task, spec.labels, bins, p_male, age_dist, shift)
    if progress:
        agree = float((soft[tr_idx].argmax(1) == targets[tr_idx]).mean()) if len(tr_idx) else 0.0
        print(f"teacher {config.teacher}: weight {config.teacher_weight}, age shift {shift:+d} years, "
              f"agrees with {agree:.1%} of the training labels", flush=True)
    return DistillLoss(criterion, targets, soft, config.teacher_weight)


def _init_from(model: TaskModel, directory: str) -> None:
    """Start from a saved model's weights (to train it further); it must be the same network for the same task.

    The input size may differ: every backbone ends in global pooling, so the weights take any size (e.g. a model
    fine-tuned at 160 px trained further at 224). ``shipped``: the task's model shipped inside maskage."""
    if directory == "shipped":
        from ..models.spec import PRETRAINED_DIR

        directory = str(PRETRAINED_DIR / model.spec.task)
    start = TaskModel.load(directory, model.spec.task)
    for key in ("backbone", "labels", "mean", "std"):
        if getattr(start.spec, key) != getattr(model.spec, key):
            raise UsageError(f"init_from: {directory} has {key} {getattr(start.spec, key)!r}, this run "
                             f"{getattr(model.spec, key)!r}")
    model.net.load_state_dict(start.net.state_dict())


def train(config: TrainConfig, progress: bool = True) -> TrainResult:  # long: a straight-line epoch loop
    """Train one task model as the config says; the best epoch's model is saved in the output directory.
    With ``folds=K``, K models instead (``train_folds``). The steps: the photos (``_training_samples``), their
    crops (``_training_crops``), the model and its loader and optimiser, then the epochs, each ending with a
    checkpoint that ``resume=true`` continues from."""
    # about 100 lines on purpose: the epoch loop stays straight-line (nanoGPT style); each step above it is a function
    if not config.data_dir:
        raise UsageError("data_dir is not set: pass data_dir=FOLDER (holding train.csv and images/)")
    if config.folds:
        from .folds import train_folds

        return train_folds(config, train, progress)
    dist_ctx = DistContext.from_env(config.device)
    seed_everything(config.seed)
    device = dist_ctx.device if dist_ctx.world > 1 else resolve_device(config.device)
    main_proc = dist_ctx.rank == 0
    progress = progress and main_proc
    out = config.resolved_output_dir()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = read_checkpoint(out, config) if config.resume else None
    if main_proc:
        save_config(config, out / "config.yaml")
    bins = AgeBins(tuple(config.age_bin_edges), config.age_threshold)

    samples, folds, n_pseudo = _training_samples(config)
    crop = CropSettings(config.crop_size, config.margin, frame=config.frame, frame_shift=config.frame_shift,
                        shift=config.crop_shift)
    detector = DetectorSettings(config.min_face_size, batch_size=config.detect_batch_size, portrait=config.portrait)
    cache = CropCache(config.cache_dir or None, crop, detector)
    samples, cached, n_skipped = _training_crops(config, samples, cache, dist_ctx, progress)
    targets = np.array([task_target(s, config.task, bins) for s in samples], dtype=np.int64)
    is_val = np.array([folds[s.person] == config.fold for s in samples])
    tr_idx, va_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)

    spec = make_spec(config.task, config.backbone, config.input_size, crop, detector, bins)
    model = _new_model(config, spec, device)
    criterion = _criterion(config, spec, targets[tr_idx])
    yields = targets  # what the loader gives the loss for each photo
    if config.teacher:  # the loader then yields row numbers, which the loss maps to true and soft labels
        criterion = _teacher_loss(config, spec, bins, samples, cached.crops, cache.dir, targets, tr_idx, criterion,
                                  progress)
        yields = np.arange(len(samples))
    trainee: torch.nn.Module = model  # what is trained: the model, or the model with the how-worn head
    if config.how_worn_weight:
        trainee, criterion, yields = _how_worn(config, model, samples, targets, tr_idx, criterion, progress)
    criterion = criterion.to(device)
    trainee.to(device)
    loader, generator, augment = _loader(config, cached, targets, yields, samples, tr_idx, spec, dist_ctx)
    net = dist_ctx.wrap(trainee)  # the DistributedDataParallel wrapper under torchrun, else the trainee itself
    optimizer, scheduler = _optimizer(config, trainee)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    log_path = out / "log.csv"
    state = {"best_f1": -1.0, "best_epoch": 0, "stale": 0, "best_metrics": {}}
    first_epoch = 1
    if checkpoint is None and main_proc:
        write_csv_atomic(log_path, LOG_FIELDS, [])
    elif checkpoint is not None:
        first_epoch = restore(checkpoint, config, trainee, optimizer, scheduler, scaler, generator,
                               augment if main_proc else None, state, log_path, main_proc)
        if progress:
            print(f"resuming {out} after epoch {checkpoint['epoch']}", flush=True)
    finished, seen = False, 0
    for epoch in range(first_epoch, config.epochs + 1):
        start = time.time()
        loss, seen, lr = _train_epoch(config, epoch, net, trainee, loader, criterion, optimizer, scaler, generator,
                                      device, use_amp, progress)
        if scheduler is not None:
            scheduler.step()
        # every process evaluates the same weights and buffers, so all take the same early-stopping decision
        dist_ctx.sync_buffers(model)
        metrics = evaluate(model, cached.crops[va_idx], targets[va_idx])
        row = [epoch, f"{lr:.3g}", f"{loss:.5f}", f"{metrics['accuracy']:.5f}",
               f"{metrics['macro_f1']:.5f}", f"{metrics['selection_f1']:.5f}", f"{time.time() - start:.1f}"]
        if main_proc:
            with log_path.open("a", newline="") as f:
                csv.writer(f).writerow(row)
        if progress:
            print(f"{config.task} epoch {epoch}: loss {loss:.4f} val macro F1 {metrics['macro_f1']:.4f}"
                  f" selection F1 {metrics['selection_f1']:.4f} ({time.time() - start:.0f}s)", flush=True)
        if config.save_epochs and main_proc:
            model.save(out / f"epoch_{epoch}", dtype=config.save_dtype)
        if metrics["selection_f1"] > state["best_f1"]:
            state.update(best_f1=metrics["selection_f1"], best_epoch=epoch, stale=0, best_metrics=metrics)
            if main_proc:
                model.save(out, dtype=config.save_dtype)
                _write_val_predictions(out / "val_predictions.csv", [samples[i] for i in va_idx], targets[va_idx],
                                       metrics["probs"], cached.found[va_idx])
        else:
            state["stale"] += 1
            if config.patience and state["stale"] >= config.patience:
                if progress:
                    print(f"early stopping: no better validation F1 for {state['stale']} epochs", flush=True)
                finished = True
        if main_proc:
            write_checkpoint(out, {
                "epoch": epoch, "finished": finished or epoch == config.epochs,
                "model": trainee.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else {}, "scaler": scaler.state_dict(),
                "best_f1": state["best_f1"], "best_epoch": state["best_epoch"], "stale": state["stale"],
                "best_metrics": {k: v for k, v in state["best_metrics"].items() if k != "probs"},
                "rng": rng_states(generator, augment),
            })
        if finished:
            break

    summary = {k: v for k, v in state["best_metrics"].items() if k != "probs"}
    summary.update(
        best_epoch=state["best_epoch"], n_skipped=n_skipped, n_pseudo=n_pseudo, task=config.task, fold=config.fold,
        n_folds=config.n_folds,
        n_train=int(len(tr_idx)), n_val=int(len(va_idx)), n_seen_per_epoch=seen,
        n_people_val=len({samples[i].person for i in va_idx}),
        face_found_rate=float(cached.found.mean()) if len(samples) else 0.0,
    )
    summary["world_size"] = dist_ctx.world
    if main_proc:
        (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    dist_ctx.close()
    return TrainResult(out, state["best_epoch"], state["best_f1"], summary)


def _training_samples(config: TrainConfig) -> tuple[list, dict[str, int], int]:
    """The photos a run trains and validates on, each person's fold (-1: trains, never validates), and how many
    pseudo-labelled photos joined."""
    samples = filter_races(load_train_samples(config.data_dir, config.corrections or None), config.races)
    samples = filter_datasets(samples, config.datasets)
    samples = subset_people(samples, config.max_people, config.seed, config.age_threshold)
    folds = person_folds(samples, config.n_folds, config.seed, config.age_threshold)
    if config.task == "mask" and config.mask_sources:  # real photos of mask states, for the mask task only
        extra = source_samples(config.mask_sources, "train", config.source_holdout)
        for s in extra:  # real photos' people join the folds by a fixed hash of their id
            folds.setdefault(s.person, int.from_bytes(s.person.encode(), "little") % config.n_folds)
        samples = samples + extra
    samples = task_samples(samples, config.task, config.gender_age_photos)
    if not config.pseudo_labels:
        return samples, folds, 0
    from .pseudo import pseudo_samples

    known = {s.path for s in samples}
    pseudo = [s for s in pseudo_samples(config.pseudo_labels, config.task, config.pseudo_threshold,
                                        config.gender_age_photos) if s.path not in known]
    for s in pseudo:
        folds[s.person] = -1  # in no fold: pseudo-labelled photos train, never validate
    return samples + pseudo, folds, len(pseudo)


def _training_crops(config: TrainConfig, samples: list, cache: CropCache, dist_ctx: DistContext,
                    progress: bool) -> tuple[list, CachedCrops, int]:
    """The photos' face crops from the cache (filled by process 0 under torchrun); unreadable photos fail the run,
    or with ``skip_bad_images`` are left out (listed). Returns the samples kept, their crops and how many went."""
    if dist_ctx.rank != 0:
        dist_ctx.barrier()
    cached = cache.stack([s.path for s in samples], progress=progress, hints=[s.box for s in samples])
    if dist_ctx.rank == 0:
        dist_ctx.barrier()
    if not cached.errors:
        return samples, cached, 0
    listing = "\n  ".join(cached.errors[i] for i in sorted(cached.errors))
    if not config.skip_bad_images:
        raise DatasetError(f"{len(cached.errors)} photo(s) could not be read (skip_bad_images=true trains "
                           f"without them):\n  {listing}")
    print(f"skipping {len(cached.errors)} photo(s) that could not be read:\n  {listing}", flush=True)
    keep = [i for i in range(len(samples)) if i not in cached.errors]
    return [samples[i] for i in keep], CachedCrops(cached.crops[keep], [cached.boxes[i] for i in keep], {}), \
        len(cached.errors)


def _how_worn(config: TrainConfig, model: TaskModel, samples: list, targets: np.ndarray, tr_idx: np.ndarray,
              criterion: torch.nn.Module, progress: bool) -> tuple[torch.nn.Module, torch.nn.Module, np.ndarray]:
    """The model with the how-worn head (``how_worn.HowWornNet``), its loss, and the packed labels to load."""
    from .how_worn import HOW_WORN, HowWornLoss, HowWornNet, how_worn_labels, pack

    how = how_worn_labels(samples)
    known = how[tr_idx][how[tr_idx] >= 0]
    if progress:
        counts = np.bincount(known, minlength=len(HOW_WORN))
        print("how-worn head: " + ", ".join(f"{k} {n}" for k, n in zip(HOW_WORN, counts)) + f" training photos, "
              f"{int((how[tr_idx] < 0).sum())} unknown; weight {config.how_worn_weight}", flush=True)
    weights = balanced_weights(known, len(HOW_WORN)) if config.class_weights == "balanced" else None
    n = len(model.spec.labels)
    return (HowWornNet(model, len(HOW_WORN)), HowWornLoss(criterion, n, config.how_worn_weight, weights),
            pack(targets, how, n))


def _new_model(config: TrainConfig, spec, device: torch.device) -> TaskModel:
    """The model to train: ImageNet (or FaceRes) weights, or ``init_from``'s; frozen stages; on the device."""
    model = TaskModel(spec, pretrained=config.pretrained and not config.init_from, drop_rate=config.drop_rate,
                      faceres_weights=config.faceres_weights)
    if config.init_from:
        _init_from(model, config.init_from)
    model.freeze_stages(config.freeze_stages)
    model.to(device)
    if device.type == "cpu":
        model.to(memory_format=torch.channels_last)
    return model


def _loader(config: TrainConfig, cached: CachedCrops, targets: np.ndarray, yields: np.ndarray, samples: list,
            tr_idx: np.ndarray, spec, dist_ctx: DistContext) -> tuple[DataLoader, torch.Generator, TrainAugment]:
    """The training photos' loader (augmented, drawn as ``epoch_sampler`` says from ``targets``, sharded under
    torchrun), its generator and its augmentation (both part of a checkpoint's random state). It gives each photo
    with ``yields[row]``: its target, its row number (for ``DistillLoss``) or its packed labels (``how_worn``)."""
    # each process augments with its own stream
    augment = TrainAugment(config.hflip, config.color_jitter, config.scale_jitter, seed=config.seed + dist_ctx.rank,
                           clahe=config.clahe, photo=config.photo_aug, photo_min_scale=config.photo_aug_min_scale)
    bare = tr_idx[targets[tr_idx] == spec.labels.index("not_wear")] if config.occlude else ()
    train_set = CropDataset(cached.crops, yields[tr_idx], spec.input_size, spec.mean, spec.std,
                            augment, indices=tr_idx, occlude=config.occlude, occlude_rows=bare)
    generator = torch.Generator().manual_seed(config.seed)
    from_sources = np.array([samples[i].gender < 0 for i in tr_idx])  # mask_sources photos carry no gender
    cells = balance_cells([samples[i] for i in tr_idx], config.balance, config.age_threshold)
    sampler = epoch_sampler(targets[tr_idx], from_sources, len(spec.labels), config, generator, cells)
    per_epoch = len(sampler)
    if dist_ctx.world > 1:  # every process draws the same epoch (same generator), then takes its share
        sampler = ShardSampler(sampler, dist_ctx.rank, dist_ctx.world)
    loader = DataLoader(train_set, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                        generator=generator, drop_last=per_epoch > config.batch_size)
    return loader, generator, augment


def _optimizer(config: TrainConfig, model: torch.nn.Module) -> tuple[torch.optim.Optimizer, Any]:
    """The optimiser of the trainable parameters and the learning-rate schedule (None: constant)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                                    nesterov=True)
    elif config.optimizer == "adam":
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.scheduler == "cosine":
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.scheduler == "step":
        return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    return optimizer, None


def _train_epoch(config: TrainConfig, epoch: int, net, model: torch.nn.Module, loader: DataLoader, criterion, optimizer,
                 scaler, generator: torch.Generator, device: torch.device, use_amp: bool,
                 progress: bool) -> tuple[float, int, float]:
    """One pass over the epoch's draw (gradient accumulation, MixUp/CutMix, AMP on GPUs): mean loss, photos seen,
    and the learning rate it ran at."""
    model.train()
    total, seen = 0.0, 0
    optimizer.zero_grad(set_to_none=True)
    batches = bar(loader, desc=f"{config.task} epoch {epoch}/{config.epochs}", enabled=progress, leave=False)
    for step, (x, y) in enumerate(batches, start=1):
        x, y = x.to(device), y.to(device)
        if device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        x, y, y_other, lam = mix_batch(x, y, config.mixup_alpha, config.cutmix_alpha, generator)
        with torch.autocast(device.type, enabled=use_amp):
            logits = net(x)
            loss = criterion(logits, y) if lam == 1.0 else lam * criterion(logits, y) + (1 - lam) * criterion(logits, y_other)
        scaler.scale(loss / config.grad_accum).backward()
        if step % config.grad_accum == 0 or step == len(loader):
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        total += float(loss.detach()) * len(y)
        seen += len(y)
        batches.set_postfix(loss=f"{total / seen:.4f}")
    return total / max(seen, 1), seen, optimizer.param_groups[0]["lr"]


def _write_val_predictions(path: Path, samples: list, targets: np.ndarray, probs: np.ndarray, found: np.ndarray) -> None:
    """Per validation photo: truth, prediction, probabilities, and whether a face was found (else a centre crop)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "person", "face_found", "target", "pred", *[f"p{i}" for i in range(probs.shape[1])]])
        for s, t, p, ff in zip(samples, targets, probs, found):
            w.writerow([s.path, s.person, int(ff), int(t), int(p.argmax()), *[f"{v:.5f}" for v in p]])
