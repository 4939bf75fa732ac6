"""Video files and cameras (a file path, or a camera index such as 0): their frames, read with OpenCV's
VideoCapture. ``Pipeline.predict_video`` predicts them; ``predict.predict_video_to_csv`` writes the rows, an annotated
video and a summary.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import MaskageError, UsageError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


class VideoError(MaskageError, ValueError):
    """A video or camera that cannot be opened."""


@dataclass
class VideoFrame:
    """The predictions for one processed frame: ``index`` counts every frame of the video from 0, ``time`` in
    seconds; ``image`` is the RGB frame; one ``Prediction`` per face found (none when no face was found)."""

    index: int
    time: float
    image: np.ndarray
    predictions: list


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def open_video(source: str | Path | int) -> Any:
    """An opened ``cv2.VideoCapture`` of a file, or of a camera for an int (``--camera 0``)."""
    import cv2

    if not isinstance(source, int) and not Path(source).is_file():
        raise VideoError(f"{source}: no such video file")
    cap = cv2.VideoCapture(source if isinstance(source, int) else str(source))
    if not cap.isOpened():
        what = f"camera {source}" if isinstance(source, int) else f"{source}: not a video OpenCV can read"
        raise VideoError(f"cannot open {what}")
    return cap


def frames(source: str | Path | int, every: int = 1, limit: int | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(index, time in s, RGB frame)`` for every ``every``-th frame (the first included), at most ``limit``."""
    import cv2

    if every < 1:
        raise UsageError(f"every must be >= 1, got {every}")
    cap = open_video(source)
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    try:
        index, given = 0, 0
        while limit is None or given < limit:
            if index % every:
                if not cap.grab():  # skipped frames are not decoded
                    break
            else:
                ok, frame = cap.read()
                if not ok:
                    break
                msec = cap.get(cv2.CAP_PROP_POS_MSEC)
                time = index / fps if fps > 0 else msec / 1000.0
                yield index, float(time), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                given += 1
            index += 1
    finally:
        cap.release()


def video_info(source: str | Path | int) -> tuple[int | None, float | None]:
    """The number of frames and the frame rate a video file says it has (None for a camera, or for what the file
    does not say)."""
    import cv2

    if isinstance(source, int):
        return None, None
    cap = open_video(source)
    n, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS))
    cap.release()
    return (n if n > 0 else None), (fps if fps > 0 else None)
