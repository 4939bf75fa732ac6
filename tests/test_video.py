"""Videos: frames read, every face of each processed frame predicted, rows, an annotated video, the CLI."""
import csv
from collections import Counter

import cv2
import numpy as np
import pytest

from maskage import Pipeline
from maskage.cli import main
from maskage.predict import predict_video_to_csv
from maskage.video import VideoError, frames

from .conftest import tiny_model
from .test_scenes import crowd

N_FRAMES, FPS = 8, 10.0


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """8 frames at 10 fps, 480 x 480, shifted a little each frame: the crowd of three faces scaled to 2/3 (faces
    of 40, 29 and 20 px) and, every other frame, its left part at full size (two faces); frame 5 blank."""
    canvas, _ = crowd()
    small = cv2.resize(canvas, (480, 480), interpolation=cv2.INTER_AREA)
    big = canvas[:480, :480]
    path = tmp_path_factory.mktemp("video") / "entrance.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (480, 480))
    for i in range(N_FRAMES):
        frame = np.roll(big if i % 2 else small, 2 * i, axis=1)
        if i == 5:
            frame = np.full_like(frame, 128)
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="module")
def pipe():
    return Pipeline(tiny_model("mask", 7), tiny_model("gender", 8), tiny_model("age", 9))


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_frames_every_nth_with_index_and_time(video):
    got = list(frames(video, every=3))
    assert [i for i, _, _ in got] == [0, 3, 6]
    assert [t for _, t, _ in got] == pytest.approx([0.0, 0.3, 0.6])
    assert got[0][2].shape == (480, 480, 3) and got[0][2].dtype == np.uint8
    assert [i for i, _, _ in frames(video, limit=2)] == [0, 1]
    with pytest.raises(ValueError, match="every"):
        list(frames(video, every=0))


def test_missing_or_unreadable_video_is_a_clear_error(tmp_path):
    with pytest.raises(VideoError, match="no such video"):
        list(frames(tmp_path / "none.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match="cannot open|not a video"):
        list(frames(bad))


def test_predict_video_gives_every_face_of_each_frame(pipe, video):
    got = list(pipe.predict_video(video, every=1, batch_size=3))
    assert [f.index for f in got] == list(range(N_FRAMES))
    assert got[5].predictions == []  # the blank frame: no face, no centre-crop guess
    for f in got:
        if f.index != 5:
            assert len(f.predictions) == (2 if f.index % 2 else 3), f.index
            assert all(p.face_box is not None and p.source == str(video) for p in f.predictions)
    # a frame's predictions are those of the photo itself
    (photo,) = pipe.predict_all_faces([got[2].image])
    assert [p.class_id for p in got[2].predictions] == [p.class_id for p in photo]
    assert [p.face_box for p in got[2].predictions] == [p.face_box for p in photo]


def test_video_rows_annotated_video_and_counts(pipe, video, tmp_path):
    out, annotated = tmp_path / "rows.csv", tmp_path / "boxed.mp4"
    seen = predict_video_to_csv(pipe, video, out, annotated, every=2, progress=False)
    rows = _rows(out)
    assert list(rows[0])[:3] == ["frame", "time", "face_index"] and "p_mask_wear" in rows[0]
    assert sorted({int(r["frame"]) for r in rows}) == [0, 2, 4, 6]
    assert seen.frames == 4 and sum(seen.faces.values()) == len(rows)
    assert seen.faces == Counter(r["mask"] for r in rows) and str(seen).startswith(f"4 frame(s), {len(rows)} face(s)")
    cap = cv2.VideoCapture(str(annotated))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 4 and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 480
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left


def test_cli_video_equals_api(pipe, video, tmp_path, capsys):
    d = pipe.save(tmp_path / "pipe")
    out = tmp_path / "cli.csv"
    assert main(["predict", str(video), "--pipeline", str(d), "--out", str(out), "--every", "2",
                 "--annotate", str(tmp_path / "a.mp4")]) == 0
    text = capsys.readouterr().out
    api = [p for f in Pipeline.from_pretrained(d).predict_video(video, every=2) for p in f.predictions]
    rows = _rows(out)
    assert [int(r["class"]) for r in rows] == [p.class_id for p in api]
    assert f"4 frame(s), {len(rows)} face(s)" in text and (tmp_path / "a.mp4").is_file()
    # videos and photos do not mix in one call; --every is for videos
    assert main(["predict", str(video), str(video), "--pipeline", str(d), "--out", str(out)]) == 2
    assert main(["predict", str(tmp_path), "--every", "2", "--pipeline", str(d), "--out", str(out)]) == 2
    assert main(["predict", str(tmp_path / "gone.mp4"), "--pipeline", str(d), "--out", str(out)]) == 2
    assert "no such video" in capsys.readouterr().err


def test_a_camera_that_is_not_there_is_a_clear_error(pipe, tmp_path, capsys):
    d = pipe.save(tmp_path / "pipe")
    assert main(["predict", "--camera", "97", "--pipeline", str(d), "--out", str(tmp_path / "c.csv")]) == 2
    assert "cannot open camera 97" in capsys.readouterr().err and not (tmp_path / "c.csv").exists()
