"""The demo job: build a generated competition-style dataset, train the three tasks, assemble, submit, score."""
from __future__ import annotations

import time
from pathlib import Path

from .config import load_config
from .labels import NUM_CLASSES

# Tiny inputs and few epochs, so the whole job runs in well under a minute on 2 CPU cores.
DEMO_SETTINGS = {
    "input_size": 96, "crop_size": 112, "epochs": 4, "batch_size": 16, "lr": 0.003, "n_folds": 3, "min_face_size": 20,
}


def run_demo(out: str | Path, n_people: int = 24, epochs: int | None = None, progress: bool = True) -> dict:
    """Run the whole maskage job on generated data in ``out``; return the eval scores."""
    from .cli import main as cli_main
    from .metrics import format_report, read_class_csv, score
    from .pipeline import Pipeline
    from .toydata import make_toy_dataset
    from .train import train

    out = Path(out)
    start = time.time()
    data = make_toy_dataset(out / "data", n_people=n_people, n_eval_people=max(6, n_people // 4))
    print(f"dataset: {data} ({n_people} people in train/, held-out people in eval/)")
    overrides = dict(DEMO_SETTINGS)
    if epochs is not None:
        overrides["epochs"] = epochs
    runs = {}
    for task in ("mask", "gender", "age"):
        cfg = load_config(None, dict(
            overrides, data_dir=str(data / "train"), output_dir=str(out / "runs" / task),
            cache_dir=str(out / "cache")), task=task)
        res = train(cfg, progress=progress)
        runs[task] = res.output_dir
        print(f"{task}: best validation F1 {res.best_f1:.3f} (epoch {res.best_epoch})")
    pipe_dir = Pipeline.from_runs(runs["mask"], runs["gender"], runs["age"]).save(out / "pipeline")
    sub = out / "submission.csv"
    if cli_main(["submit", str(data / "eval"), "--pipeline", str(pipe_dir), "--out", str(sub)]) != 0:
        raise RuntimeError("demo: submit failed (see the error above)")
    pred, gt = read_class_csv(sub), read_class_csv(data / "eval" / "gt.csv")
    s = score([gt[k] for k in gt], [pred[k] for k in gt])
    print(format_report(s))
    print(f"demo finished in {time.time() - start:.0f}s; pipeline in {pipe_dir}, submission in {sub}; "
          f"chance-level 18-class macro F1 is about {1 / NUM_CLASSES:.2f}")
    return s
