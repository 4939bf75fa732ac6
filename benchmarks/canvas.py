"""Photos and videos made for the benchmark scripts: competition-sized photos from UTKFace's tight face crops, and
a moving camera's view of a photo."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

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


VIDEO_SIZE = (640, 480)
View = tuple[float, float, float, float]  # x0, y0 of the photo's window, and the window-to-frame scales x, y


def camera_frames(image: np.ndarray, count: int) -> list[tuple[np.ndarray, View]]:
    """``count`` 640x480 frames of ``image`` as a moving camera sees it, each with its ``View``: a 4:3 window
    of 90% -> 80% of the largest the photo holds, panning from its left edge to its right, so faces grow about 1% a
    frame and shift with the pan, undistorted: for the eval scene photos over 16 frames, 11-43 px a frame (median 17)
    at 640 px wide, the wider the photo the faster (an unmoving picture would flatter video tracking, whose tracks
    then never break)."""
    import cv2

    h, w = image.shape[:2]
    full_h = min(h, w * VIDEO_SIZE[1] / VIDEO_SIZE[0])
    out = []
    for k in range(count):
        t = k / max(count - 1, 1)
        ch = int(full_h * (0.9 - 0.1 * t))
        cw = int(ch * VIDEO_SIZE[0] / VIDEO_SIZE[1])
        x0, y0 = int((w - cw) * t), (h - ch) // 2
        frame = cv2.resize(image[y0:y0 + ch, x0:x0 + cw], VIDEO_SIZE, interpolation=cv2.INTER_AREA)
        out.append((frame, (x0, y0, VIDEO_SIZE[0] / cw, VIDEO_SIZE[1] / ch)))
    return out


def write_camera_video(path: str | Path, images: Iterable[np.ndarray], per_photo: int = 16) -> list[list[View]]:
    """An mp4 (25 fps, 640x480) of each image's ``camera_frames``, one after another; each image's views."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, VIDEO_SIZE)
    views = []
    try:
        for image in images:
            shots = camera_frames(image, per_photo)
            for frame, _ in shots:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            views.append([v for _, v in shots])
    finally:
        writer.release()
    return views


def view_box(box: tuple[float, float, float, float], view: View) -> tuple[float, float, float, float] | None:
    """A photo's box as the frame of ``view`` shows it, cut at the frame's edges; None when its centre is outside."""
    x0, y0, sx, sy = view
    b = ((box[0] - x0) * sx, (box[1] - y0) * sy, (box[2] - x0) * sx, (box[3] - y0) * sy)
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    if not (0 <= cx < VIDEO_SIZE[0] and 0 <= cy < VIDEO_SIZE[1]):
        return None
    return max(b[0], 0.0), max(b[1], 0.0), min(b[2], VIDEO_SIZE[0]), min(b[3], VIDEO_SIZE[1])
