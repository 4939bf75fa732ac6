"""Predicting files into CSVs: photos (one row per photo or per face), boxed pictures, competition submissions,
videos (a row per face per frame, an annotated video, a summary).

What ``maskage predict`` and ``maskage submit`` run, and the demo with them.
"""
from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..atomic import atomic_path, write_csv_atomic, write_json_atomic
from ..errors import MaskageError, UsageError
from ..images import IMAGE_EXTENSIONS
from ..labels import MASK_LABELS
from ..progress import bar
from .video import VideoError, VideoFrame, dropped_frames, video_info


class SubmissionError(MaskageError):
    """An eval folder that cannot be predicted into a submission (rows without images, unreadable images)."""


def expand_inputs(items: Sequence[str]) -> list[str]:
    """Files as given, folders expanded to their image files (recursively, sorted, skipping hidden names)."""
    out: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                str(f) for f in p.rglob("*")
                if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
            )
            out.extend(found)
        else:
            out.append(str(p))  # a missing file becomes a per-image error, not a crash
    return out


def evenly(items: Sequence[str], n: int) -> list[str]:
    """At most ``n`` of ``items`` spread evenly over the list (all of them when ``n`` is 0 or covers the list), so
    that one folder of a sorted listing does not fill the sample."""
    if n <= 0 or len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


OUTPUT_FORMATS = ("csv", "json")


def output_format(out: str | Path | None, fmt: str | None = None) -> str:
    """``csv`` or ``json``: ``fmt`` when given, else from the file's suffix (``.json``; anything else is CSV)."""
    if fmt is not None:
        if fmt not in OUTPUT_FORMATS:
            raise UsageError(f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
        return fmt
    return "json" if out is not None and Path(out).suffix.lower() == ".json" else "csv"


def face_record(p: Any) -> dict[str, Any]:
    """One face of a ``Prediction`` as JSON (the service's and ``predict --json``'s record)."""
    return {
        "box": None if p.face_box is None else [round(float(v), 1) for v in p.face_box],
        "face_prob": p.face_prob, "class_id": p.class_id, "mask": p.mask, "gender": p.gender, "age": p.age,
        "mask_probs": p.mask_probs, "gender_probs": p.gender_probs, "age_probs": p.age_probs,
    }


def photo_records(paths: Sequence[str], per_path: Sequence) -> list[dict[str, Any]]:
    """A JSON record per photo: its path, its faces (``face_record``; one, the largest, unless every face was asked
    for) and its error (None when it was read)."""
    out = []
    for path, got in zip(paths, per_path):
        faces = got if isinstance(got, list) else [got]
        error = faces[0].error if faces else None
        out.append({"path": path, "faces": [] if error else [face_record(p) for p in faces], "error": error})
    return out


def format_table(per_path: Sequence) -> str:
    """The predictions as a readable table: a line per face (photo, box, mask, gender, age, each with its
    probability), a line with the error for a photo that could not be read."""
    lines = [f"{'photo':<28} {'face box':<23} {'mask':<16} {'gender':<13} {'age':<11}"]
    for got in per_path:
        for p in got if isinstance(got, list) else [got]:
            name = Path(p.source).name if p.source else ""
            name = name if len(name) <= 28 else "..." + name[-25:]
            if p.error:
                lines.append(f"{name:<28} error: {p.error}")
                continue
            box = "no face (centre)" if p.face_box is None else " ".join(f"{v:.0f}" for v in p.face_box)
            cells = [f"{label} {probs[label]:.2f}" for label, probs in
                     ((p.mask, p.mask_probs), (p.gender, p.gender_probs), (p.age, p.age_probs))]
            lines.append(f"{name:<28} {box:<23} {cells[0]:<16} {cells[1]:<13} {cells[2]:<11}")
    return "\n".join(lines)


def predict_files(paths: Sequence[str], out: Path | None = None, pipeline: Any = None,
                  annotate_dir: Path | None = None, batch_size: int = 32, all_faces: bool = False,
                  backend: str = "auto", progress: bool = True, fmt: str | None = None) -> list:
    """Predict photos, and write them into ``out`` when given: CSV (a row per photo, or with ``all_faces`` a row per
    face and a ``face_index`` column) or JSON (``photo_records``), as ``fmt`` or the suffix says (``output_format``);
    with ``annotate_dir``, boxed pictures too. ``pipeline``: a directory (None: the shipped pipeline) or a loaded
    ``Pipeline``/``PipelineEnsemble``. Returns one ``Prediction`` per path, or with ``all_faces`` one list per path
    (every face). ``progress``: a bar over the photos."""
    from .core import Pipeline

    if annotate_dir is not None and Path(annotate_dir).exists() and not Path(annotate_dir).is_dir():
        # said before the photos are classified, not after
        raise UsageError(f"--annotate {annotate_dir}: a file is there; annotated photos go into a folder")
    kind = output_format(out, fmt)
    pipe = pipeline if hasattr(pipeline, "predict") else Pipeline.from_pretrained(pipeline, backend=backend)
    if all_faces:
        per_path = pipe.predict_all_faces(paths, batch_size=batch_size, progress=progress)
    else:
        per_path = pipe.predict(paths, batch_size=batch_size, progress=progress)
    if annotate_dir is not None:
        write_annotated(paths, per_path, annotate_dir)
    if out is not None and kind == "json":
        write_json_atomic(Path(out), photo_records(paths, per_path))
    elif out is not None:
        rows = ([dict(p.to_row(), face_index=k) for faces in per_path for k, p in enumerate(faces)] if all_faces
                else [p.to_row() for p in per_path])
        write_csv_atomic(Path(out), _row_fields(rows), rows)
    return per_path


def predict_to_csv(paths: Sequence[str], out: Path, pipeline: Any = None, annotate_dir: Path | None = None,
                   batch_size: int = 32, all_faces: bool = False, backend: str = "auto", progress: bool = True) -> list:
    """``predict_files`` into a CSV file."""
    return predict_files(paths, out, pipeline, annotate_dir, batch_size, all_faces, backend, progress, fmt="csv")


def write_annotated(paths: Sequence[str], preds: Sequence, folder: Path) -> list[Path]:
    """Each readable photo with its face boxed and labelled, as ``folder/<name>.jpg`` (numbered when names repeat)."""
    from .visualize import annotate

    folder.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for i, (path, pred) in enumerate(zip(paths, preds)):
        if (pred[0] if isinstance(pred, list) else pred).error:
            continue
        name = Path(path).stem
        if name in used:
            name = f"{name}_{i}"
        used.add(name)
        annotate(path, pred).save(folder / f"{name}.jpg", quality=92)
        written.append(folder / f"{name}.jpg")
    return written


def eval_images(eval_dir: Path) -> list[str]:
    """The ImageIDs of a competition eval folder (``info.csv`` + ``images/``) in ``info.csv`` order, checked first:
    ``SubmissionError`` lists (the first 20) rows without an image or listed twice, with their lines."""
    from ..tables import read_csv_rows

    rows = read_csv_rows(eval_dir / "info.csv", ["ImageID"])
    problems, seen = [], {}
    for line, r in enumerate(rows, start=2):
        name = r["ImageID"].strip()
        if name in seen:
            problems.append(f"line {line}: {name} listed twice (first on line {seen[name]})")
        elif not (eval_dir / "images" / name).is_file():
            problems.append(f"line {line}: {name} has no image in {eval_dir / 'images'}")
        seen.setdefault(name, line)
    if problems:
        raise SubmissionError(f"{eval_dir / 'info.csv'}: {len(problems)} problem(s):\n  {_listing(problems)}")
    return [r["ImageID"] for r in rows]


def write_submission(eval_dir: Path, out: Path, pipeline: Any, batch_size: int = 32,
                     ids: Sequence[str] | None = None, progress: bool = True) -> int:
    """Predict a competition eval folder into ``ImageID,ans`` in ``info.csv`` order; returns the number of rows.
    Nothing is written when ``eval_images`` finds a problem (``ids``: its result, when already checked) or an image
    cannot be read (``SubmissionError``)."""
    ids = eval_images(eval_dir) if ids is None else ids
    preds = pipeline.predict([str(eval_dir / "images" / i.strip()) for i in ids], batch_size=batch_size,
                             progress=progress)
    bad = [p.error for p in preds if p.error]
    if bad:
        raise SubmissionError(f"{len(bad)} image(s) could not be predicted:\n  {_listing(bad)}")
    write_csv_atomic(out, ["ImageID", "ans"], [{"ImageID": i, "ans": p.class_id} for i, p in zip(ids, preds)])
    return len(ids)


def _listing(items: Sequence[str], limit: int = 20) -> str:
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return "\n  ".join(items[:limit]) + more


def frame_rows(frame: VideoFrame) -> list[dict[str, Any]]:
    """One CSV row per face of a frame (``Prediction.to_row`` with frame, time, face index and track id)."""
    tracks = frame.tracks or [""] * len(frame.predictions)
    return [{"frame": frame.index, "time": f"{frame.time:.3f}", "face_index": k, "track": t, **p.to_row()}
            for k, (p, t) in enumerate(zip(frame.predictions, tracks))]


@dataclass
class VideoSummary:
    """What a video run saw: the frames processed, the faces (one per face per frame) by mask state and the face
    tracks by the mask state each was seen with most (a track is a face followed from frame to frame; one person
    makes several when the detector loses them for a frame or they move far)."""

    frames: int
    faces: Counter
    tracks: Counter = field(default_factory=Counter)
    dropped: int = 0  # a camera's frames skipped while the pipeline was busy (``video.dropped_frames``)

    def __str__(self) -> str:
        def parts(c: Counter) -> str:
            return ", ".join(f"{m} {c.get(m, 0)}" for m in MASK_LABELS)

        return (f"{self.frames} frame(s), {sum(self.faces.values())} face(s): {parts(self.faces)}; "
                f"{sum(self.tracks.values())} face track(s): {parts(self.tracks)}"
                + (f"; {self.dropped} camera frame(s) skipped to keep up" if self.dropped else ""))


def predict_video_to_csv(pipe: Any, source: str | Path | int, out: str | Path, annotate: str | Path | None = None,
                         every: int = 1, limit: int | None = None, progress: bool = True,
                         refresh: int | None = None) -> VideoSummary:
    """Predict every face of every ``every``-th frame into a CSV (one row per face per frame) and, with
    ``annotate``, an mp4 of the processed frames with the faces boxed and labelled. Returns the frames and faces
    counted (its ``str`` is the line the CLI prints). ``refresh``: as ``Pipeline.predict_video``'s."""
    import cv2

    from .visualize import annotate as draw

    total, fps = video_info(source)
    todo = None if total is None else -(-total // every)  # the frames processed: the first of every ``every``
    if todo is not None and limit is not None:
        todo = min(todo, limit)
    frames_bar = bar(total=todo, desc="video frames", unit="frame", enabled=progress)
    rows: list[dict[str, Any]] = []
    counts: Counter = Counter()
    by_track: dict[int, Counter] = {}
    writer, n, indices = None, 0, []
    try:
        with atomic_path(annotate) if annotate else nullcontext() as tmp:
            for frame in _until_interrupted(pipe.predict_video(source, every=every, limit=limit, refresh=refresh)):
                rows.extend(frame_rows(frame))
                indices.append(frame.index)
                counts.update(p.mask for p in frame.predictions)  # a frame's predictions are its found faces
                for t, p in zip(frame.tracks, frame.predictions):
                    by_track.setdefault(t, Counter())[p.mask] += 1
                if tmp is not None:
                    tags = [f"#{t}" for t in frame.tracks]
                    picture = np.asarray(draw(frame.image, frame.predictions, tags) if frame.predictions else frame.image)
                    if writer is None:
                        writer = _writer(tmp, picture.shape[1], picture.shape[0], (fps or 25.0) / every)
                    writer.write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                n += 1
                frames_bar.update(1)
            if writer is not None:
                writer.release()
                writer = None
    finally:
        if writer is not None:
            writer.release()
        frames_bar.close()
    first = ["frame", "time", "face_index", "track"]
    fields = first + [k for k in _row_fields(rows) if k not in first]
    write_csv_atomic(out, fields, rows)
    dropped = dropped_frames(indices, every) if isinstance(source, int) else 0
    return VideoSummary(n, counts, Counter(c.most_common(1)[0][0] for c in by_track.values()), dropped)


def _until_interrupted(items: Iterator) -> Iterator:
    """The items until Ctrl-C, which ends a camera's stream (what came before it is still written)."""
    try:
        yield from items
    except KeyboardInterrupt:
        return


def _row_fields(rows: Sequence[dict]) -> list[str]:
    """A CSV header for prediction rows: their columns in first-seen order, ``error`` last (a prediction's columns
    when there are no rows)."""
    from .core import Prediction

    fields = list(dict.fromkeys(k for r in rows for k in r)) if rows else list(Prediction("").to_row())
    fields.remove("error")
    return fields + ["error"]


def _writer(path: Path, width: int, height: int, fps: float) -> Any:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise VideoError(f"{path}: OpenCV cannot write an mp4 video here")
    return writer
