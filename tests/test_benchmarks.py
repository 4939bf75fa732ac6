"""Helpers the benchmark scripts share: the competition-sized photos they make from face crops."""
import sys
from pathlib import Path

import numpy as np
import pytest
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


def test_cross_source_sets_are_balanced_one_photo_per_person_and_scored(tmp_path, monkeypatch):
    from maskage.detect import faces
    from maskage.training.synth import build_dataset

    from .test_synth import FixedDetector, write_sources

    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    from cross_source import eval_sets, leftover_rows, save_error_grids, score_rows

    build_dataset(write_sources(tmp_path / "src"), tmp_path / "b", eval_fraction=0.6, photos=["normal", "mask1"])
    sets = eval_sets(tmp_path / "b", per_cell=100)
    # the calibration rows: people with ages the balanced sets leave out, never one of theirs
    small = eval_sets(tmp_path / "b", per_cell=1)
    left = leftover_rows(tmp_path / "b", small)
    scored = {r["ImageID"] for kinds in small.values() for rows in kinds.values() for r in rows}
    assert left and all((tmp_path / "b" / "eval" / r["path"]).is_file() for r in left)
    assert not scored & {r["path"].split("/", 1)[1] for r in left} and all(int(r["age"]) >= 0 for r in left)
    assert set(sets) <= {"utkface", "aaf", "lfw"} and sets
    for source, kinds in sets.items():
        un, ma = kinds["unmasked"], kinds["masked"]
        people = [r["source_person"] for r in un]
        assert len(people) == len(set(people)) == len(ma)  # one photo of each person, both kinds
        assert all(int(r["mask"]) == 2 for r in un) and all(int(r["mask"]) == 0 for r in ma)
        cells = [int(r["gender"]) * 3 + (0 if int(r["age"]) < 0 else min(2, int(r["age"]) // 30)) for r in un]
        assert len(set(np.bincount(cells)[np.unique(cells)])) == 1  # equal people in every cell present
    rows = [{"gender": "0", "age": "25"}, {"gender": "1", "age": "65"}, {"gender": "1", "age": "40"}]
    s = score_rows(rows, np.array([0, 1, 0]), None, np.array([0, 2, 1]), 60)
    assert s["age_f1"] == 1.0 and 0.6 < s["gender_f1"] < 0.7
    assert s["age_confusion"] == [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    wrong = score_rows(rows, np.array([0, 1, 0]), None, np.array([1, 2, 1]), 60)  # 25 -> 30-59, 65 -> 60+
    assert wrong["age_confusion"] == [[0, 1, 0], [0, 1, 0], [0, 0, 1]]
    assert "age_f1" not in score_rows([{"gender": "0", "age": "-1"}], np.array([0]), None, np.array([0]), 60)

    class P:  # a Prediction's probabilities
        def __init__(self, male, young):
            self.gender_probs = {"male": male, "female": 1 - male}
            self.age_probs = {"<30": young, "30-59": 1 - young, "60+": 0.0}

    (tmp_path / "img").mkdir()
    for i in range(3):
        Image.new("RGB", (20, 20)).save(tmp_path / "img" / f"{i}.jpg")
    rows = [dict(r, ImageID=f"{i}.jpg") for i, r in enumerate(rows)]
    save_error_grids(tmp_path / "grids", rows, [P(0.9, 0.9), P(0.8, 0.1), P(0.4, 0.2)], tmp_path / "img", 60)
    # the woman called a man is in the female grid, the 65-year-old called 30-59 in the 60+ grid
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == ["age_60plus.png", "gender_female.png"]


def test_scene_error_grids_hold_wrong_missed_and_unmatched_faces(tmp_path):
    from scenes import _errors, save_errors

    from maskage.pipeline.core import Prediction
    from maskage.pipeline.scenes import LabelledFace, match

    Image.fromarray(np.full((200, 300, 3), 128, np.uint8)).save(tmp_path / "scene.jpg")
    truth = [LabelledFace((10, 10, 60, 60), "wear"), LabelledFace((100, 10, 150, 60), "incorrect"),
             LabelledFace((200, 100, 250, 150), "not_wear")]
    found = [Prediction("scene.jpg", mask="wear", mask_probs={"wear": 0.9}, face_box=(12, 12, 60, 60), face_prob=0.99),
             Prediction("scene.jpg", mask="not_wear", mask_probs={"not_wear": 0.8}, face_box=(100, 12, 150, 60),
                        face_prob=0.95),
             Prediction("scene.jpg", mask="wear", mask_probs={"wear": 0.7}, face_box=(10, 120, 40, 150),
                        face_prob=0.75)]
    pairs = match([t.box for t in truth], [p.face_box for p in found])
    errors = _errors(str(tmp_path / "scene.jpg"), truth, found, pairs)
    kinds = sorted((e[2], e[3]) for e in errors)
    # the right call is left out; the wrong one, the missed face and the detection no label matches are in
    assert kinds == [("incorrect", "not_wear"), ("not_wear", "missed"), ("unmatched", "wear")]
    assert [e[0] for e in errors if e[2] == "unmatched"] == [0.75]  # ranked by the detector's score
    save_errors(tmp_path / "grids", errors)
    assert sorted(p.name for p in (tmp_path / "grids").iterdir()) == ["incorrect.png", "not_wear.png", "unmatched.png"]


def test_camera_frames_pan_and_zoom_and_view_box_follows_a_face():
    from canvas import VIDEO_SIZE, camera_frames, view_box

    photo = np.zeros((480, 640, 3), np.uint8)
    photo[200:280, 300:380] = 255  # an 80 px white "face"
    views = camera_frames(photo, 8)
    assert len(views) == 8 and all(f.shape == (VIDEO_SIZE[1], VIDEO_SIZE[0], 3) for f, _ in views)
    boxes = []
    for frame, view in views:
        box = view_box((300, 200, 380, 280), view)
        ys, xs = np.nonzero(frame[..., 0] > 128)
        assert abs(xs.min() - box[0]) <= 2 and abs(xs.max() + 1 - box[2]) <= 2  # where the frame shows it
        assert abs(ys.min() - box[1]) <= 2 and abs(ys.max() + 1 - box[3]) <= 2
        boxes.append(box)
    sides = [b[2] - b[0] for b in boxes]
    assert boxes[-1][0] < boxes[0][0] and sides[-1] > sides[0]  # the camera pans right and zooms in
    assert max(abs(a[0] - b[0]) for a, b in zip(boxes, boxes[1:])) < 30  # a few px a frame, not jumps
    # a face whose centre leaves the view is dropped; one at the edge is cut there
    assert view_box((0, 200, 40, 280), views[-1][1]) is None
    edge = view_box((600, 200, 660, 280), views[-1][1])
    assert edge is not None and edge[2] == VIDEO_SIZE[0]
    wide = np.zeros((300, 900, 3), np.uint8)  # not 4:3: a square face stays square
    wide[100:180, 400:480] = 255
    inside = lambda b: b is not None and b[0] > 0 and b[2] < VIDEO_SIZE[0]  # noqa: E731
    shown = [(f, v) for f, v in camera_frames(wide, 8) if inside(view_box((400, 100, 480, 180), v))]
    assert len(shown) >= 2
    for frame, view in shown:
        ys, xs = np.nonzero(frame[..., 0] > 128)
        assert abs((xs.max() - xs.min()) - (ys.max() - ys.min())) <= 2 and abs(view[2] - view[3]) < 0.01


def test_scene_video_scores_each_frame_against_the_moved_boxes(tmp_path, capsys):
    from canvas import camera_frames, view_box
    from scenes import video

    from maskage.pipeline.core import Prediction
    from maskage.pipeline.scenes import LabelledFace
    from maskage.pipeline.video import VideoFrame

    photo = np.full((240, 320, 3), 90, np.uint8)
    Image.fromarray(photo).save(tmp_path / "scene.png")
    truth = [LabelledFace((40, 40, 100, 100), "incorrect"), LabelledFace((200, 60, 260, 120), "wear")]
    views = [v for _, v in camera_frames(photo, 16)]

    class Perfect:  # finds every moved face and calls its state right; the second face "wear" in frame 3 only
        def predict_video(self, path, limit=None, refresh=1, smooth=0.0):
            for k, view in enumerate(views[:limit]):
                preds = [Prediction("v", mask="wear" if (j == 0 and k == 3) else t.mask,
                                    face_box=view_box(t.box, view)) for j, t in enumerate(truth)]
                yield VideoFrame(k, k / 25, photo, preds)

    video(Perfect(), [str(tmp_path / "scene.png")], [truth], [1, 3], str(tmp_path / "v.json"))
    import json

    got = json.loads((tmp_path / "v.json").read_text())
    assert sorted(got) == ["refresh_1_smooth_0.0", "refresh_3_smooth_0.0"]
    r = got["refresh_1_smooth_0.0"]
    assert r["frames"] == 16 and r["faces"] == 32 and r["found"] == 32 and r["unmatched"] == 0
    assert r["incorrect_found"] == 16 and r["incorrect_caught"] == 15
    assert "video, refresh 3, smooth 0.0" in capsys.readouterr().out


def test_cross_source_scores_carry_intervals_and_paired_differences():
    from cross_source import compare, score_rows, without_labels

    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 300)
    guess = np.where(rng.random(300) < 0.8, truth, rng.integers(0, 3, 300))
    rows = [{"gender": str(t % 2), "age": str(20 + 25 * t)} for t in truth]
    perfect = score_rows(rows, truth % 2, None, truth, 60)
    noisy = score_rows(rows, guess % 2, None, guess, 60)
    assert perfect["gender_f1"] == 1.0 and perfect["gender_ci"] == [1.0, 1.0]
    assert noisy["age_ci"][0] < noisy["age_f1"] < noisy["age_ci"][1] < 1.0
    lines = compare({"a": {"s": {"unmasked": perfect}}, "b": {"s": {"unmasked": noisy}}}, "a")
    assert len(lines) == 1 and "gender -0." in lines[0] and "age -0." in lines[0]
    assert "_labels" not in str(without_labels({"a": {"s": {"unmasked": noisy}}}))


def test_cross_source_faceres_heads_read_the_weights_named(tmp_path, monkeypatch):
    from skimage import data

    from maskage.models import faceres
    from cross_source import faceres_heads

    asked, real = [], faceres.load_state
    monkeypatch.setattr(faceres, "load_state",
                        lambda path=None, variant="faceres": asked.append(variant) or real(variant=variant))
    Image.fromarray(data.astronaut()).save(tmp_path / "a.png")
    genders, groups, found = {}, {}, {}
    for variant in ("faceres", "faceres-deep"):
        genders[variant], groups[variant], found[variant] = faceres_heads([str(tmp_path / "a.png")], 60, variant)
    assert asked == ["faceres", "faceres-deep"]
    assert found == {"faceres": 1.0, "faceres-deep": 1.0}
    assert all(g.shape == (1,) and g[0] in (0, 1) for g in genders.values())
    assert all(a.shape == (1,) and a[0] in (0, 1, 2) for a in groups.values())


def test_stage_time_times_each_pipelines_stage_once_a_round_on_its_own_inputs(tmp_path):
    from stage_time import stage_rates

    from maskage.pipeline.core import Pipeline

    from .conftest import tiny_model

    pipes = {"a": Pipeline(tiny_model("mask", 1), tiny_model("gender", 2), tiny_model("age", 3)),
             "b": Pipeline(tiny_model("mask", 4), tiny_model("gender", 5), tiny_model("age", 6))}
    calls = {name: 0 for name in pipes}
    for name, pipe in pipes.items():
        run = pipe.task_probs_inputs

        def counted(task, inputs, name=name, run=run):
            assert task == "mask" and len(inputs[0]) == 3  # one input per mask model, one row per photo
            calls[name] += 1
            return run(task, inputs)
        pipe.task_probs_inputs = counted
    images = [np.random.default_rng(i).integers(0, 255, (96, 80, 3), dtype=np.uint8) for i in range(3)]
    rates = stage_rates(pipes, images, "mask", rounds=4)
    assert list(rates) == ["a", "b"] and all(len(r) == 4 and min(r) > 0 for r in rates.values())
    assert calls == {"a": 5, "b": 5}  # a warm-up, then once a round


@pytest.fixture
def avx2_lib(tmp_path):
    """avx2_only's preload built into tmp_path; the test is skipped where this machine cannot hide CPU features (not
    x86-64 Linux with CPUID faulting, or no C compiler)."""
    import avx2_only

    try:
        return avx2_only.build(tmp_path)
    except avx2_only.Unavailable as exc:
        pytest.skip(str(exc))


def test_avx2_only_hides_avx512_vnni_and_amx_from_the_command_it_runs(tmp_path, avx2_lib):
    import subprocess

    import avx2_only

    assert avx2_only.build(tmp_path) == avx2_lib  # built once per source
    probe = ("import torch; from numpy._core._multiarray_umath import __cpu_features__ as f; "
             "from machine import cpu_line; print(torch.backends.cpu.get_cpu_capability(), f['AVX2'], f['AVX512F']); "
             "print(cpu_line())")
    bench = str(Path(__file__).resolve().parents[1] / "benchmarks")
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=bench)
    hidden = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=bench,
                            env=avx2_only.environment(avx2_lib))
    capability, avx2, avx512 = hidden.stdout.split("\n")[0].split()
    assert avx512 == "False" and capability in ("AVX2", "DEFAULT")
    assert avx2 == plain.stdout.split("\n")[0].split()[1]  # AVX2 itself stays as the CPU has it
    assert "run as an AVX2-only CPU" in hidden.stdout and "NOT hidden" not in hidden.stdout
    assert "run as an AVX2-only CPU" not in plain.stdout


def test_avx2_only_says_unavailable_when_the_preload_refuses_to_start(tmp_path, monkeypatch):
    import avx2_only

    refusing = tmp_path / "refuse.c"  # as avx2_only.c does where the kernel refuses CPUID faulting
    refusing.write_text("#include <stdio.h>\n#include <stdlib.h>\n"
                        "__attribute__((constructor)) static void f(void) { fputs(\"no faulting here\\n\", stderr); "
                        "exit(3); }\n")
    monkeypatch.setattr(avx2_only, "SOURCE", refusing)
    try:
        avx2_only.build(tmp_path)
    except avx2_only.Unavailable as exc:
        if "cpuid_fault" in str(exc) or "compiler" in str(exc):
            pytest.skip(str(exc))  # cannot build here at all
        assert "no faulting here" in str(exc)
    else:
        raise AssertionError("build() returned a preload that stops every process")


def test_the_shipped_pipeline_gives_the_same_answers_on_avx2_kernels(tmp_path, avx2_lib):
    # 7-bit weights in matrix products: AVX2's int8 kernels (no VNNI) must not overflow (1.0.0's 8-bit files moved a
    # probability by 0.5 there), so a photo's answers on this CPU and on an AVX2 one agree. Not to the bit: float
    # steps before the models round differently with other vector widths (1e-7 in an input), which can move an int8
    # activation by one step: the mask model's probabilities moved by up to 0.01 on these photos (docs/measurements.md)
    import json
    import subprocess

    import avx2_only
    from maskage.apps.demo import masked_variants, sample_photo

    photos = sorted(str(p) for p in masked_variants(sample_photo(), tmp_path / "photos").values())
    script = ("import json, sys; from maskage import Pipeline; p = Pipeline.from_pretrained(); "
              "print(json.dumps([[r.mask, r.gender, r.age, r.mask_probs, r.gender_probs, r.age_probs] "
              "for r in p.predict(sys.argv[1:])]))")
    here = subprocess.run([sys.executable, "-c", script, *photos], capture_output=True, text=True, check=True)
    avx2 = subprocess.run([sys.executable, "-c", script, *photos], capture_output=True, text=True, check=True,
                          env=avx2_only.environment(avx2_lib))
    here_probs, avx2_probs = json.loads(here.stdout), json.loads(avx2.stdout)
    assert len(here_probs) == len(photos) == 4 and all(all(task) for face in here_probs for task in face)
    for here_face, avx2_face in zip(here_probs, avx2_probs):
        assert avx2_face[:3] == here_face[:3]  # the same labels
        for a, b in zip(here_face[3:], avx2_face[3:]):
            assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 0.05 for k in a)


def test_a_label_review_changes_the_listed_faces_only_and_refuses_a_stale_one(tmp_path):
    from real_masks import read_review, reviewed

    review_csv = tmp_path / "review.csv"
    review_csv.write_text("file,mask,note\nb.jpg,incorrect,a mask under the chin\nc.jpg,not_wear,\n")
    review = read_review(review_csv)
    truth = np.array([0, 2, 0])
    assert reviewed(["a.jpg", "b.jpg", "c.jpg"], truth, review).tolist() == [0, 1, 2]
    assert truth.tolist() == [0, 2, 0]  # the source's labels are left as they are
    with pytest.raises(SystemExit, match="not in this set"):
        reviewed(["a.jpg", "b.jpg"], truth[:2], review)
    review_csv.write_text("file,mask\nb.jpg,chin\n")
    with pytest.raises(SystemExit, match="chin"):
        read_review(review_csv)


@pytest.mark.data
def test_the_shipped_review_names_held_out_faces_of_the_source():
    from maskage.training.data import source_samples
    from real_masks import SHARED, read_review

    folder = SHARED / "facemask_faces"
    held = {Path(s.path).name for s in source_samples([f"{folder}=faces.csv"], "holdout", 0.2)}
    review = read_review(Path(__file__).resolve().parents[1] / "benchmarks" / "reviews" / "facemask_faces_holdout.csv")
    assert review and set(review) <= held


def test_save_errors_lists_every_error_and_draws_a_grid_per_true_state(tmp_path):
    import csv

    from real_masks import save_errors

    truth = np.array([0, 0, 1, 2, 2])
    states, confs = np.array([0, 1, 2, 1, 0]), np.array([0.9, 0.6, 0.8, 0.7, 0.95])
    crops = [np.full((40, 40, 3), 30 * i, np.uint8) for i in range(5)]
    save_errors(tmp_path, "faces", truth, {"cand": (states, confs)}, crops, [f"f{i}.jpg" for i in range(5)])
    rows = list(csv.DictReader((tmp_path / "cand" / "faces_errors.csv").open()))
    assert [(r["face"], r["true"], r["predicted"]) for r in rows] == [
        ("f1.jpg", "wear", "incorrect"), ("f2.jpg", "incorrect", "not_wear"), ("f4.jpg", "not_wear", "wear"),
        ("f3.jpg", "not_wear", "incorrect")]  # by true state, the most confident first
    assert sorted(p.name for p in (tmp_path / "cand").glob("*.png")) == [
        "faces_incorrect.png", "faces_not_wear.png", "faces_wear.png"]
