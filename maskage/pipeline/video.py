"""Video files and cameras (a file path, or a camera index such as 0): their frames, read with OpenCV's
VideoCapture. ``Pipeline.predict_video`` predicts them; ``predict.predict_video_to_csv`` writes the rows, an annotated
video and a summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
import threading
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import MaskageError, UsageError
from ..labels import PIPELINE_TASKS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
# A face that stays is classified every 5th processed frame (``FaceTracks``): on a panning camera's video of the real
# scenes, mask-state F1 equal to classifying every face of every frame and 1.3-1.7x the frames/s
# (``benchmarks/scenes.py --video``, docs/measurements.md); 1 classifies every face of every frame.
DEFAULT_REFRESH = 5


class VideoError(MaskageError, ValueError):
    """A video or camera that cannot be opened."""


@dataclass
class VideoFrame:
    """The predictions for one processed frame: ``index`` counts every frame of the video from 0, ``time`` in
    seconds; ``image`` is the RGB frame; one ``Prediction`` per face found (none when no face was found) and, in
    ``tracks``, each face's track id: a face followed from frame to frame keeps its id (``FaceTracks``)."""

    index: int
    time: float
    image: np.ndarray
    predictions: list
    tracks: list[int] = field(default_factory=list)


class FaceTracks:
    """Faces carried from one processed frame to the next, so that a face found again at about the same place is
    classified only every ``refresh``-th frame and keeps its labels in between (a camera's frames change little from
    one to the next; the models cost most of a frame's time). ``refresh=1`` classifies every face of every frame.

    A face is looked for where it was and where its last move (between the two frames before) takes it: people
    walking past a camera keep their pace, and a face of 40 px that moves 8 px a frame overlaps its last box by IoU
    0.6 but its expected box by about 1 (on a panning view of the real scenes, 0.90 of faces were matched at IoU
    0.5 with the move, 0.81 without: docs/measurements.md, 2026-12-03).

    Per frame: ``match`` the new boxes to the last frame's, then ``update`` with each box's reference (what the
    caller classified or carried: any object); ``resolve`` swaps references, e.g. pending ones for predictions.
    ``ids``: after ``match``, each new box's track id (a face matched to one of the last frame's keeps its id, due
    for classification or not; others get new ids, counting from 0)."""

    def __init__(self, refresh: int = 1, min_iou: float = 0.5) -> None:
        if refresh < 1:
            raise UsageError(f"refresh must be >= 1, got {refresh}")
        self.refresh, self.min_iou = refresh, min_iou
        self._boxes: list = []
        self._refs: list = []
        self._ages: list[int] = []  # frames since each face was classified
        self._moves: list[np.ndarray] = []  # each face's box change over its last frame
        self._pending: tuple[list, list[int], list[np.ndarray]] = ([], [], [])
        self._ids: list[int] = []
        self.ids: list[int] = []
        self.previous: list[Any | None] = []
        self._next_id = 0

    def match(self, boxes: list) -> list[Any | None]:
        """For each new box: the reference of the last frame's face it continues (IoU >= ``min_iou`` with where that
        face was or where its last move takes it, best overlaps first, each face once) while that face was
        classified fewer than ``refresh`` frames ago; else None. ``previous`` then holds, for each new box, the
        reference of the face it continues, due or not (None for a new face)."""
        from ..detect.faces import box_iou

        expected = [tuple(np.add(b, m)) for b, m in zip(self._boxes, self._moves)]
        pairs = sorted(((max(box_iou(b, p), box_iou(b, q)), i, j) for i, b in enumerate(boxes)
                        for j, (p, q) in enumerate(zip(expected, self._boxes))), reverse=True)
        out: list[Any | None] = [None] * len(boxes)
        ages = [0] * len(boxes)
        moves = [np.zeros(4)] * len(boxes)
        ids: list[int | None] = [None] * len(boxes)
        previous: list[Any | None] = [None] * len(boxes)
        used_new, used_old = set(), set()
        for iou, i, j in pairs:
            if iou < self.min_iou:
                break
            if i in used_new or j in used_old:
                continue
            used_new.add(i)
            used_old.add(j)
            moves[i] = np.subtract(boxes[i], self._boxes[j])
            ids[i], previous[i] = self._ids[j], self._refs[j]
            if self._ages[j] + 1 < self.refresh:
                out[i], ages[i] = self._refs[j], self._ages[j] + 1
        for i in range(len(boxes)):
            if ids[i] is None:
                ids[i], self._next_id = self._next_id, self._next_id + 1
        self._pending = (list(boxes), ages, moves)
        self.ids = [int(i) for i in ids]  # type: ignore[arg-type]
        self.previous = previous
        return out

    def update(self, refs: list) -> None:
        """The references of the boxes last given to ``match``, in order: they become the faces to match next."""
        self._boxes, self._ages, self._moves = self._pending
        self._ids = list(self.ids)
        self._refs = list(refs)

    def resolve(self, swap: Any) -> None:
        self._refs = [swap(r) for r in self._refs]


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


class LatestFrame:
    """A live source read on a thread of its own that keeps only its newest frame: a reader slower than the camera
    gets the frame of now, never one from a backlog that grows, and ``dropped`` counts the frames replaced before
    anyone took them. ``read``: ``cv2.VideoCapture.read``, or anything that returns ``(ok, frame)``."""

    def __init__(self, read: Callable[[], tuple[bool, Any]]) -> None:
        self._read, self._cond = read, threading.Condition()
        self._frame: Any = None
        self._index, self._taken, self._ended, self._stop = -1, -1, False, False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            ok, frame = self._read()
            with self._cond:
                if not ok:
                    self._ended = True
                    self._cond.notify_all()
                    return
                if self._index > self._taken:  # the frame it replaces was never taken
                    self.dropped += 1
                self._index, self._frame = self._index + 1, frame
                self._cond.notify_all()

    def next(self) -> tuple[int, Any] | None:
        """The newest frame not taken yet and its index (frames counted from 0), waiting for one; None once the
        source has ended and every frame is taken."""
        with self._cond:
            self._cond.wait_for(lambda: self._index > self._taken or self._ended)
            if self._index <= self._taken:
                return None
            self._taken = self._index
            return self._index, self._frame

    def close(self, timeout: float = 2.0) -> None:
        """Stop reading (after the read in progress) before the source is released."""
        self._stop = True
        self._thread.join(timeout)


def _camera_frames(cap: Any, every: int, limit: int | None) -> Iterator[tuple[int, float, np.ndarray]]:
    """A camera's newest frames (``LatestFrame``), at most one in ``every`` of its frames: a pipeline slower than
    the camera skips frames instead of falling behind (the gaps in the indices say how many)."""
    import time as clock

    import cv2

    reader, start, given, last = LatestFrame(cap.read), clock.monotonic(), 0, None
    try:
        while limit is None or given < limit:
            got = reader.next()
            if got is None:
                break
            index, frame = got
            if last is not None and index < last + every:
                continue
            last = index
            yield index, clock.monotonic() - start, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            given += 1
    finally:
        reader.close()


def dropped_frames(indices: Sequence[int], every: int = 1) -> int:
    """Frames a live source gave that were neither processed nor skipped by ``every``: the gaps between the indices
    of processed frames beyond ``every``."""
    return sum(max(0, b - a - every) for a, b in zip(indices, indices[1:]))


def frames(source: str | Path | int, every: int = 1, limit: int | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(index, time in s, RGB frame)`` for every ``every``-th frame (the first included), at most ``limit``. A
    camera (an int) gives its newest frame whenever one is asked for (``_camera_frames``): time is then seconds
    since the start, and frames it gave while the pipeline was busy are skipped."""
    import cv2

    if every < 1:
        raise UsageError(f"every must be >= 1, got {every}")
    cap = open_video(source)
    if isinstance(source, int):
        try:
            yield from _camera_frames(cap, every, limit)
        finally:
            cap.release()
        return
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


def predict_video(  # long: detection, tracking and classification of a batch of frames share their state
        pipe: Any, source: str | Path | int, every: int = 1, limit: int | None = None, batch_size: int = 4,
        refresh: int | None = None, smooth: float = 0.0) -> Iterator[VideoFrame]:
    """Every face of every ``every``-th frame of a video file (or camera index), as ``VideoFrame``s in order:
    frame index, time, the RGB frame and one ``Prediction`` per face found (none when no face was found). Faces
    are found as in ``predict_all_faces`` (the scene detector unless the detector's ``scene`` is off);
    ``batch_size`` frames go through the models together. ``refresh``: a face found again where it was in the last
    processed frame, or where its last move takes it (IoU >= 0.5), is classified only every ``refresh``-th frame
    and keeps its labels and probabilities in between, with its new box (``video.FaceTracks``); 1 classifies every
    face every frame; None: ``video.DEFAULT_REFRESH`` (5). Each frame's ``tracks`` give each face's track id,
    whatever ``refresh``. ``smooth`` (0..1): a face classified again has its probabilities mixed with its track's
    last ones, ``smooth`` of the old (0: each call stands alone)."""
    if not 0 <= smooth < 1:
        raise UsageError(f"smooth must be in [0, 1), got {smooth}")
    tracks = FaceTracks(DEFAULT_REFRESH if refresh is None else refresh)
    scene = pipe.detector_settings.uses_scene(True)

    def run(batch: list) -> Iterator[VideoFrame]:
        images = [b[2] for b in batch]
        todo: list[tuple[np.ndarray, Any]] = []  # the faces to classify, from every frame of the batch
        earlier: list = []  # per face to classify: its track's last call (a todo index or a Prediction), or None
        plans = []  # per frame: (detection, its index in todo, or the Prediction it carries)
        ids: list[list[int]] = []  # per frame, each face's track id
        for image, dets in zip(images, pipe.detector.detect_all(images, scene=scene) if images else []):
            plan = []
            carry = tracks.match([d.box for d in dets])
            ids.append(tracks.ids)
            for d, carried, before in zip(dets, carry, tracks.previous):
                if carried is None:
                    carried = len(todo)
                    todo.append((image, d))
                    earlier.append(before)
                plan.append((d, carried))
            tracks.update([r for _, r in plan])
            plans.append(plan)
        preds = pipe._classify([a for a, _ in todo], [d for _, d in todo], [str(source)] * len(todo))

        def final(ref: Any) -> Any:
            return preds[ref] if isinstance(ref, int) else ref

        if smooth:  # in order: a face's earlier call in this batch is smoothed before its later one
            for k, (before, (_, d)) in enumerate(zip(earlier, todo)):
                if before is not None:
                    preds[k] = _smoothed(pipe, preds[k], final(before), smooth, d)

        tracks.resolve(final)
        for (index, time, image), plan, track_ids in zip(batch, plans, ids):
            found = [replace(final(r), face_box=d.box, face_prob=d.prob) for d, r in plan]
            yield VideoFrame(index, time, image, found, track_ids)

    batch: list = []
    for item in frames(source, every, limit):
        batch.append(item)
        if len(batch) == batch_size:
            yield from run(batch)
            batch = []
    yield from run(batch)


def _smoothed(pipe: Any, new: Any, old: Any, weight: float, det: Any) -> Any:
    """``new``'s probabilities mixed with ``old``'s (``weight`` of old), labels from the mix."""
    probs = {task: np.array([[(1 - weight) * getattr(new, f"{task}_probs")[k] + weight * v
                              for k, v in getattr(old, f"{task}_probs").items()]]) for task in PIPELINE_TASKS}
    return pipe._predictions(probs, [det], [new.source])[0]
