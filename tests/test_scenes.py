"""Scene scoring (maskage.pipeline.scenes) and the scene detector (YuNet) on generated photos with several faces."""
import csv

import numpy as np
import pytest
from PIL import Image

from maskage.detect.cache import CropCache
from maskage.detect.faces import DetectorSettings, FaceDetector, box_iou
from maskage.pipeline.scenes import SceneScore, export_faces, format_report, match, photo_split, read_boxes

from .conftest import SHARED_DATA


def crowd(face_sides=(60, 44, 30), size=(720, 720)) -> tuple[np.ndarray, list[tuple[float, float, float, float]]]:
    """The demo photo pasted at several small sizes on a grey canvas, and where its face lands in each copy."""
    from maskage.apps.demo import sample_photo
    from maskage.images import load_image

    img = load_image(sample_photo())  # 512 x 512, face box about (170, 60)-(280, 200)
    canvas = np.full((*size, 3), 128, np.uint8)
    boxes = []
    x = 20
    for side in face_sides:
        s = side / 110  # the face is about 110 px wide in the photo
        small = np.asarray(Image.fromarray(img).resize((round(512 * s), round(512 * s))))
        y = 40
        canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
        boxes.append((x + 170 * s, y + 60 * s, x + 280 * s, y + 200 * s))
        x += small.shape[1] + 10
    return canvas, boxes


def test_match_is_one_to_one_best_overlap_first():
    truth = [(0, 0, 10, 10), (20, 0, 30, 10)]
    found = [(1, 1, 11, 11), (0, 0, 10, 10), (50, 50, 60, 60)]
    assert match(truth, found) == [(0, 1)]  # the exact box wins; the shifted one overlaps the same face only
    assert match(truth, [(21, 0, 31, 10), (0, 0, 9, 10)]) == [(0, 1), (1, 0)]
    assert match(truth, [(0, 0, 30, 30)], min_iou=0.3) == []  # IoU 0.11


def test_scene_score_counts_sizes_misses_and_incorrect_recall():
    from maskage.pipeline.scenes import LabelledFace

    score = SceneScore()
    truth = [LabelledFace((0, 0, 50, 50), "wear"), LabelledFace((100, 0, 120, 20), "incorrect"),
             LabelledFace((200, 0, 260, 60), "incorrect"), LabelledFace((300, 0, 350, 45), "not_wear")]
    found = [(0, 0, 50, 50), (200, 0, 260, 60), (300, 0, 350, 45), (400, 400, 450, 450)]
    score.add(truth, found, ["wear", "incorrect", "wear", "wear"])
    r = score.report()
    assert (r["faces"], r["found"], r["faces_40px"], r["found_40px"]) == (4, 3, 3, 3)
    assert (r["incorrect_found"], r["incorrect_caught"], r["incorrect_recall"]) == (1, 1, 1.0)
    assert (r["unmatched"], r["unmatched_share"]) == (1, pytest.approx(1 / 3))
    assert r["mask_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # wear 2/3, incorrect 1, not_wear 0
    assert r["mask_f1_ci"][0] <= r["mask_f1"] <= r["mask_f1_ci"][1] and r["incorrect_recall_ci"] == [1.0, 1.0]
    assert "[" in format_report("s", r)
    half = SceneScore()  # 2 of 4 incorrect masks caught: an interval that says how little 4 faces tell
    boxes = [(100 * i, 0, 100 * i + 50, 50) for i in range(4)]
    half.add([LabelledFace(b, "incorrect") for b in boxes], boxes, ["incorrect", "incorrect", "wear", "wear"])
    lo, hi = half.report()["incorrect_recall_ci"]
    assert lo <= 0.25 and hi >= 0.75
    worn = SceneScore()  # only worn masks, all called worn: the F1 counts the two absent states as 0, its interval too
    worn.add([LabelledFace(b, "wear") for b in boxes], boxes, ["wear"] * 4)
    r = worn.report()
    assert r["mask_f1"] == pytest.approx(1 / 3) and r["mask_f1_ci"] == [pytest.approx(1 / 3)] * 2


def test_boxes_csv_is_read_and_checked(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("image,x0,y0,x1,y1,mask\na.jpg,1,2,30,40,wear\na.jpg,5,5,9,9,incorrect\n")
    faces = read_boxes(path)
    assert [f.mask for f in faces["a.jpg"]] == ["wear", "incorrect"] and faces["a.jpg"][0].box == (1, 2, 30, 40)
    path.write_text("image,x0,y0,x1,y1,mask\na.jpg,1,2,30,40,mask_weared_incorrect\n")
    with pytest.raises(ValueError, match="line 2"):
        read_boxes(path)


def test_photo_split_is_fixed_and_near_the_fraction():
    names = [f"scene{i}.jpg" for i in range(2000)]
    held = [photo_split(n, 0.5) for n in names]
    assert held == [photo_split(n, 0.5) for n in names]
    assert 0.45 < np.mean(held) < 0.55
    assert not any(photo_split(n, 0.0) for n in names)


def test_export_faces_cuts_each_face_of_its_part_at_twice_its_side(tmp_path):
    canvas, boxes = crowd()
    (tmp_path / "scenes" / "images").mkdir(parents=True)
    names = [n for n in (f"p{i}.png" for i in range(40)) if not photo_split(n, 0.5)][:1] + \
            [n for n in (f"p{i}.png" for i in range(40)) if photo_split(n, 0.5)][:1]
    with (tmp_path / "scenes" / "boxes.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "x0", "y0", "x1", "y1", "mask"])
        for n in names:
            Image.fromarray(canvas).save(tmp_path / "scenes" / "images" / n)
            for b, m in zip(boxes, ("wear", "incorrect", "not_wear")):
                w.writerow([n, *(round(v) for v in b), m])
    counts = export_faces(tmp_path / "scenes", tmp_path / "out", "train")
    assert counts == {"wear": 1, "incorrect": 1, "not_wear": 1}
    cut = np.asarray(Image.open(tmp_path / "out" / "wear" / f"{names[0][:-4]}_0.png"))
    x0, y0, x1, y1 = (round(v) for v in boxes[0])
    assert cut.shape[:2] == (2 * max(x1 - x0, y1 - y0),) * 2
    # centred on the box: the pixel at the cut's centre is the one at the box's centre
    assert np.abs(cut[cut.shape[0] // 2, cut.shape[1] // 2].astype(int) - canvas[(y0 + y1) // 2, (x0 + x1) // 2]).max() <= 30
    assert export_faces(tmp_path / "scenes", tmp_path / "out_eval", "eval") == counts
    assert not (tmp_path / "out_eval" / "wear" / f"{names[0][:-4]}_0.png").exists()


def test_scene_detector_finds_small_faces_mtcnn_is_set_to_skip():
    canvas, boxes = crowd()
    settings = DetectorSettings(min_face_size=40, min_face_fraction=0.2)  # the shipped competition-photo setting
    det = FaceDetector(settings)
    assert det.detect_all([canvas])[0] == []  # every face is under 20% of the photo's shorter side
    found = det.detect_all([canvas], scene=True)[0]
    assert len(found) == 3
    for d, b in zip(found, boxes):  # largest first, as MTCNN's
        assert box_iou(d.box, b) > 0.4
        assert d.prob >= settings.scene_threshold and len(d.landmarks) == 5
        left_eye, right_eye, nose = d.landmarks[:3]
        assert left_eye[0] < nose[0] < right_eye[0]  # MTCNN's landmark order
    # faces below scene_min_face are left out
    assert len(FaceDetector(DetectorSettings(scene_min_face=30)).detect_all([canvas], scene=True)[0]) == 2


def test_scene_mode_setting():
    assert DetectorSettings().uses_scene(all_faces=True) and not DetectorSettings().uses_scene(all_faces=False)
    assert DetectorSettings(scene="on").uses_scene(False) and not DetectorSettings(scene="off").uses_scene(True)
    with pytest.raises(ValueError, match="scene"):
        DetectorSettings(scene="maybe")
    assert DetectorSettings.from_dict(DetectorSettings(scene="off").to_dict()).scene == "off"
    # crops for training come from MTCNN whatever the scene settings: their cache key ignores them
    assert CropCache().dir == CropCache(detector=DetectorSettings(scene="off", scene_threshold=0.5)).dir


def test_large_photos_are_scaled_for_yunet_and_boxes_mapped_back():
    canvas, boxes = crowd()
    big = np.asarray(Image.fromarray(canvas).resize((2160, 2160)))  # 3x: over YuNet's 960 px
    found = FaceDetector().detect_all([big], scene=True)[0]
    assert len(found) == 3
    for d, b in zip(found, boxes):
        assert box_iou(d.box, tuple(3 * v for v in b)) > 0.4


@pytest.mark.data
def test_scene_detector_finds_most_faces_of_40_px_in_real_scenes():
    from maskage.images import load_image

    scenes = SHARED_DATA / "facemask_scenes"
    if not scenes.is_dir():
        pytest.fail(f"{scenes} is missing")
    faces = read_boxes(scenes / "boxes.csv")
    det, score = FaceDetector(), SceneScore()
    for name in sorted(faces)[:60]:
        found = det.detect_all([load_image(scenes / "images" / name)], scene=True)[0]
        score.add(faces[name], [d.box for d in found], ["wear"] * len(found))
    r = score.report()
    assert r["found_40px_share"] >= 0.85 and r["unmatched_share"] <= 0.10, r


def test_scene_detection_alone_never_builds_mtcnn_and_neither_detector_imports_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from maskage.detect.faces import FaceDetector; "
            "d = FaceDetector(); d.detect_all([np.zeros((64, 64, 3), np.uint8)], scene=True); "
            "print(d._nets is None, 'torch' in sys.modules); d.detect([np.zeros((64, 64, 3), np.uint8)]); "
            "print(d._nets is None, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "False", "False", "False"]  # MTCNN's networks only once the largest face is asked for


def test_portrait_yunet_finds_the_largest_face_on_a_scaled_down_photo(monkeypatch):
    from maskage.apps.demo import sample_photo
    from maskage.images import load_image
    from yuface import yuface

    img = load_image(sample_photo())  # 512 x 512, one face
    mtcnn = FaceDetector(DetectorSettings(min_face_fraction=0.1)).detect([img])[0]
    settings = DetectorSettings(min_face_fraction=0.1, portrait="yunet", portrait_face_px=20)
    seen = []
    real = yuface.detect
    monkeypatch.setattr(yuface, "detect", lambda x: seen.append(x.shape) or real(x))
    (found,) = FaceDetector(settings).detect([img])
    # the smallest face searched for is 51 px (0.1 of 512): YuNet sees the photo at 20/51 of its size
    assert seen == [(201, 201, 3)]
    assert box_iou(found.box, mtcnn.box) > 0.7 and len(found.landmarks) == 5
    left_eye, right_eye, nose = found.landmarks[:3]
    assert left_eye[0] < nose[0] < right_eye[0] and found.prob >= settings.scene_threshold
    # every face of a crowd (30-60 px) once min_face lets them be (24 / 20 px: YuNet sees the photo at full size)
    canvas, _ = crowd()
    assert len(FaceDetector(DetectorSettings(min_face_size=20, portrait="yunet")).detect_all(
        [canvas])[0]) == 3


def test_portrait_yunet_looks_again_at_twice_the_scale_when_it_finds_no_face(tmp_path, monkeypatch):
    from maskage.apps.demo import masked_variants, sample_photo
    from maskage.images import load_image
    import maskage.detect.faces as faces

    # the demo photo with a drawn mask: her face (17% of the photo's side) is under min_face (20%), and at the
    # first scale (24 px for min_face) YuNet scores it under the threshold
    img = load_image(masked_variants(sample_photo(), tmp_path)["correct"])
    scales = []
    real = faces._yunet_detect
    monkeypatch.setattr(faces, "_yunet_detect", lambda *a: scales.append(round(a[3], 3)) or real(*a))
    (found,) = FaceDetector(DetectorSettings(min_face_fraction=0.2, portrait="yunet")).detect([img])
    assert scales == [round(24 / 102, 3), round(48 / 102, 3)]
    mtcnn = FaceDetector(DetectorSettings(min_face_fraction=0.2)).detect([img])[0]
    assert found.box is not None and box_iou(found.box, mtcnn.box) > 0.7
    scales.clear()  # a face found at once needs no second look
    FaceDetector(DetectorSettings(min_face_fraction=0.2, portrait="yunet")).detect([load_image(sample_photo())])
    assert len(scales) == 1


def test_portrait_setting_is_checked_saved_and_keys_its_own_crops():
    with pytest.raises(ValueError, match="portrait"):
        DetectorSettings(portrait="dlib")
    with pytest.raises(ValueError, match="portrait_face_px"):
        DetectorSettings(portrait="yunet", portrait_face_px=4)
    yunet = DetectorSettings(portrait="yunet", portrait_face_px=24)
    assert DetectorSettings.from_dict(yunet.to_dict()) == yunet
    assert "portrait" not in DetectorSettings().to_dict()  # files from before the setting read and write alike
    # MTCNN's crops keep their cache; YuNet's crops have their own, which its score threshold is part of
    assert CropCache().dir == CropCache(detector=DetectorSettings(portrait_face_px=30)).dir != CropCache(detector=yunet).dir
    assert CropCache(detector=yunet).dir != CropCache(detector=DetectorSettings(portrait="yunet", portrait_face_px=24,
                                                                                scene_threshold=0.5)).dir


def test_yunet_runs_small_inputs_on_one_thread_and_scenes_on_every_core():
    import os

    from maskage.detect.faces import _cores, _yunet_detect, _yunet_gomp

    canvas, _ = crowd()  # 720 x 720: a scene
    gomp = _yunet_gomp()
    assert gomp is not None  # yuface's wheel bundles its OpenMP runtime
    _yunet_detect(canvas, 0.7, 15, scale=0.25)  # 180 x 180
    assert gomp.omp_get_max_threads() == 1
    _yunet_detect(canvas, 0.7, 15)
    assert gomp.omp_get_max_threads() == _cores() == len(os.sched_getaffinity(0))
