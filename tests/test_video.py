"""Videos: frames read, every face of each processed frame predicted, rows, an annotated video, the CLI."""
import csv
from collections import Counter

import cv2
import numpy as np
import pytest

from maskage import Pipeline
from maskage.apps.cli import main
from maskage.pipeline.outputs import predict_video_to_csv
from maskage.pipeline.video import DEFAULT_REFRESH, FaceTracks, VideoError, frames

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
def still_video(tmp_path_factory):
    """6 frames of the small crowd (three faces), moving 1 px a frame: the same faces in about the same place."""
    canvas, _ = crowd()
    small = cv2.resize(canvas, (480, 480), interpolation=cv2.INTER_AREA)
    path = tmp_path_factory.mktemp("still") / "queue.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (480, 480))
    for i in range(6):
        writer.write(cv2.cvtColor(np.roll(small, i, axis=1), cv2.COLOR_RGB2BGR))
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
    got = list(pipe.predict_video(video, every=1, batch_size=3, refresh=1))
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
    assert list(rows[0])[:4] == ["frame", "time", "face_index", "track"] and "p_mask_wear" in rows[0]
    assert sorted({int(r["frame"]) for r in rows}) == [0, 2, 4, 6]
    assert seen.frames == 4 and sum(seen.faces.values()) == len(rows)
    assert seen.faces == Counter(r["mask"] for r in rows) and str(seen).startswith(f"4 frame(s), {len(rows)} face(s)")
    cap = cv2.VideoCapture(str(annotated))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 4 and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 480
    assert not list(tmp_path.glob(".*tmp*"))  # no temp files left


def test_video_rows_and_summary_count_face_tracks(pipe, still_video, tmp_path):
    out = tmp_path / "rows.csv"
    seen = predict_video_to_csv(pipe, still_video, out, progress=False, refresh=1)
    rows = _rows(out)
    by_track: dict = {}
    for r in rows:
        by_track.setdefault(r["track"], Counter())[r["mask"]] += 1
    assert sorted(by_track) == ["0", "1", "2"] and all(sum(c.values()) == 6 for c in by_track.values())
    assert seen.tracks == Counter(c.most_common(1)[0][0] for c in by_track.values())
    assert str(seen).startswith("6 frame(s), 18 face(s)") and "; 3 face track(s): wear" in str(seen)


def test_face_tracks_carry_a_face_that_stays_until_it_is_due():
    tracks = FaceTracks(refresh=3)
    a, b = (10, 10, 50, 50), (100, 10, 140, 50)
    assert tracks.match([a, b]) == [None, None]  # nothing seen yet: classify both
    assert tracks.ids == [0, 1]
    tracks.update(["A", "B"])
    moved = (12, 10, 52, 50)  # a moved 2 px (IoU 0.9); b gone; a new face c
    c = (200, 200, 240, 240)
    assert tracks.match([c, moved]) == [None, "A"]
    assert tracks.ids == [2, 0]  # a keeps its track; c starts one
    tracks.update(["C", "A"])
    assert tracks.match([moved, c]) == ["A", "C"]  # a's second carried frame, c's first
    tracks.update(["A", "C"])
    assert tracks.match([moved, c]) == [None, "C"]  # a is due (classified 3 frames ago), c is not
    assert tracks.ids == [0, 2]  # due or not, the same face keeps its track
    tracks.update(["A2", "C"])
    tracks.resolve(str.lower)
    assert tracks.match([(150, 150, 190, 190), moved]) == [None, "a2"]  # far from every face: classify
    assert tracks.ids == [3, 0]
    # refresh 1: every face every frame; one old face is carried to one new face only
    once = FaceTracks(refresh=1)
    once.match([a])
    once.update(["A"])
    assert once.match([a]) == [None]
    two = FaceTracks(refresh=2)
    two.match([a])
    two.update(["A"])
    assert two.match([a, moved]) == ["A", None]  # the better overlap takes it
    with pytest.raises(ValueError, match="refresh"):
        FaceTracks(refresh=0)


def test_face_tracks_look_for_a_face_where_its_last_move_takes_it():
    tracks = FaceTracks(refresh=10)
    tracks.match([(10, 10, 50, 50)])
    tracks.update(["A"])
    assert tracks.match([(22, 10, 62, 50)]) == ["A"]  # moved 12 px: IoU 0.54 with where it was
    tracks.update(["A"])
    # 18 px more: IoU 0.38 with its last box, 0.74 with where a move of 12 px takes it
    assert tracks.match([(40, 10, 80, 50)]) == ["A"]
    tracks.update(["A"])
    assert tracks.match([(40, 10, 80, 50)]) == ["A"]  # stopped: found where it was
    tracks.update(["A"])
    plain = FaceTracks(refresh=10)  # the same moves, one by one from a new track: 18 px is too far from where it was
    plain.match([(22, 10, 62, 50)])
    plain.update(["B"])
    assert plain.match([(40, 10, 80, 50)]) == [None]


def test_refresh_classifies_a_face_that_stays_only_every_nth_frame(pipe, still_video, monkeypatch):
    every_frame = list(pipe.predict_video(still_video, refresh=1))
    n = len(every_frame[0].predictions)
    assert n == 3 and all(len(f.predictions) == n for f in every_frame)
    calls = []
    real = pipe._classify
    monkeypatch.setattr(pipe, "_classify", lambda a, d, s: calls.append(len(d)) or real(a, d, s))
    got = list(pipe.predict_video(still_video, refresh=3))  # batches of 4 frames: frame 3 carries into 4 and 5
    assert sum(calls) == 2 * n  # frames 0 and 3 of 6
    for f, e in zip(got, every_frame):
        assert [p.face_box for p in f.predictions] == [p.face_box for p in e.predictions]  # each frame's own boxes
    for k in (0, 3):  # classified: as with refresh 1
        assert [p.class_id for p in got[k].predictions] == [p.class_id for p in every_frame[k].predictions]
    for k, source in ((1, 0), (2, 0), (4, 3), (5, 3)):  # carried: the labels and probabilities of the last call
        assert [(p.class_id, p.mask_probs, p.age_probs) for p in got[k].predictions] == \
            [(p.class_id, p.mask_probs, p.age_probs) for p in got[source].predictions]
    assert all(sorted(f.tracks) == [0, 1, 2] for f in got + every_frame)  # three faces followed through 6 frames
    assert [f.tracks for f in got] == [f.tracks for f in every_frame]
    calls.clear()
    default = list(pipe.predict_video(still_video))  # DEFAULT_REFRESH (5): frames 0 and 5 of 6
    assert DEFAULT_REFRESH == 5 and sum(calls) == 2 * n
    assert [p.class_id for p in default[4].predictions] == [p.class_id for p in every_frame[0].predictions]


def test_smooth_mixes_a_face_s_new_probabilities_with_its_track_s_last(pipe, still_video):
    fresh = list(pipe.predict_video(still_video, refresh=1))
    mixed = list(pipe.predict_video(still_video, refresh=1, smooth=0.5))
    assert [p.mask_probs for p in mixed[0].predictions] == [p.mask_probs for p in fresh[0].predictions]  # new faces
    expected = [p.mask_probs for p in fresh[0].predictions]
    for k in range(1, len(fresh)):  # each frame: half its own call, half the track's last (smoothed) one
        expected = [{m: 0.5 * p.mask_probs[m] + 0.5 * e[m] for m in e} for p, e in zip(fresh[k].predictions, expected)]
        got = mixed[k].predictions
        assert [p.mask_probs for p in got] == [pytest.approx(e) for e in expected]
        for p in got:  # labels from the mix
            assert p.mask == max(p.mask_probs, key=p.mask_probs.get) and p.age == max(p.age_probs, key=p.age_probs.get)
    assert any(a.mask_probs != b.mask_probs for a, b in zip(mixed[3].predictions, fresh[3].predictions))
    with pytest.raises(ValueError, match="smooth"):
        list(pipe.predict_video(still_video, smooth=1.0))


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
    assert main(["predict", str(tmp_path), "--refresh", "2", "--pipeline", str(d), "--out", str(out)]) == 2
    # --refresh: the API's rows
    assert main(["predict", str(video), "--pipeline", str(d), "--out", str(out), "--refresh", "3"]) == 0
    api = [p for f in Pipeline.from_pretrained(d).predict_video(video, refresh=3) for p in f.predictions]
    assert [(int(r["class"]), float(r["p_mask_wear"])) for r in _rows(out)] == \
        [(p.class_id, pytest.approx(p.mask_probs["wear"], abs=1e-5)) for p in api]
    assert main(["predict", str(tmp_path / "gone.mp4"), "--pipeline", str(d), "--out", str(out)]) == 2
    assert "no such video" in capsys.readouterr().err


def test_a_camera_that_is_not_there_is_a_clear_error(pipe, tmp_path, capsys):
    d = pipe.save(tmp_path / "pipe")
    assert main(["predict", "--camera", "97", "--pipeline", str(d), "--out", str(tmp_path / "c.csv")]) == 2
    assert "cannot open camera 97" in capsys.readouterr().err and not (tmp_path / "c.csv").exists()


class _FakeCamera:
    """A camera giving ``n`` frames, one every ``period`` seconds, each frame's pixels its own number."""

    def __init__(self, n: int, period: float = 0.001) -> None:
        self.n, self.period, self.i = n, period, 0

    def read(self):
        import time

        if self.i >= self.n:
            return False, None
        time.sleep(self.period)
        self.i += 1
        return True, np.full((4, 4, 3), self.i - 1, np.uint8)


def test_a_slow_reader_of_a_camera_gets_its_newest_frames_and_knows_how_many_it_skipped():
    import time

    from maskage.pipeline.video import LatestFrame

    reader, got = LatestFrame(_FakeCamera(200).read), []
    while (item := reader.next()) is not None:
        index, frame = item
        assert int(frame[0, 0, 0]) == index  # the frame handed out is the one its index names
        got.append(index)
        time.sleep(0.005)  # a pipeline five times slower than the camera
    reader.close()
    assert got == sorted(set(got)) and got[-1] == 199  # newest first, never twice, the last one included
    assert reader.dropped > 0 and len(got) + reader.dropped == 200  # every frame taken or counted as skipped


def test_camera_frames_keep_every_spacing_and_the_summary_says_what_was_skipped():
    from collections import Counter

    from maskage.pipeline.outputs import VideoSummary
    from maskage.pipeline.video import _camera_frames, dropped_frames

    taken = [index for index, _, _ in _camera_frames(_FakeCamera(60, period=0.0005), every=3, limit=None)]
    assert taken and all(b - a >= 3 for a, b in zip(taken, taken[1:]))
    assert list(_camera_frames(_FakeCamera(60), every=1, limit=4)).__len__() == 4
    assert dropped_frames([0, 1, 5, 6]) == 3 and dropped_frames([0, 2, 7], every=2) == 3 and dropped_frames([4]) == 0
    assert "12 camera frame(s) skipped to keep up" in str(VideoSummary(5, Counter(), Counter(), dropped=12))
    assert "skipped" not in str(VideoSummary(5, Counter(), Counter()))
