"""Helpers the benchmark scripts share: the competition-sized photos they make from face crops."""
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from canvas import on_canvas  # noqa: E402


def test_on_canvas_pastes_the_whole_face_at_a_side_in_range_on_a_plain_background(tmp_path):
    face = np.zeros((200, 200, 3), np.uint8)
    face[..., 0] = 255  # pure red: no background colour (60..199 per channel) can match it
    path = tmp_path / "face.png"  # lossless: no blended edge pixels
    Image.fromarray(face).save(path)
    for seed in range(5):
        photo = on_canvas(path, np.random.default_rng(seed))
        assert photo.shape == (512, 384, 3) and photo.dtype == np.uint8
        red = (photo[..., 0] > 230) & (photo[..., 1] < 30)
        ys, xs = np.nonzero(red)
        h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert 178 <= h <= 302 and abs(h - w) <= 2  # one square face of 180..300 px, inside the canvas
        assert red.sum() >= 0.95 * h * w
        background = photo[~red]
        assert np.all(background.min(axis=0) >= 55) and np.all(background.max(axis=0) <= 205)


def test_on_canvas_is_deterministic_for_a_seed_and_varies_across_seeds(tmp_path):
    path = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    a, b, c = (on_canvas(path, np.random.default_rng(s)) for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
