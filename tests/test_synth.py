import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskage.detect import faces
from maskage.apps.cli import main
from maskage.training.data import load_train_samples
from maskage.images import load_image
from maskage.labels import MASK_FILE_STEMS, decode
from maskage.training.masks import (ALL_KINDS, CORRECT, KINDS, NOSE_EXPOSED, ONE_EAR, TEXTURE_SIZE, UNDER_CHIN,
                                    FaceGeometry, cut_texture, draw_mask, landmark_points, real_textures)
from maskage.training.synth import SCENE_KINDS, SCENE_SIDES, build_dataset, in_scene, parse_utkface_name

from .conftest import SHARED_DATA

# a frontal face in a 200x200 photo: eyes, nose tip, mouth corners, box
LANDMARKS = ((75.0, 85.0), (125.0, 85.0), (100.0, 112.0), (80.0, 135.0), (120.0, 135.0))
BOX = (50.0, 40.0, 150.0, 175.0)

# which landmark points each kind of wear covers (True) or leaves bare (False)
EXPECTED = {
    CORRECT: {"eyes": False, "nose": True, "mouth": True, "chin": True},
    NOSE_EXPOSED: {"eyes": False, "nose": False, "mouth": True, "chin": True},
    UNDER_CHIN: {"eyes": False, "nose": False, "mouth": False, "chin": True},
    ONE_EAR: {"eyes": False, "nose": False, "mouth": False, "chin": False},
}


def face_photo(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(90, 200, (200, 200, 3), dtype=np.uint8)


def coverage(alpha: np.ndarray, point: np.ndarray) -> float:
    x, y = (int(round(v)) for v in point)
    return float(alpha[y, x])


def check_kind(alpha: np.ndarray, face: FaceGeometry, kind: str) -> list[str]:
    """The landmark points whose coverage disagrees with what the kind of wear says."""
    wrong = []
    for name, point in landmark_points(face).items():
        h, w = alpha.shape
        x, y = (int(round(v)) for v in point)  # as coverage() reads it
        if not (0 <= x < w and 0 <= y < h):
            continue  # the chin can lie below a tight crop
        covered = coverage(alpha, point) > 0.5
        if covered != EXPECTED[kind][name]:
            wrong.append(f"{name} {'covered' if covered else 'bare'}")
    return wrong


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_mask_covers_what_its_kind_says(kind):
    face = FaceGeometry.from_landmarks(LANDMARKS, BOX)
    for seed in range(20):
        drawn = draw_mask(face_photo(), LANDMARKS, BOX, kind, seed)
        assert drawn.kind == kind
        assert check_kind(drawn.alpha, face, kind) == [], f"seed {seed}"
        changed = np.any(drawn.image != face_photo(), axis=-1)
        assert changed[drawn.alpha > 0.5].all()  # the mask is painted where its coverage says
        assert not changed[:60].any()  # nothing above the eyebrows changes (forehead, hair)


def test_a_mask_on_one_ear_hangs_beside_the_jaw_on_either_side():
    sides = set()
    for seed in range(20):
        alpha = draw_mask(face_photo(), LANDMARKS, BOX, ONE_EAR, seed).alpha
        ys, xs = np.nonzero(alpha > 0.5)
        assert xs.size > 300  # a mask, not a strap
        left, right = (xs < 100).mean(), (xs > 100).mean()  # x = 100: the face's centre line
        assert max(left, right) == 1.0  # all of it on one side
        sides.add("left" if left else "right")
        assert ys.min() > 112 and ys.max() > 175  # from below the nose tip to under the chin (y 175)
    assert sides == {"left", "right"}
    assert ONE_EAR not in KINDS  # the demo's variants stay the three wear kinds


def test_masks_are_deterministic_per_seed_and_vary_between_seeds():
    a = draw_mask(face_photo(), LANDMARKS, BOX, CORRECT, 7)
    b = draw_mask(face_photo(), LANDMARKS, BOX, CORRECT, 7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.alpha, b.alpha)
    drawn = [draw_mask(face_photo(), LANDMARKS, BOX, CORRECT, s) for s in range(12)]
    colours = {tuple(np.round(d.image[d.alpha > 0.99].mean(0) / 20)) for d in drawn}
    assert len(colours) >= 4  # several colours
    assert len({d.style for d in drawn}) == 3  # all three shapes
    areas = [float(d.alpha.sum()) for d in drawn]
    assert max(areas) / min(areas) > 1.1  # and the outline varies


def test_real_textures_paint_the_fabric_and_leave_the_drawn_masks_as_they_were():
    red = np.zeros(TEXTURE_SIZE + (3,), np.uint8)
    red[..., 0] = 230
    face = FaceGeometry.from_landmarks(LANDMARKS, BOX)
    plain = [draw_mask(face_photo(), LANDMARKS, BOX, CORRECT, s) for s in range(10)]
    real = [draw_mask(face_photo(), LANDMARKS, BOX, CORRECT, s, textures=[red], texture_share=0.5) for s in range(10)]
    changed = 0
    for p, r in zip(plain, real):
        assert np.array_equal(p.alpha, r.alpha) and check_kind(r.alpha, face, CORRECT) == []  # same outline
        if not np.array_equal(p.image, r.image):
            changed += 1
            inside = r.image[r.alpha > 0.99].astype(float)
            assert inside[:, 0].mean() > inside[:, 1].mean() + 80  # red fabric (shaded by the photo's light)
    assert 2 <= changed <= 8  # about half take the real fabric
    assert all(np.array_equal(draw_mask(face_photo(), LANDMARKS, BOX, CORRECT, s, textures=[red], texture_share=0).image,
                              p.image) for s, p in enumerate(plain))


def test_low_chin_masks_leave_the_mouth_bare_sit_lower_and_leave_other_kinds_alone():
    face = FaceGeometry.from_landmarks(LANDMARKS, BOX)
    photo = face_photo()

    def top_row(alpha):  # the highest image row the mask covers, down the face's centre line
        rows = np.nonzero(alpha[:, 100] > 0.5)[0]
        return rows.min()

    classic, low = [], []
    for seed in range(20):
        drawn = draw_mask(photo, LANDMARKS, BOX, UNDER_CHIN, seed, chin_low=1.0)
        assert check_kind(drawn.alpha, face, UNDER_CHIN) == [], f"seed {seed}"
        assert not np.any(drawn.image != photo, axis=-1)[:60].any()
        low.append(drawn)
        classic.append(draw_mask(photo, LANDMARKS, BOX, UNDER_CHIN, seed))
    # pulled down further on average, and a wider spread of heights (from under the lip to the chin)
    assert np.mean([top_row(d.alpha) for d in low]) > np.mean([top_row(d.alpha) for d in classic]) + 2
    assert np.ptp([top_row(d.alpha) for d in low]) > np.ptp([top_row(d.alpha) for d in classic])
    # folds: the fabric's rows vary more in brightness than a classic mask's of the same seed
    def fold_spread(d):
        inside = d.alpha > 0.99
        rows = [d.image[y][inside[y]].mean() for y in range(d.image.shape[0]) if inside[y].sum() > 20]
        return np.std(np.diff(rows))
    assert np.mean([fold_spread(d) for d in low]) > np.mean([fold_spread(d) for d in classic])
    # chin_low=0 and the other kinds draw as before the option
    for kind in KINDS:
        for seed in range(5):
            before = draw_mask(photo, LANDMARKS, BOX, kind, seed)
            zero = draw_mask(photo, LANDMARKS, BOX, kind, seed, chin_low=0.0)
            assert np.array_equal(before.image, zero.image)
            if kind != UNDER_CHIN:
                assert np.array_equal(before.image, draw_mask(photo, LANDMARKS, BOX, kind, seed, chin_low=1.0).image)
    # a share in between draws some of each
    some = [draw_mask(photo, LANDMARKS, BOX, UNDER_CHIN, s, chin_low=0.5) for s in range(20)]
    n_low = sum(np.array_equal(d.alpha, l.alpha) for d, l in zip(some, low))
    n_classic = sum(np.array_equal(d.alpha, c.alpha) for d, c in zip(some, classic))
    assert n_low + n_classic == 20 and 4 <= n_low <= 16


def test_cut_texture_takes_the_patch_under_the_nose_upright():
    img = np.zeros((200, 200, 3), np.uint8)
    img[115:, :] = (20, 200, 40)  # green from just under the nose tip (y 112) down: the worn mask
    patch = cut_texture(img, LANDMARKS, BOX)
    assert patch.shape == TEXTURE_SIZE + (3,)
    assert (patch[..., 1] > 150).mean() > 0.95


def test_draw_mask_rejects_unknown_kind_and_bad_landmarks():
    with pytest.raises(ValueError, match="unknown mask kind"):
        draw_mask(face_photo(), LANDMARKS, BOX, "on_forehead")
    with pytest.raises(ValueError, match="5 landmarks"):
        draw_mask(face_photo(), LANDMARKS[:3], BOX)


def test_parse_utkface_name():
    r = parse_utkface_name("25_1_2_20170116174525125.jpg")
    assert (r.age, r.gender, r.race) == (25, 1, 2)
    assert parse_utkface_name("holiday.jpg") is None


class FixedDetector:
    """Stands in for MTCNN: every photo has the test face, except pure black ones (no face)."""

    def __init__(self, *args, **kwargs):
        pass

    def detect(self, images):
        return [faces.Detection(None) if img.max() == 0 else faces.Detection(BOX, 0.99, LANDMARKS) for img in images]


def write_faces(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True)
    names = []
    for i in range(n):
        age, gender, race = 20 + 3 * i, i % 2, 2 if i % 3 else 0
        name = f"{age}_{gender}_{race}_2017010{i:08d}.jpg"
        Image.fromarray(face_photo(i)).save(folder / name)
        names.append(name)
    Image.new("RGB", (200, 200)).save(folder / "30_0_2_black.jpg")  # no face: skipped and reported
    Image.fromarray(face_photo()).save(folder / "15_0_2_child.jpg")  # under min age
    Image.fromarray(face_photo()).save(folder / "unlabelled.jpg")
    return names


def test_build_dataset_layout_and_person_split(tmp_path, monkeypatch):
    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    write_faces(tmp_path / "faces", 12)
    report = build_dataset(tmp_path / "faces", tmp_path / "out", eval_fraction=0.4, seed=3, eval_races=[2])
    assert [Path(p).name for p, _ in report.skipped] == ["30_0_2_black.jpg"]
    assert report.unlabelled == ["unlabelled.jpg"]
    assert report.n_train_people + report.n_eval_people == 12
    assert report.n_eval_people > 0 and report.n_train_people > 0

    samples = load_train_samples(tmp_path / "out" / "train")
    assert len(samples) == 7 * report.n_train_people
    with (tmp_path / "out" / "train" / "train.csv").open() as f:
        train_rows = list(csv.DictReader(f))
    for row in train_rows:
        folder = tmp_path / "out" / "train" / "images" / row["path"]
        assert sorted(p.stem for p in folder.iterdir()) == sorted(MASK_FILE_STEMS)
        masks = [np.asarray(Image.open(folder / f"mask{j}.jpg")) for j in range(1, 6)]
        assert all(not np.array_equal(masks[0], m) for m in masks[1:])  # five different masks
        assert row["incorrect_kind"] in (NOSE_EXPOSED, UNDER_CHIN)

    with (tmp_path / "out" / "eval" / "meta.csv").open() as f:
        meta = list(csv.DictReader(f))
    with (tmp_path / "out" / "eval" / "gt.csv").open() as f:
        gt = {r["ImageID"]: int(r["ans"]) for r in csv.DictReader(f)}
    with (tmp_path / "out" / "eval" / "info.csv").open() as f:
        info = [r["ImageID"] for r in csv.DictReader(f)]
    assert sorted(info) == sorted(gt) == sorted(r["ImageID"] for r in meta)
    assert len(meta) == 7 * report.n_eval_people
    for r in meta:
        assert r["race"] == "Asian"  # eval people only from eval_races
        m, g, _ = decode(gt[r["ImageID"]])
        assert (m, g) == (int(r["mask"]), int(r["gender"]))
        assert (tmp_path / "out" / "eval" / "images" / r["ImageID"]).is_file()
    # person-disjoint: no source face on both sides
    assert not {r["source"] for r in meta} & {r["source"] for r in train_rows}
    assert Path(tmp_path / "out" / "skipped.csv").read_text().count("no face landmarks") == 1


def test_ear_share_turns_that_share_of_the_incorrect_masks_into_masks_on_one_ear(tmp_path, monkeypatch):
    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    write_faces(tmp_path / "faces", 12)
    kinds, images = {}, {}
    for share in (0.0, 0.5, 1.0):
        build_dataset(tmp_path / "faces", tmp_path / str(share), eval_fraction=0.0, seed=1, ear_share=share)
        with (tmp_path / str(share) / "train" / "train.csv").open() as f:
            rows = list(csv.DictReader(f))
        kinds[share] = [r["incorrect_kind"] for r in rows]
        images[share] = {r["path"]: {stem: (tmp_path / str(share) / "train" / "images" / r["path"] / f"{stem}.jpg")
                                     .read_bytes() for stem in MASK_FILE_STEMS} for r in rows}
    assert ONE_EAR not in kinds[0.0] and set(kinds[1.0]) == {ONE_EAR}
    assert 0 < kinds[0.5].count(ONE_EAR) < len(kinds[0.5])
    for person, old, new in zip(images[0.0], kinds[0.0], kinds[0.5]):  # only the incorrect photos of those change
        for stem in MASK_FILE_STEMS:
            same = images[0.0][person][stem] == images[0.5][person][stem]
            assert same == (stem != "incorrect_mask" or new == old), (person, stem)
    with pytest.raises(ValueError, match="ear_share"):
        build_dataset(tmp_path / "faces", tmp_path / "bad", ear_share=1.5)


def test_build_dataset_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    write_faces(tmp_path / "faces", 6)
    for out in ("a", "b"):
        build_dataset(tmp_path / "faces", tmp_path / out, eval_fraction=0.3, seed=1)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)


def test_eval_only_writes_the_same_eval_people_and_no_train_people(tmp_path, monkeypatch):
    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    write_faces(tmp_path / "faces", 10)
    full = build_dataset(tmp_path / "faces", tmp_path / "full", eval_fraction=0.3, seed=1)
    held = build_dataset(tmp_path / "faces", tmp_path / "held", eval_fraction=0.3, seed=1, eval_only=True)
    assert held.n_eval_people == full.n_eval_people > 0 and held.n_train_people == 0 < full.n_train_people
    files = sorted(p.relative_to(tmp_path / "full" / "eval") for p in (tmp_path / "full" / "eval").rglob("*")
                   if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "held" / "eval") for p in (tmp_path / "held" / "eval").rglob("*")
                           if p.is_file())
    assert all((tmp_path / "full" / "eval" / f).read_bytes() == (tmp_path / "held" / "eval" / f).read_bytes()
               for f in files)


def test_in_scene_pastes_the_face_whole_on_a_background():
    face = face_photo(1)
    seen = set()
    for seed in range(12):
        (scene,), kind = in_scene([face], np.random.default_rng(seed), size=(384, 512), sides=(200, 200))
        seen.add(kind)
        assert scene.shape == (512, 384, 3) and scene.dtype == np.uint8
        # side 200 = the photo's own size, so the photo appears unchanged somewhere in the scene
        hits = [(y, x) for y in range(0, 313) for x in range(0, 185)
                if scene[y, x, 0] == face[0, 0, 0] and np.array_equal(scene[y:y + 200, x:x + 200], face)]
        assert len(hits) == 1
        y, x = hits[0]
        outside = np.ones(scene.shape[:2], bool)
        outside[y:y + 200, x:x + 200] = False
        assert outside.any()
    assert seen == set(SCENE_KINDS)  # every background kind turns up
    with pytest.raises(ValueError, match="fit"):
        in_scene([face], np.random.default_rng(0), size=(100, 100), sides=(150, 200))


def test_build_dataset_train_scenes(tmp_path, monkeypatch):
    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    write_faces(tmp_path / "faces", 12)
    build_dataset(tmp_path / "faces", tmp_path / "plain", eval_fraction=0.3, seed=2)
    build_dataset(tmp_path / "faces", tmp_path / "half", eval_fraction=0.3, seed=2, train_scenes=0.5)
    build_dataset(tmp_path / "faces", tmp_path / "all", eval_fraction=0.3, seed=2, train_scenes=1.0)

    def rows(out):
        with (tmp_path / out / "train" / "train.csv").open() as f:
            return list(csv.DictReader(f))

    plain, half, every = rows("plain"), rows("half"), rows("all")
    assert [r["id"] for r in plain] == [r["id"] for r in half] == [r["id"] for r in every]  # same split
    assert all(r["scene"] == "" for r in plain) and all(r["scene"] in SCENE_KINDS for r in every)
    assert 0 < sum(r["scene"] != "" for r in half) < len(half)
    for p_row, h_row in zip(plain, half):
        folder_p = tmp_path / "plain" / "train" / "images" / p_row["path"]
        folder_h = tmp_path / "half" / "train" / "images" / h_row["path"]
        for stem in MASK_FILE_STEMS:
            a = np.asarray(Image.open(folder_p / f"{stem}.jpg"))
            b = np.asarray(Image.open(folder_h / f"{stem}.jpg"))
            if h_row["scene"]:
                assert a.shape == (200, 200, 3) and b.shape == (512, 384, 3)
            else:
                assert np.array_equal(a, b)  # people left in their own framing are unchanged
        if h_row["scene"]:
            # one placement and background for a person's seven photos: the unmasked and the incorrectly masked
            # photo differ only inside the pasted face
            normal = np.asarray(Image.open(folder_h / "normal.jpg")).astype(int)
            wrong = np.asarray(Image.open(folder_h / "incorrect_mask.jpg")).astype(int)
            ys, xs = np.nonzero(np.abs(normal - wrong).max(axis=2) > 40)
            assert ys.size and np.ptp(ys) <= SCENE_SIDES[1] and np.ptp(xs) <= SCENE_SIDES[1]
    # eval photos keep the faces' own framing, byte for byte
    ev = sorted(p.name for p in (tmp_path / "plain" / "eval" / "images").iterdir())
    assert ev == sorted(p.name for p in (tmp_path / "all" / "eval" / "images").iterdir()) and ev
    assert all((tmp_path / "plain" / "eval" / "images" / n).read_bytes()
               == (tmp_path / "all" / "eval" / "images" / n).read_bytes() for n in ev)
    with pytest.raises(ValueError, match="train_scenes"):
        build_dataset(tmp_path / "faces", tmp_path / "bad", train_scenes=1.5)


def test_build_dataset_filters_and_labels_csv(tmp_path, monkeypatch):
    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    names = write_faces(tmp_path / "faces", 6)
    report = build_dataset(tmp_path / "faces", tmp_path / "white", eval_fraction=0.0, races=[0])
    assert report.n_train_people == sum(1 for n in names if n.split("_")[2] == "0")
    with pytest.raises(ValueError, match="pass the filters"):
        build_dataset(tmp_path / "faces", tmp_path / "none", min_age=90)
    (tmp_path / "labels.csv").write_text("path,age,gender\n" + "".join(f"{n},40,female\n" for n in names[:3]))
    report = build_dataset(tmp_path / "faces", tmp_path / "csv", eval_fraction=0.0, labels_csv=tmp_path / "labels.csv")
    samples = load_train_samples(tmp_path / "csv" / "train")
    assert report.n_train_people == 3 and {(s.gender, s.age) for s in samples} == {(1, 40)}


def test_synth_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    write_faces(tmp_path / "faces", 5)
    assert main(["synth", str(tmp_path / "faces"), "--out", str(tmp_path / "out"), "--eval-fraction", "0",
                 "--race", "Asian", "--quiet"]) == 0
    assert "train people" in capsys.readouterr().out
    assert len(load_train_samples(tmp_path / "out" / "train")) == 7 * sum(1 for i in range(5) if i % 3)
    assert main(["synth", str(tmp_path / "faces"), "--out", str(tmp_path / "s"), "--eval-fraction", "0",
                 "--train-scenes", "1", "--quiet"]) == 0
    with (tmp_path / "s" / "train" / "train.csv").open() as f:
        assert all(r["scene"] in SCENE_KINDS for r in csv.DictReader(f))
    assert main(["synth", str(tmp_path / "faces"), "--out", str(tmp_path / "x"), "--race", "Martian"]) == 2
    assert "unknown race" in capsys.readouterr().err
    # real fabrics from a folder of masked faces: every mask takes one (a plain red one here)
    (tmp_path / "masked").mkdir()
    for i in range(6):
        Image.fromarray(np.full((200, 200, 3), (230, 0, 0), np.uint8)).save(tmp_path / "masked" / f"p{i}_0001.jpg")
    assert main(["synth", str(tmp_path / "faces"), "--out", str(tmp_path / "r"), "--eval-fraction", "0",
                 "--real-textures", str(tmp_path / "masked"), "--texture-share", "1", "--quiet"]) == 0
    masked = np.asarray(Image.open(next((tmp_path / "r" / "train" / "images").glob("*/mask1.jpg"))).convert("RGB"))
    mouth = masked[130:140, 95:105].astype(float)
    assert mouth[..., 0].mean() > mouth[..., 1].mean() + 60
    assert main(["synth", str(tmp_path / "faces"), "--out", str(tmp_path / "r2"), "--real-textures",
                 str(tmp_path / "faces" / "none")]) == 2


@pytest.mark.data
def test_real_textures_come_from_the_training_people_of_rmfd(monkeypatch):
    from maskage.training import masks
    from maskage.training.data import in_holdout, source_person

    read = []
    monkeypatch.setattr(masks, "load_image", lambda p: read.append(p) or load_image(p))
    folder = SHARED_DATA / "rmfd" / "with_mask"
    textures = real_textures(folder, limit=200, progress=False)
    assert len(read) == 200 and len(textures) >= 120 and all(t.shape == TEXTURE_SIZE + (3,) for t in textures)
    # the people the mask benchmarks keep aside (a fifth) give no fabric
    assert not [p for p in read if in_holdout(f"rmfd:{source_person(p)}", 0.2)]
    assert [p for p in sorted(folder.iterdir()) if in_holdout(f"rmfd:{source_person(p)}", 0.2)]


@pytest.mark.data
def test_masks_on_real_faces_cover_what_their_kind_says():
    from maskage.images import load_image

    photos = sorted((SHARED_DATA / "utkface").glob("*_2_*.jpg"))[::50][:30]
    assert len(photos) == 30
    images = [load_image(p) for p in photos]
    dets = faces.FaceDetector().detect(images)
    with_landmarks = [(i, img, d) for i, (img, d) in enumerate(zip(images, dets)) if d.landmarks is not None]
    assert len(with_landmarks) >= 28
    bad = []
    for i, img, det in with_landmarks:
        face = FaceGeometry.from_landmarks(det.landmarks, det.box)
        for kind in KINDS:
            drawn = draw_mask(img, det.landmarks, det.box, kind, seed=i)
            wrong = check_kind(drawn.alpha, face, kind)
            if wrong:
                bad.append(f"{photos[i].name} {kind}: {wrong}")
    assert bad == []


def write_sources(root: Path) -> list[str]:
    """A tiny UTKFace, All-Age-Faces and LFW (two photos of one woman, no ages) in their own naming schemes."""
    entries = []
    for name, files in (("utkface", [f"{20 + 9 * i}_{i % 2}_{i % 4}_2017{i:04d}.jpg" for i in range(8)]),
                        ("aaf", [f"{30 + 7 * i}_{i % 2}_2_aaf{i:05d}.jpg" for i in range(8)]),
                        ("lfw", ["male/Bob_Ray_0001.jpg", "male/Tom_Ash_0001.jpg",
                                 "female/Ann_Lee_0001.jpg", "female/Ann_Lee_0002.jpg"])):
        for i, f in enumerate(files):
            (root / name / f).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(face_photo(i)).save(root / name / f)
        entries.append(f"{name}={root / name}")
    return entries


def test_build_from_sources_keeps_source_person_and_unknown_ages(tmp_path, monkeypatch):
    from maskage.training.data import task_samples
    from maskage.training.sources import held_out

    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    entries = write_sources(tmp_path / "src")
    photos = ["normal", "mask1", "incorrect_mask"]
    report = build_dataset(entries, tmp_path / "out", eval_fraction=0.3, seed=0, photos=photos)
    assert report.n_train_people + report.n_eval_people == 20
    rows = list(csv.DictReader((tmp_path / "out" / "train" / "train.csv").open()))
    meta = list(csv.DictReader((tmp_path / "out" / "eval" / "meta.csv").open()))
    assert {r["dataset"] for r in rows} | {r["dataset"] for r in meta} == {"utkface", "aaf", "lfw"}
    for r in rows:
        assert not held_out(r["person"], 0.3) and r["photos"] == "mask1;incorrect_mask;normal"
        assert sorted(p.stem for p in (tmp_path / "out" / "train" / "images" / r["path"]).iterdir()) == sorted(photos)
    assert all(held_out(r["source_person"], 0.3) for r in meta)
    assert len(meta) == 3 * report.n_eval_people
    # the split is by person: both of Ann Lee's photos on one side
    ann = [r for r in rows if r["person"] == "lfw:Ann_Lee"] + [r for r in meta if r["source_person"] == "lfw:Ann_Lee"]
    assert len({"train" if "photos" in r else "eval" for r in ann}) == 1 and len(ann) in (2, 6)
    samples = load_train_samples(tmp_path / "out" / "train")
    assert len(samples) == 3 * report.n_train_people
    lfw = [s for s in samples if s.dataset == "lfw"]
    assert lfw and all(s.age == -1 and s.person.startswith("lfw:") for s in lfw)
    gender, age = task_samples(samples, "gender", "all"), task_samples(samples, "age", "all")
    assert len(gender) == len(samples) and len(age) == len(samples) - len(lfw)
    # a build without one source holds out the same people of the others
    build_dataset(entries[:2], tmp_path / "no_lfw", eval_fraction=0.3, seed=0, photos=photos)
    meta2 = list(csv.DictReader((tmp_path / "no_lfw" / "eval" / "meta.csv").open()))
    assert {r["source_person"] for r in meta2} == {r["source_person"] for r in meta if r["dataset"] != "lfw"}


def test_build_photos_subset_must_name_known_photos(tmp_path, monkeypatch):
    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    entries = write_sources(tmp_path / "src")
    with pytest.raises(ValueError, match="photos must name some of"):
        build_dataset(entries, tmp_path / "out", photos=["normal", "selfie"])


def test_synth_cli_takes_sources_and_photos(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    entries = write_sources(tmp_path / "src")
    assert main(["synth", *entries, "--out", str(tmp_path / "out"), "--photos", "normal,mask1", "--quiet"]) == 0
    rows = list(csv.DictReader((tmp_path / "out" / "train" / "train.csv").open()))
    assert rows and all(r["photos"] == "mask1;normal" for r in rows)
    assert main(["synth", entries[0], str(tmp_path / "src" / "aaf"), "--out", str(tmp_path / "x")]) == 2
    assert "NAME=DIR" in capsys.readouterr().err


def test_chin_share_sets_how_incorrect_masks_are_worn(tmp_path, monkeypatch):
    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    write_faces(tmp_path / "faces", 12)
    kinds = {}
    for share in (0.0, 1.0):
        out = tmp_path / f"out{share}"
        build_dataset(tmp_path / "faces", out, eval_fraction=0.0, seed=3, photos=["incorrect_mask"], chin_share=share)
        with (out / "train" / "train.csv").open() as f:
            kinds[share] = {r["incorrect_kind"] for r in csv.DictReader(f)}
    assert kinds == {0.0: {NOSE_EXPOSED}, 1.0: {UNDER_CHIN}}
    with pytest.raises(ValueError, match="chin_share"):
        build_dataset(tmp_path / "faces", tmp_path / "bad", chin_share=1.5)


def test_chin_low_redraws_only_the_masks_under_the_chin(tmp_path, monkeypatch):
    monkeypatch.setattr(faces, "FaceDetector", FixedDetector)
    write_faces(tmp_path / "faces", 4)
    for low in ("0", "1"):
        assert main(["synth", str(tmp_path / "faces"), "--out", str(tmp_path / f"out{low}"), "--eval-fraction", "0",
                     "--seed", "3", "--photos", "normal,mask1,incorrect_mask", "--chin-share", "1",
                     "--chin-low", low, "--quiet"]) == 0
    for folder in sorted((tmp_path / "out0" / "train" / "images").iterdir()):
        other = tmp_path / "out1" / "train" / "images" / folder.name
        for stem in ("normal", "mask1", "incorrect_mask"):
            same = np.array_equal(load_image(folder / f"{stem}.jpg"), load_image(other / f"{stem}.jpg"))
            assert same == (stem != "incorrect_mask"), (folder.name, stem)
    with pytest.raises(ValueError, match="chin_low"):
        build_dataset(tmp_path / "faces", tmp_path / "bad", chin_low=-0.1)


@pytest.mark.parametrize("arg", [{"eval_fraction": 1.0}, {"chin_share": -0.1}, {"texture_share": 1.2},
                                 {"chin_low": 1.5}, {"train_scenes": -1.0}])
def test_build_dataset_refuses_shares_out_of_range(tmp_path, arg):
    # refused before anything is read or written
    with pytest.raises(ValueError, match=next(iter(arg))):
        build_dataset(tmp_path / "missing", tmp_path / "out", **arg)
    assert not (tmp_path / "out").exists()
