import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskage.detect.cache import CropCache
from maskage.detect.faces import CropSettings, DetectorSettings, FaceDetector, box_iou, crop_face, crop_faces

from .conftest import SHARED_DATA


def test_crop_face_cuts_the_box_with_margin():
    img = np.full((200, 300, 3), 255, dtype=np.uint8)
    img[50:150, 100:200] = (255, 0, 0)  # the "face"
    crop = crop_face(img, (100, 50, 200, 150), CropSettings(crop_size=64, margin=0.0))
    assert crop.shape == (64, 64, 3)
    assert (crop[2:-2, 2:-2] == (255, 0, 0)).all()
    wide = crop_face(img, (100, 50, 200, 150), CropSettings(crop_size=64, margin=0.5))
    # with 50% margin the face fills the middle half of the crop
    assert (wide[32, 32] == (255, 0, 0)).all() and (wide[2, 2] == 255).all()


def test_fallback_crop_is_centred():
    img = np.zeros((100, 200, 3), dtype=np.uint8)
    img[40:60, 90:110] = 200
    crop = crop_face(img, None, CropSettings(crop_size=30, fallback_fraction=0.2))
    assert (crop == 200).all()  # the 20 px centre square


def test_crop_near_the_border_pads():
    img = np.full((50, 50, 3), 7, dtype=np.uint8)
    crop = crop_face(img, (-20, -20, 30, 30), CropSettings(crop_size=24, margin=0.3))
    assert crop.shape == (24, 24, 3) and (crop == 7).all()


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(DetectorSettings(min_face_size=40))


def test_tiny_image_is_no_face_not_a_crash(detector):
    # MTCNN itself raises ValueError (torch.cat of an empty list) on images below min_face_size
    dets = detector.detect([np.zeros((12, 12, 3), np.uint8), np.zeros((20, 30, 3), np.uint8)])
    assert [d.box for d in dets] == [None, None]


def test_mixed_sizes_keep_input_order(detector):
    imgs = [np.full((60 + 10 * i, 80, 3), 128, np.uint8) for i in range(3)] + [np.zeros((5, 5, 3), np.uint8)]
    dets = detector.detect(imgs)
    assert len(dets) == 4 and all(d.box is None for d in dets)


def test_cache_skips_detection_second_time(tmp_path, toy_root):
    paths = sorted(str(p) for p in (toy_root / "train" / "images").rglob("*.jpg"))[:10]
    cache = CropCache(tmp_path, CropSettings(crop_size=32), DetectorSettings(min_face_size=20))
    first = cache.get(paths, progress=False)
    assert cache.detections_run == 10 and not first.errors
    again = CropCache(tmp_path, CropSettings(crop_size=32), DetectorSettings(min_face_size=20))
    second = again.get(paths, progress=False)
    assert again.detections_run == 0
    np.testing.assert_array_equal(first.crops, second.crops)
    assert first.boxes == second.boxes
    other = CropCache(tmp_path, CropSettings(crop_size=32, margin=0.4), DetectorSettings(min_face_size=20))
    assert other.dir != cache.dir  # crop settings are part of the key
    assert CropCache(tmp_path, CropSettings(crop_size=32), DetectorSettings(min_face_size=25)).dir != cache.dir
    assert CropCache(tmp_path, CropSettings(crop_size=32), DetectorSettings(min_face_size=20, batch_size=3)).dir == cache.dir


def test_cache_reports_unreadable_files(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (10, 20, 30)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    out = CropCache(tmp_path / "c", CropSettings(crop_size=16)).get([str(good), str(bad), str(tmp_path / "gone.jpg")], progress=False)
    assert set(out.errors) == {1, 2}
    assert "bad.jpg" in out.errors[1] and "gone.jpg" in out.errors[2]
    assert out.boxes[0] is None and (out.crops[0] == (10, 20, 30)).all()


def _sample(folder: Path, n: int, seed: int = 0) -> list[Path]:
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        pytest.fail(f"no photos in {folder}: is ../shared/data present?")
    idx = np.random.default_rng(seed).permutation(len(files))[:n]
    return [files[i] for i in sorted(idx)]


@pytest.mark.data
def test_real_faces_found_in_95_percent(detector):
    from maskage.images import load_image

    sets = {
        "utkface": _sample(SHARED_DATA / "utkface", 150),
        "maskedfacenet": _sample(SHARED_DATA / "maskedfacenet" / "correct", 150)
        + _sample(SHARED_DATA / "maskedfacenet" / "incorrect", 150),
    }
    for name, files in sets.items():
        images = [load_image(p) for p in files]
        start = time.perf_counter()
        dets = detector.detect(images)
        seconds = time.perf_counter() - start
        rate = np.mean([d.box is not None for d in dets])
        print(f"{name}: face found in {rate:.1%} of {len(files)} photos, {len(files) / seconds:.1f} photos/s (batched)")
        assert rate >= 0.95, f"{name}: faces found in only {rate:.1%}"


def _crop_padding_the_whole_photo(image, box, settings):
    """The crop as maskage made it before 2026-12-03: the whole photo padded, then cut."""
    import cv2

    h, w = image.shape[:2]
    side = max(box[2] - box[0], box[3] - box[1])
    size = max(side * (1 + 2 * settings.margin), 2.0)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2 + settings.shift * side
    left, top = int(round(cx - size / 2)), int(round(cy - size / 2))
    size = int(round(size))
    pad = max(0, -left, -top, left + size - w, top + size - h)
    image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = image[top + pad : top + pad + size, left + pad : left + pad + size]
    interp = cv2.INTER_AREA if size > settings.crop_size else cv2.INTER_LINEAR
    return cv2.resize(crop, (settings.crop_size, settings.crop_size), interpolation=interp)


def test_crops_padding_only_their_part_equal_the_whole_photo_padded():
    rng = np.random.default_rng(0)
    for _ in range(300):  # boxes inside, across an edge, larger than the photo and wholly outside it
        h, w = rng.integers(5, 120, 2)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        x, y, side = rng.uniform(-1.5 * w, 1.5 * w), rng.uniform(-1.5 * h, 1.5 * h), rng.uniform(1, 2 * max(h, w))
        box = (x, y, x + side, y + side * rng.uniform(0.5, 1.5))
        settings = CropSettings(crop_size=int(rng.choice([16, 40])), margin=float(rng.uniform(0, 0.5)),
                                shift=float(rng.uniform(-0.2, 0.2)))
        np.testing.assert_array_equal(crop_face(image, box, settings), _crop_padding_the_whole_photo(image, box, settings))


@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_crop_faces_side_by_side_equal_one_after_another(workers):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (60 + 7 * i, 90, 3), dtype=np.uint8) for i in range(5)]
    boxes = [(10.0 + i, 12.0, 50.0 + 3 * i, 58.0) for i in range(4)] + [None]  # None: the centre crop
    settings = CropSettings(crop_size=24, shift=0.15)
    got = crop_faces(images, boxes, settings, workers=workers)
    assert got.shape == (5, 24, 24, 3)
    np.testing.assert_array_equal(got, np.stack([crop_face(a, b, settings) for a, b in zip(images, boxes)]))


@pytest.mark.data
def test_small_real_rmfd_crops_are_no_face_not_a_crash(detector):
    from maskage.images import load_image

    files = sorted(p for p in (SHARED_DATA / "rmfd").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    small = [p for p in files if min(Image.open(p).size) < 40]
    assert small, "expected some RMFD crops smaller than MTCNN's 40 px minimum face"
    images = [load_image(p) for p in small]
    dets = detector.detect(images)
    assert len(dets) == len(small) and all(d.box is None for d in dets)
    crops = [crop_face(i, d.box) for i, d in zip(images, dets)]
    assert all(c.shape == (256, 256, 3) for c in crops)


def test_min_face_fraction_skips_faces_small_for_the_photo():
    from maskage.apps.demo import sample_photo
    from maskage.images import load_image

    img = load_image(sample_photo())  # 512 x 512, face about 110 px
    small = np.asarray(Image.fromarray(img).resize((256, 256)))  # face about 55 px
    canvas = np.full((512, 512, 3), 255, np.uint8)
    canvas[128:384, 128:384] = small
    assert FaceDetector(DetectorSettings(min_face_size=20)).detect([canvas])[0].box is not None
    assert FaceDetector(DetectorSettings(min_face_size=20, min_face_fraction=0.2)).detect([canvas])[0].box is None
    assert FaceDetector(DetectorSettings(min_face_size=20, min_face_fraction=0.2)).detect([img])[0].box is not None
    # the cache key is unchanged while the setting is off
    assert CropCache(crop=CropSettings()).dir == CropCache(crop=CropSettings(), detector=DetectorSettings(min_face_fraction=0.0)).dir
    assert CropCache().dir != CropCache(detector=DetectorSettings(min_face_fraction=0.1)).dir


def test_stack_is_a_memory_map_built_once(tmp_path, toy_root):
    photos = sorted((toy_root / "train" / "images").rglob("*.jpg"))[:10]
    cache = CropCache(tmp_path, CropSettings(crop_size=40), DetectorSettings(min_face_size=20))
    first = cache.stack(photos, progress=False)
    assert isinstance(first.crops, np.memmap) and first.crops.shape == (10, 40, 40, 3)
    assert cache.detections_run == 10
    again = CropCache(tmp_path, CropSettings(crop_size=40), DetectorSettings(min_face_size=20))
    second = again.stack(photos, progress=False)
    assert again.detections_run == 0 and np.array_equal(np.asarray(first.crops), np.asarray(second.crops))
    assert second.boxes == first.boxes
    np.testing.assert_array_equal(np.asarray(second.crops), again.get(photos, progress=False).crops)
    other = again.stack(photos[:5], progress=False)  # another list of photos is another stack
    assert other.crops.shape[0] == 5 and again.detections_run == 0


def test_box_iou():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert box_iou(None, (0, 0, 1, 1)) == 0.0


def test_frame_keeps_only_the_utkface_square_and_repeats_its_border():
    # a "face" box of 100 px: frame 0.8 keeps the 80 px square centred 12 px below the box centre; outside it, blue
    img = np.zeros((400, 400, 3), dtype=np.uint8)
    img[:] = (0, 0, 255)
    img[172:252, 160:240] = (255, 0, 0)
    img[172:252, 160] = (0, 255, 0)  # the square's left column: repeated leftwards
    box = (150, 150, 250, 250)
    plain = crop_face(img, box, CropSettings(crop_size=80, margin=0.2))
    framed = crop_face(img, box, CropSettings(crop_size=80, margin=0.2, frame=0.8, frame_shift=0.12))
    assert (plain[..., 2] > 200).any()  # the plain crop sees the surroundings
    assert not (framed[..., 2] > 200).any()  # the framed one only the square, its border repeated
    assert (framed[40, :5] == (0, 255, 0)).all() and (framed[40, 40] == (255, 0, 0)).all()
    # the face keeps its place and size in the crop: the box is 100 px of the 140 px crop either way
    assert (framed[20:60, 20:60] == (255, 0, 0)).all()


def test_shift_moves_the_crop_down_and_off_leaves_settings_as_before(tmp_path):
    img = np.zeros((300, 300, 3), dtype=np.uint8)
    img[100:200, 100:200] = (255, 0, 0)  # the "face" box
    img[200:240, 100:200] = (0, 255, 0)  # a mask pulled down, just below the box
    box = (100, 100, 200, 200)
    centred = crop_face(img, box, CropSettings(crop_size=140, margin=0.2))
    low = crop_face(img, box, CropSettings(crop_size=140, margin=0.2, shift=0.15))
    # centred: the crop reaches 20 px below the box; shifted 15 px lower, 35 px (of the mask's 40), and the face's
    # top row is 5 px from the crop's top instead of 20
    assert (centred[..., 1] == 255).sum(0).max() == 20 and (low[..., 1] == 255).sum(0).max() == 35
    assert (low[5, 70] == (255, 0, 0)).all() and (low[4, 70] == 0).all()
    assert CropSettings(crop_size=48).to_dict() == {"crop_size": 48, "margin": 0.2, "fallback_fraction": 0.7}
    on = CropSettings(crop_size=48, shift=0.15)
    assert on.to_dict()["shift"] == 0.15 and CropSettings(**on.to_dict()) == on
    assert CropCache(tmp_path, on, DetectorSettings()).dir != CropCache(tmp_path, CropSettings(48), DetectorSettings()).dir
    assert np.array_equal(crop_face(img, None, on), crop_face(img, None, CropSettings(crop_size=48)))  # no box: centre
    with pytest.raises(ValueError, match="shift"):
        CropSettings(shift=0.6)


def test_frame_off_leaves_settings_crops_and_cache_keys_as_before(tmp_path):
    img = np.random.default_rng(0).integers(0, 255, (120, 100, 3), dtype=np.uint8)
    off = CropSettings(crop_size=48, margin=0.2)
    assert off.to_dict() == {"crop_size": 48, "margin": 0.2, "fallback_fraction": 0.7}
    assert np.array_equal(crop_face(img, (20, 30, 80, 90), off),
                          crop_face(img, (20, 30, 80, 90), CropSettings(crop_size=48, margin=0.2, frame=0)))
    on = CropSettings(crop_size=48, margin=0.2, frame=0.8, frame_shift=0.1)
    assert on.to_dict()["frame"] == 0.8 and CropSettings(**on.to_dict()) == on
    assert CropCache(tmp_path, on, DetectorSettings()).dir != CropCache(tmp_path, off, DetectorSettings()).dir
    with pytest.raises(ValueError, match="frame"):
        CropSettings(frame=-0.5)


def test_hints_frame_the_labelled_face_the_detector_finds_or_misses(tmp_path):
    from maskage.detect.faces import Detection, pick_face

    near, far = Detection((10.0, 10.0, 50.0, 50.0)), Detection((100.0, 100.0, 180.0, 180.0))
    assert pick_face([far, near], None) == far.box  # no hint: the largest face, as prediction takes it
    assert pick_face([far, near], (12, 8, 48, 52)) == near.box  # the detection that overlaps the labelled box
    assert pick_face([far], (12, 8, 48, 52)) == (12.0, 8.0, 48.0, 52.0)  # a missed face keeps its labelled box
    assert pick_face([], (12, 8, 48, 52)) == (12.0, 8.0, 48.0, 52.0)
    # a blank photo (no face): the crop is cut around the hint, one cache entry per (photo, hint)
    img = np.zeros((80, 80, 3), np.uint8)
    img[20:40, 40:60] = 255
    path = tmp_path / "two_faces.png"
    Image.fromarray(img).save(path)
    cache = CropCache(tmp_path / "c", CropSettings(crop_size=20, margin=0.0))
    out = cache.get([str(path), str(path), str(path)], progress=False, hints=[(40, 20, 60, 40), (0, 0, 20, 20), None])
    assert out.boxes[:2] == [(40.0, 20.0, 60.0, 40.0), (0.0, 0.0, 20.0, 20.0)] and out.boxes[2] is None
    assert (out.crops[0] == 255).all() and (out.crops[1] == 0).all()
    again = CropCache(tmp_path / "c", CropSettings(crop_size=20, margin=0.0))
    stacked = again.stack([str(path), str(path)], progress=False, hints=[(40, 20, 60, 40), (0, 0, 20, 20)])
    assert again.detections_run == 0  # both hinted entries came from the cache
    np.testing.assert_array_equal(stacked.crops, out.crops[:2])


def test_maskage_threads_sets_the_cores_maskage_uses(monkeypatch):
    from maskage.detect.faces import _cores
    from maskage.errors import UsageError

    monkeypatch.setenv("MASKAGE_THREADS", "1")
    assert _cores() == 1
    monkeypatch.setenv("MASKAGE_THREADS", "3")
    assert _cores() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("MASKAGE_THREADS", bad)
        with pytest.raises(UsageError, match="MASKAGE_THREADS"):
            _cores()
    monkeypatch.delenv("MASKAGE_THREADS")
    assert _cores() >= 1
