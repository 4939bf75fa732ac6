"""Training throughput per task on cached crops: images/s of the straight training loop at a recipe's settings,
with 0, 1 and 2 DataLoader workers.

    .venv/bin/python benchmarks/train_speed.py [--steps 30] [--recipes experiments/studies/real_mask.yaml ...]
    THP_MEM_ALLOC_ENABLE=0 .venv/bin/python benchmarks/train_speed.py ...   # without huge pages (maskage.apps.cli.use_huge_pages)

Crops are random uint8 arrays of the recipe's crop size (speed does not depend on the pixels); the model, input
size, frozen stages, batch size, optimiser and augmentation are the recipe's.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maskage.apps.cli import use_huge_pages  # noqa: E402
from maskage.training.config import load_config  # noqa: E402
from maskage.training.augment import TrainAugment  # noqa: E402
from maskage.training.data import CropDataset  # noqa: E402
from maskage.detect.faces import CropSettings, DetectorSettings  # noqa: E402
from maskage.labels import AgeBins  # noqa: E402
from maskage.models.torch_model import TaskModel, make_spec  # noqa: E402


def throughput(recipe: str, steps: int, workers: int) -> tuple[float, float]:
    """Images per second, and the process's minor page faults per image, of the timed steps."""
    cfg = load_config(ROOT / recipe)
    task = Path(recipe).stem.split("_")[-1]
    spec = make_spec(task, cfg.backbone, cfg.input_size, CropSettings(cfg.crop_size, cfg.margin), DetectorSettings(),
                     AgeBins(tuple(cfg.age_bin_edges), cfg.age_threshold))
    model = TaskModel(spec, pretrained=False)
    model.freeze_stages(cfg.freeze_stages)
    model.to(memory_format=torch.channels_last).train()
    n = cfg.batch_size * (steps + 2)
    crops = np.random.default_rng(0).integers(0, 255, (n, cfg.crop_size, cfg.crop_size, 3), dtype=np.uint8)
    ds = CropDataset(crops, np.zeros(n, dtype=np.int64), spec.input_size, spec.mean, spec.std,
                     TrainAugment(cfg.hflip, cfg.color_jitter, cfg.scale_jitter))
    loader = DataLoader(ds, batch_size=cfg.batch_size, num_workers=workers, shuffle=True, drop_last=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
    seen, start = 0, None
    for step, (x, y) in enumerate(loader):
        if step == 2:  # after warm-up (worker start, first allocations)
            start, seen = time.perf_counter(), 0
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        loss = torch.nn.functional.cross_entropy(model(x.contiguous(memory_format=torch.channels_last)), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += len(y)
    elapsed = time.perf_counter() - start
    return seen / elapsed, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / seen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--recipes", nargs="+", default=[f"experiments/studies/real_{t}.yaml" for t in ("mask", "gender", "age")])
    args = ap.parse_args()
    use_huge_pages()  # as `maskage train` does
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, THP_MEM_ALLOC_ENABLE="
          f"{os.environ.get('THP_MEM_ALLOC_ENABLE')}, kernel THP {thp.read_text().strip() if thp.exists() else '?'}")
    for recipe in args.recipes:
        rates = {w: throughput(recipe, args.steps, w) for w in args.workers}
        print(f"{recipe}: " + ", ".join(f"{w} workers {r:.1f} images/s ({f:.0f} page faults/image)"
                                        for w, (r, f) in rates.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
