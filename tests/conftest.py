from __future__ import annotations

import os
from pathlib import Path

import pytest

from maskage.detect.faces import CropSettings, DetectorSettings
from maskage.labels import AgeBins
from maskage.models.torch_model import TaskModel, make_spec
from maskage.training.toydata import make_toy_dataset

# the real photos sit beside the project (CI has them); MASKAGE_SHARED_DATA points elsewhere
SHARED_DATA = Path(os.environ.get("MASKAGE_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")

# Tiny, fast settings for training tests: a ~100k-parameter timm test backbone at 32 px.
TINY = {
    "backbone": "test_efficientnet",
    "pretrained": False,
    "input_size": 32,
    "crop_size": 40,
    "epochs": 1,
    "batch_size": 8,
    "n_folds": 3,
    "min_face_size": 20,
}


@pytest.fixture(autouse=True, scope="session")
def _cache_in_tmp(tmp_path_factory):
    os.environ["MASKAGE_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy"), n_people=12, n_eval_people=3, size=(72, 96))


@pytest.fixture
def tiny_overrides(toy_root, tmp_path) -> dict:
    return dict(TINY, data_dir=str(toy_root / "train"), output_dir=str(tmp_path / "run"))


def tiny_model(task: str, seed: int = 0, threshold: int = 60) -> TaskModel:
    import torch

    torch.manual_seed(seed)
    spec = make_spec(task, "test_efficientnet", 32, CropSettings(crop_size=40), DetectorSettings(min_face_size=20),
                     AgeBins(threshold=threshold))
    return TaskModel(spec).eval()
