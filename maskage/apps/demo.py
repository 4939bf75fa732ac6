"""The demo jobs.

``run_predict_demo``: the shipped pipeline on a photo every install has (NASA's public-domain portrait of
astronaut Eileen Collins, bundled in scikit-image) and on masked variants of it drawn by the synthesiser.
``run_demo``: the whole training job on a generated dataset (train 3 tasks, assemble, submit, score).
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from ..training.config import load_config
from ..errors import UsageError
from ..labels import NUM_CLASSES

# Tiny inputs and few epochs, so the whole job runs in well under a minute on 2 CPU cores.
DEMO_SETTINGS = {
    "input_size": 96, "crop_size": 112, "epochs": 4, "batch_size": 16, "lr": 0.003, "n_folds": 3, "min_face_size": 20,
}


def run_demo(out: str | Path, n_people: int = 24, epochs: int | None = None, progress: bool = True) -> dict:
    """Run the whole maskage job on generated data in ``out``; return the eval scores."""
    from ..metrics import format_report, read_class_csv, score
    from ..pipeline.core import Pipeline
    from ..pipeline.outputs import write_submission
    from ..training.toydata import make_toy_dataset
    from ..training.train import train

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
    write_submission(data / "eval", sub, Pipeline.from_pretrained(pipe_dir))
    pred, gt = read_class_csv(sub), read_class_csv(data / "eval" / "gt.csv")
    s = score([gt[k] for k in gt], [pred[k] for k in gt])
    print(format_report(s))
    print(f"demo finished in {time.time() - start:.0f}s; pipeline in {pipe_dir}, submission in {sub}; "
          f"chance-level 18-class macro F1 is about {1 / NUM_CLASSES:.2f}")
    return s


def sample_photo() -> Path:
    """Path of the demo photo: scikit-image's ``astronaut.png`` (public domain, NASA), read without importing it."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the demo photo comes with scikit-image: pip install 'maskage[demo]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "astronaut.png"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in the installed scikit-image")
    return path


def masked_variants(photo: str | Path, out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """The photo bare and with a mask drawn on in each way of wearing it; name -> written file."""
    from PIL import Image

    from ..detect.faces import DetectorSettings, FaceDetector
    from ..images import load_image
    from ..training.masks import KINDS, draw_mask

    image = load_image(photo)
    det = FaceDetector(DetectorSettings(min_face_size=20)).detect([image])[0]
    if det.landmarks is None:
        raise UsageError(f"{photo}: no face landmarks found, cannot draw masks")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"bare": out_dir / "bare.jpg"}
    Image.fromarray(image).save(files["bare"], quality=95)
    for k, kind in enumerate(KINDS):
        files[kind] = out_dir / f"mask_{kind}.jpg"
        Image.fromarray(draw_mask(image, det.landmarks, det.box, kind, seed + k).image).save(files[kind], quality=95)
    return files


def run_predict_demo(out: str | Path, pipeline: str | Path | None = None) -> list:
    """Predict the demo photo and its masked variants with a pipeline (default: the shipped one).

    Writes ``out/images/``, ``out/predictions.csv``, ``out/annotated/`` and ``out/predictions.jpg`` (all four
    photos with their faces boxed and labelled); returns the ``Prediction`` list.
    """
    from PIL import Image

    from ..pipeline.outputs import predict_to_csv
    from ..pipeline.visualize import contact_sheet, prediction_label

    out = Path(out)
    start = time.time()
    files = masked_variants(sample_photo(), out / "images")
    preds = predict_to_csv([str(f) for f in files.values()], out / "predictions.csv",
                           None if pipeline is None else str(pipeline), out / "annotated",
                           progress=False)  # four photos: the table below says what was done

    sheet = contact_sheet([Image.open(out / "annotated" / f"{Path(f).stem}.jpg") for f in files.values()])
    sheet.save(out / "predictions.jpg", quality=92)
    expected = {"bare": "not_wear", "correct": "wear", "nose_exposed": "incorrect", "under_chin": "incorrect"}
    print(f"{'photo':<14} {'mask drawn':<10} prediction")
    for (name, f), p in zip(files.items(), preds):
        print(f"{Path(f).name:<22} {expected[name]:<10} {prediction_label(p)}")
    print(f"demo finished in {time.time() - start:.0f}s: {out / 'predictions.csv'}, boxed faces in {out / 'predictions.jpg'}")
    return preds
