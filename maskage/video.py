"""Video files and cameras: every face of every N-th frame, as rows, an annotated video and a summary.

OpenCV's VideoCapture reads them (a file path, or a camera index such as 0).
"""
from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .atomic import atomic_path, write_csv_atomic
from .errors import MaskageError, UsageError
from .labels import MASK_LABELS

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


def frame_count(source: str | Path | int) -> int | None:
    """The number of frames a video file says it has (None for a camera or when it does not say)."""
    import cv2

    if isinstance(source, int):
        return None
    cap = open_video(source)
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n if n > 0 else None


def frame_rows(frame: VideoFrame) -> list[dict[str, Any]]:
    """One CSV row per face of a frame (``Prediction.to_row`` with frame, time and face index)."""
    return [{"frame": frame.index, "time": f"{frame.time:.3f}", "face_index": k, **p.to_row()}
            for k, p in enumerate(frame.predictions)]


@dataclass
class VideoSummary:
    """What a video run saw: the frames processed and the faces by mask state."""

    frames: int
    faces: Counter

    def __str__(self) -> str:
        parts = ", ".join(f"{m} {self.faces.get(m, 0)}" for m in MASK_LABELS)
        return f"{self.frames} frame(s), {sum(self.faces.values())} face(s): {parts}"


def predict_video_to_csv(pipe: Any, source: str | Path | int, out: str | Path, annotate: str | Path | None = None,
                         every: int = 1, limit: int | None = None, progress: bool = True) -> VideoSummary:
    """Predict every face of every ``every``-th frame into a CSV (one row per face per frame) and, with
    ``annotate``, an mp4 of the processed frames with the faces boxed and labelled. Returns the frames and faces
    counted (its ``str`` is the line the CLI prints)."""
    import cv2
    from tqdm.auto import tqdm

    from .visualize import annotate as draw

    total = frame_count(source)
    bar = tqdm(total=None if total is None else -(-total // every) if limit is None else min(limit, -(-total // every)),
               desc="video frames", unit="frame", disable=None if progress else True)
    rows: list[dict[str, Any]] = []
    counts: Counter = Counter()
    writer, n = None, 0
    try:
        with atomic_path(annotate) if annotate else nullcontext() as tmp:
            for frame in _until_interrupted(pipe.predict_video(source, every=every, limit=limit)):
                rows.extend(frame_rows(frame))
                counts.update(p.mask for p in frame.predictions if p.face_box is not None)
                if tmp is not None:
                    picture = np.asarray(draw(frame.image, frame.predictions) if frame.predictions else frame.image)
                    if writer is None:
                        writer = _writer(tmp, picture.shape[1], picture.shape[0], _fps(source, every))
                    writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                n += 1
                bar.update(1)
            if writer is not None:
                writer.release()
                writer = None
    finally:
        if writer is not None:
            writer.release()
        bar.close()
    fields = ["frame", "time", "face_index"] + [k for k in _row_fields(rows) if k not in ("frame", "time", "face_index")]
    write_csv_atomic(out, fields, rows)
    return VideoSummary(n, counts)


def _until_interrupted(items: Iterator) -> Iterator:
    """The items until Ctrl-C, which ends a camera's stream (what came before it is still written)."""
    try:
        yield from items
    except KeyboardInterrupt:
        return


def _row_fields(rows: Sequence[dict]) -> list[str]:
    from .pipeline import Prediction

    fields = list(dict.fromkeys(k for r in rows for k in r)) if rows else list(Prediction("").to_row())
    fields.remove("error")
    return fields + ["error"]


def _fps(source: str | Path | int, every: int) -> float:
    import cv2

    cap = open_video(source) if not isinstance(source, int) else None
    fps = (cap.get(cv2.CAP_PROP_FPS) if cap is not None else 0.0) or 25.0
    if cap is not None:
        cap.release()
    return fps / every


def _writer(path: Path, width: int, height: int, fps: float) -> Any:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise VideoError(f"{path}: OpenCV cannot write an mp4 video here")
    return writer

