"""Competition-sized photos made from UTKFace's tight face crops, shared by the benchmark scripts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def on_canvas(face_path: str | Path, rng: np.random.Generator, size: tuple[int, int] = (384, 512),
              sides: tuple[int, int] = (180, 300)) -> np.ndarray:
    """The face photo resized to a random side in ``sides`` and pasted at a random place on a plain background of
    ``size`` (width, height), the competition's photo size: faces framed unlike UTKFace's own crops."""
    side = int(rng.integers(sides[0], sides[1] + 1))
    canvas = Image.new("RGB", size, tuple(int(v) for v in rng.integers(60, 200, 3)))
    with Image.open(face_path) as im:
        face = im.convert("RGB").resize((side, side))
    canvas.paste(face, (int(rng.integers(0, size[0] - side + 1)), int(rng.integers(0, size[1] - side + 1))))
    return np.asarray(canvas)
