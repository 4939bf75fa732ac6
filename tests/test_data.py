import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from maskage.training.data import (
    DatasetError,
    TrainAugment,
    load_train_samples,
    person_folds,
    subset_people,
    task_samples,
    task_target,
)
from maskage.labels import AgeBins, Mask
from maskage.models.transforms import preprocess


def test_layout_reads_seven_photos_per_person_and_skips_hidden(toy_root, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(toy_root / "train", root)
    person = sorted((root / "images").iterdir())[0]
    (person / "._mask1.jpg").write_bytes(b"macos junk")
    (person / ".mask2.jpg").write_bytes(b"hidden")
    samples = load_train_samples(root)
    assert len(samples) == 12 * 7
    by_mask = np.bincount([s.mask for s in samples], minlength=3)
    assert list(by_mask) == [60, 12, 12]
    rows = {r["id"]: r for r in csv.DictReader((root / "train.csv").open())}
    for s in samples:
        assert s.gender == (1 if rows[s.person]["gender"] == "female" else 0)
        assert s.age == int(rows[s.person]["age"])
        assert not s.path.split("/")[-1].startswith(".")


def test_corrections_applied_by_id(toy_root, tmp_path):
    fixes = tmp_path / "fix.csv"
    fixes.write_text("id,gender,age,swap_normal_incorrect\n000000,female,61,\n000001,,,true\n")
    before = {(s.person, s.path): s for s in load_train_samples(toy_root / "train")}
    after = load_train_samples(toy_root / "train", fixes)
    for s in after:
        old = before[(s.person, s.path)]
        if s.person == "000000":
            assert (s.gender, s.age) == (1, 61)
        elif s.person == "000001":
            swapped = {Mask.INCORRECT: Mask.NOT_WEAR, Mask.NOT_WEAR: Mask.INCORRECT}.get(old.mask, old.mask)
            assert s.mask == swapped
        else:
            assert s == old


def test_no_person_in_two_folds_and_strata_spread():
    root_samples = []
    from maskage.training.data import Sample

    rng = np.random.default_rng(0)
    for p in range(60):
        g, age = int(rng.integers(0, 2)), int(rng.integers(18, 75))
        root_samples += [Sample(f"{p}/{k}.jpg", f"p{p}", k % 3, g, age) for k in range(7)]
    folds = person_folds(root_samples, 5, seed=0, threshold=60)
    assert set(folds) == {s.person for s in root_samples}
    val_people = [{p for p, f in folds.items() if f == k} for k in range(5)]
    assert sum(len(v) for v in val_people) == 60
    for k in range(5):
        train_people = {s.person for s in root_samples if folds[s.person] != k}
        val = {s.person for s in root_samples if folds[s.person] == k}
        assert val and train_people.isdisjoint(val)
        assert {s.gender for s in root_samples if s.person in val} == {0, 1}
    # deterministic for a seed
    assert person_folds(root_samples, 5, seed=0, threshold=60) == folds


def test_task_samples_and_targets(toy_root):
    samples = load_train_samples(toy_root / "train")
    assert len(task_samples(samples, "mask")) == len(samples)
    ga = task_samples(samples, "gender")
    assert len(ga) == 12 * 5 and all(s.mask == Mask.WEAR for s in ga)
    bins = AgeBins()
    s = ga[0]
    assert task_target(s, "age", bins) == bins.bin_of(s.age)
    assert task_target(s, "gender", bins) == s.gender


def test_subset_keeps_every_stratum(toy_root):
    samples = load_train_samples(toy_root / "train")
    sub = subset_people(samples, 6, seed=0, threshold=60)
    people = {s.person for s in sub}
    assert len(people) == 6
    strata = {(s.gender, s.age_group(60)) for s in sub}
    assert len(strata) == 6


def test_dataset_errors_name_the_row(toy_root, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(toy_root / "train", root)
    lines = (root / "train.csv").read_text().splitlines()
    (root / "train.csv").write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(DatasetError, match="line 14.*duplicate id"):
        load_train_samples(root)
    (root / "train.csv").write_text("\n".join(lines[:2] + ["999,male,Asian,30,nobody"]) + "\n")
    with pytest.raises(DatasetError, match="line 3.*not found"):
        load_train_samples(root)
    (root / "train.csv").write_text("id,gender,age,path\n")
    with pytest.raises(DatasetError, match="missing column"):
        load_train_samples(root)
    (root / "train.csv").write_text("\n".join([lines[0], lines[1].replace("male", "robot", 1)]) + "\n")
    with pytest.raises(DatasetError, match="line 2.*unknown gender"):
        load_train_samples(root)


def test_preprocess_looks_up_each_channels_normalised_level():
    from maskage.models.transforms import _normalise_table

    crops = np.random.default_rng(3).integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    table = _normalise_table(mean, std)
    ref = np.stack([table[ch][crops[..., ch]] for ch in range(3)], axis=1)  # N x 3 x H x W
    got = preprocess(crops, 24, mean, std)
    assert got.dtype == np.float32 and got.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(preprocess(crops[:, :, ::-1], 24, mean, std), ref[..., ::-1])  # a strided view


def test_preprocess_normalises_with_given_mean_std():
    crops = np.full((2, 20, 20, 3), 255, dtype=np.uint8)
    x = preprocess(crops, 16, (0.5, 0.5, 0.5), (0.5, 0.25, 0.5))
    assert x.shape == (2, 3, 16, 16) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(x[:, 1], 2.0, atol=1e-6)


@pytest.mark.parametrize("size,out", [(160, 128), (100, 160), (37, 16), (40, 40)])
def test_preprocess_resizes_as_torchs_antialiased_bilinear(size, out):
    import torch.nn.functional as F

    crops = np.random.default_rng(size).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    x = torch.as_tensor(crops).permute(0, 3, 1, 2).float() / 255.0
    if size != out:
        x = F.interpolate(x, size=(out, out), mode="bilinear", antialias=True, align_corners=False)
    ref = ((x - 0.5) / 0.25).numpy()
    np.testing.assert_allclose(preprocess(crops, out, (0.5,) * 3, (0.25,) * 3), ref, atol=1e-4)
    assert preprocess(crops[0], out, (0.5,) * 3, (0.25,) * 3).shape == (1, 3, out, out)  # one crop: a batch of one
    # crops of another dtype take the arithmetic path, with the same result
    np.testing.assert_allclose(preprocess(crops.astype(np.float32), out, (0.5,) * 3, (0.25,) * 3), ref, atol=1e-4)


def test_augment_is_deterministic_for_a_seed():
    crop = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    a = [TrainAugment(seed=3)(crop) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    out = TrainAugment(hflip=False, color_jitter=0, scale_jitter=0)(crop)
    np.testing.assert_array_equal(out, crop)
    assert TrainAugment(scale_jitter=0.3, seed=1)(crop).shape[0] == TrainAugment(scale_jitter=0.3, seed=1)(crop).shape[1]


def test_augment_differs_across_dataloader_workers():
    from torch.utils.data import DataLoader

    from maskage.training.data import CropDataset

    crops = np.random.default_rng(0).integers(0, 255, (8, 24, 24, 3), dtype=np.uint8)
    crops[:] = crops[0]  # one image repeated: any difference comes from augmentation
    ds = CropDataset(crops, [0] * 8, 16, (0.5,) * 3, (0.5,) * 3, TrainAugment(seed=0, color_jitter=0.5))
    loader = DataLoader(ds, batch_size=4, num_workers=2, generator=torch.Generator().manual_seed(0))
    a, b = [x for x, _ in loader]
    assert not torch.equal(a, b)  # worker 0 and worker 1 drew different augmentations


def test_source_person_keeps_one_face_on_one_side():
    from maskage.training.data import source_person

    assert source_person("x/01234_Mask.jpg") == source_person("y/01234_Mask_Mouth_Chin.jpg") == "01234"
    assert source_person("0_0_aidai_0014_8c796954.jpg") == source_person("0_0_aidai_0029_4e7d956f.jpg") == "0_0_aidai"
    assert source_person("0129_35e3be9c.jpg") == "0129"


def test_source_samples_split_train_and_holdout(tmp_path):
    from PIL import Image

    from maskage.training.data import source_samples

    for folder in ("correct", "incorrect"):
        (tmp_path / "mfn" / folder).mkdir(parents=True)
        for i in range(40):
            suffix = "Mask" if folder == "correct" else "Mask_Mouth_Chin"
            Image.new("RGB", (8, 8)).save(tmp_path / "mfn" / folder / f"{i:05d}_{suffix}.jpg")
    entries = [f"{tmp_path / 'mfn' / 'correct'}=wear", f"{tmp_path / 'mfn' / 'incorrect'}=incorrect"]
    train = source_samples(entries, "train", 0.25)
    held = source_samples(entries, "holdout", 0.25)
    assert len(train) + len(held) == 80 and 5 < len(held) < 40
    assert not {s.person for s in train} & {s.person for s in held}  # one FFHQ face never on both sides
    assert {s.mask for s in train} == {Mask.WEAR, Mask.INCORRECT} and {(s.gender, s.age) for s in train} == {(-1, -1)}
    assert task_samples(train, "gender", "all") == [] and task_samples(train, "mask") == train
    with pytest.raises(DatasetError, match="label must be one of"):
        source_samples([f"{tmp_path}=masked"])
    with pytest.raises(DatasetError, match="not found"):
        source_samples([f"{tmp_path / 'nope'}=wear"])


def test_gender_age_photos_setting(toy_root):
    samples = load_train_samples(toy_root / "train")
    assert len(task_samples(samples, "gender", "all")) == len(samples)
    assert {s.mask for s in task_samples(samples, "age", "wear")} == {Mask.WEAR}


def test_bad_person_folders_name_the_row_and_the_files(toy_root, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(toy_root / "train", root)
    rows = list(csv.DictReader((root / "train.csv").open()))
    folder = root / "images" / rows[2]["path"]
    (folder / "mask3.jpg").unlink()
    with pytest.raises(DatasetError, match=r"line 4 \(id %s\).*missing mask3" % rows[2]["id"]):
        load_train_samples(root)
    shutil.copy(folder / "mask1.jpg", folder / "mask3.jpg")
    (folder / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="line 4.*unexpected notes.txt"):
        load_train_samples(root)
    (folder / "notes.txt").unlink()
    shutil.copy(folder / "mask1.jpg", folder / "mask1.png")
    with pytest.raises(DatasetError, match="line 4.*two photos for mask1"):
        load_train_samples(root)
    (folder / "mask1.png").unlink()
    (folder / "._mask1.jpg").write_bytes(b"resource fork")  # hidden files are ignored
    assert len(load_train_samples(root)) == 7 * len(rows)
    lines = (root / "train.csv").read_text().splitlines()
    lines[1] = lines[1].replace(f",{rows[0]['age']},", ",-4,")
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="line 2.*age -4 is outside"):
        load_train_samples(root)


def _constant_batch(n: int = 6, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with the value i, so every pixel tells which image it came from."""
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()
    return x, torch.arange(n) * 10


def test_cutmix_pastes_a_box_and_mixes_labels_by_its_area():
    from maskage.training.augment import mix_batch

    x, y = _constant_batch()
    for seed in range(20):
        out, ya, yb, lam = mix_batch(x, y, 0.0, 1.0, torch.Generator().manual_seed(seed))
        assert torch.equal(ya, y) and sorted(yb.tolist()) == sorted(y.tolist())
        for i in range(len(x)):
            own = (out[i] == i).float().mean().item()
            other = yb[i].item() // 10
            assert torch.all((out[i] == i) | (out[i] == other))
            if other != i:  # an image pasted onto itself shows no box
                assert own == pytest.approx(lam, abs=1e-6)
        assert 0.0 <= lam <= 1.0


def test_mixup_blends_images_and_labels_with_one_weight():
    from maskage.training.augment import mix_batch

    x, y = _constant_batch()
    out, ya, yb, lam = mix_batch(x, y, 0.4, 0.0, torch.Generator().manual_seed(3))
    assert 0 < lam < 1
    for i in range(len(x)):
        j = yb[i].item() // 10
        assert torch.allclose(out[i], torch.full_like(out[i], lam * i + (1 - lam) * j))
    same = mix_batch(x, y, 0.0, 0.0, torch.Generator().manual_seed(3))
    assert same[0] is x and same[3] == 1.0 and torch.equal(same[2], y)
    # both set: some batches MixUp (no pixel keeps its own value exactly), some CutMix
    kinds = set()
    for seed in range(30):
        out, _, yb, lam = mix_batch(x, y, 0.4, 1.0, torch.Generator().manual_seed(seed))
        moved = [i for i in range(len(x)) if yb[i].item() // 10 != i]
        if moved:
            i = moved[0]
            kinds.add("cutmix" if torch.any(out[i] == i) and torch.all((out[i] == i) | (out[i] == yb[i] // 10)) else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_clahe_raises_local_contrast_and_keeps_the_image_shape():
    from maskage.training.augment import TrainAugment, clahe

    rng = np.random.default_rng(0)
    flat = (120 + rng.integers(0, 12, (64, 64, 3))).astype(np.uint8)  # a dull, low-contrast crop
    out = clahe(flat)
    assert out.shape == flat.shape and out.dtype == np.uint8
    assert out.std() > 2 * flat.std()
    aug = TrainAugment(hflip=False, color_jitter=0, scale_jitter=0, clahe=1.0)
    np.testing.assert_array_equal(aug(flat), out)
    assert np.array_equal(TrainAugment(hflip=False, color_jitter=0, scale_jitter=0)(flat), flat)


def test_brightness_contrast_and_flip_settings_do_what_they_say():
    from maskage.training.augment import TrainAugment

    ramp = np.tile(np.linspace(60, 190, 32).astype(np.uint8)[None, :, None], (32, 1, 3))
    flipped = TrainAugment(hflip=True, color_jitter=0, scale_jitter=0, seed=0)
    outs = [flipped(ramp) for _ in range(20)]
    assert any(np.array_equal(o, ramp[:, ::-1]) for o in outs) and any(np.array_equal(o, ramp) for o in outs)
    jitter = TrainAugment(hflip=False, color_jitter=0.4, scale_jitter=0, seed=1)
    for _ in range(20):
        out = jitter(ramp).astype(np.float32)
        # brightness moves the mean by at most 0.2 x 255; contrast scales the spread by 0.6..1.4
        assert abs(out.mean() - ramp.mean()) <= 0.2 * 255 + 1
        assert 0.6 * ramp.std() - 1 <= out.std() <= 1.4 * ramp.std() + 1
    assert len({round(float(jitter(ramp).mean()), 2) for _ in range(5)}) > 1


def test_filter_races_keeps_the_named_races_in_any_case(toy_root):
    from maskage.training.data import filter_races

    samples = load_train_samples(toy_root / "train")
    assert {s.race for s in samples} == {"Asian"}
    assert filter_races(samples, []) == samples
    assert filter_races(samples, ["asian"]) == samples
    with pytest.raises(DatasetError, match="no one in train.csv is indian"):
        filter_races(samples, ["Asian", "Indian"])


def test_photo_degradations_change_the_crop_and_keep_its_shape():
    from maskage.training.augment import TrainAugment, degrade

    crop = np.zeros((64, 64, 3), np.uint8)
    crop[:, 32:] = 255  # a sharp edge: blur, resolution and JPEG all soften it
    rng = np.random.default_rng(0)
    out = degrade(crop, rng, 1.0)
    assert out.shape == crop.shape and out.dtype == np.uint8
    assert not np.array_equal(out, crop)
    assert np.array_equal(degrade(crop, np.random.default_rng(0), 0.0), crop)  # p=0: untouched
    a = TrainAugment(hflip=False, color_jitter=0, scale_jitter=0, seed=3, photo=1.0)
    b = TrainAugment(hflip=False, color_jitter=0, scale_jitter=0, seed=3, photo=1.0)
    assert np.array_equal(a(crop), b(crop))  # seeded
    assert np.array_equal(TrainAugment(hflip=False, color_jitter=0, scale_jitter=0, photo=0.0)(crop), crop)
    # the edge is no longer a one-pixel step in most draws
    soft = [np.abs(np.diff(degrade(crop, np.random.default_rng(s), 1.0)[32, 28:36].astype(int), axis=0)).max(0).max()
            for s in range(10)]
    assert np.median(soft) < 255


def test_filter_datasets_keeps_the_named_sources():
    from maskage.training.data import Sample, filter_datasets

    samples = [Sample("a", "1", 0, 0, 30, dataset="utkface"), Sample("b", "2", 0, 1, 40, dataset="aaf"),
               Sample("c", "3", 0, 1, -1, dataset="lfw")]
    assert [s.path for s in filter_datasets(samples, ["utkface", "lfw"])] == ["a", "c"]
    assert filter_datasets(samples, []) == samples
    with pytest.raises(DatasetError, match="no photo in train.csv is from imdb"):
        filter_datasets(samples, ["imdb"])


def test_occluder_covers_the_lower_face_with_a_piece_of_the_other_crop():
    from maskage.training.augment import paste_occluder

    crop, other = np.zeros((80, 80, 3), np.uint8), np.full((80, 80, 3), 200, np.uint8)
    for seed in range(20):
        out = paste_occluder(crop, other, np.random.default_rng(seed))
        changed = out.max(2) > 0
        assert out.shape == crop.shape and out.dtype == np.uint8 and changed.any()
        rows = np.flatnonzero(changed.any(1))
        assert rows.min() >= 80 * 0.6 - 0.25 * 80 - 1  # nothing above the nose: the eyes stay in view
        assert out.max() <= 200 and np.array_equal(crop, np.zeros_like(crop))  # the input is not written to


def test_dataset_occludes_only_the_rows_it_is_given():
    from maskage.training.data import CropDataset

    crops = np.zeros((4, 48, 48, 3), np.uint8)
    crops[2:] = 250  # rows 2 and 3: the "bare faces" whose pieces are pasted
    plain = TrainAugment(hflip=False, color_jitter=0, scale_jitter=0, seed=0)
    ds = CropDataset(crops, [0, 1, 2, 2], 48, (0, 0, 0), (1, 1, 1), plain, occlude=1.0, occlude_rows=[0, 2, 3])
    x0 = ds[0][0]  # a listed row: a bright piece over its mouth
    assert float(x0.max()) > 0.5 and float(x0[:, :20].max()) == 0.0
    assert float(ds[1][0].max()) == 0.0  # row 1 is not listed: untouched
    off = CropDataset(crops, [0, 1, 2, 2], 48, (0, 0, 0), (1, 1, 1), plain, occlude=0.0, occlude_rows=[0, 2, 3])
    assert float(off[0][0].max()) == 0.0


def _faces_csv(folder, rows):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "faces.csv").open("w") as f:
        f.write("file,x0,y0,x1,y1,mask,photo,face_px\n")
        for name, box, mask, photo in rows:
            Image.new("RGB", (64, 64)).save(folder / name)
            f.write(f"{name},{','.join(map(str, box))},{mask},{photo},40\n")


def test_faces_csv_source_splits_by_photo_and_keeps_each_box(tmp_path):
    from maskage.training.data import source_samples

    states = ("wear", "incorrect", "not_wear")
    # 60 photos of two faces each: the faces of one photo must fall on one side of the split
    rows = [(f"p{i}_{k}.jpg", (4 + k, 6, 40 + k, 50), states[(i + k) % 3], f"photo{i}") for i in range(60) for k in (0, 1)]
    _faces_csv(tmp_path / "facemask_faces", rows)
    entry = [f"{tmp_path / 'facemask_faces'}=faces.csv"]
    train, held = source_samples(entry, "train", 0.2), source_samples(entry, "holdout", 0.2)
    assert len(train) + len(held) == 120 and 4 < len(held) < 60
    assert not {s.person for s in train} & {s.person for s in held}
    assert all(s.person.startswith("facemask_faces:photo") for s in train + held)
    by_name = {Path(s.path).name: s for s in train + held}
    assert by_name["p7_1.jpg"].box == (5.0, 6.0, 41.0, 50.0) and by_name["p7_1.jpg"].mask == Mask.NOT_WEAR
    assert {(s.gender, s.age) for s in train} == {(-1, -1)}
    # a fixed hash of the photo id: the same split every time, and another holdout share keeps it nested
    assert [s.path for s in source_samples(entry, "holdout", 0.2)] == [s.path for s in held]
    assert {s.path for s in held} <= {s.path for s in source_samples(entry, "holdout", 0.4)}


def test_faces_csv_source_keeps_the_states_named_after_a_colon(tmp_path):
    from maskage.training.data import source_samples

    states = ("wear", "incorrect", "not_wear")
    rows = [(f"p{i}.jpg", (2, 2, 30, 30), states[i % 3], f"photo{i}") for i in range(90)]
    _faces_csv(tmp_path / "f", rows)
    every = source_samples([f"{tmp_path / 'f'}=faces.csv"], "train", 0.2)
    wrong = source_samples([f"{tmp_path / 'f'}=faces.csv:incorrect"], "train", 0.2)
    two = source_samples([f"{tmp_path / 'f'}=faces.csv: incorrect, not_wear"], "holdout", 0.2)
    assert wrong and {s.mask for s in wrong} == {Mask.INCORRECT}
    # the same photos' split: the filtered source is the unfiltered one's incorrect faces, no more, no fewer
    assert [s.path for s in wrong] == [s.path for s in every if s.mask == Mask.INCORRECT]
    assert two and {s.mask for s in two} == {Mask.INCORRECT, Mask.NOT_WEAR}
    assert not {s.person for s in two} & {s.person for s in every}
    with pytest.raises(DatasetError, match="'worn' is not one of"):
        source_samples([f"{tmp_path / 'f'}=faces.csv:worn"])
    _faces_csv(tmp_path / "g", [("a.jpg", (1, 1, 20, 20), "wear", "x")])
    with pytest.raises(DatasetError, match="no faces listed of incorrect"):
        source_samples([f"{tmp_path / 'g'}=faces.csv:incorrect"])


def test_faces_csv_source_names_the_bad_row(tmp_path):
    from maskage.training.data import source_samples

    _faces_csv(tmp_path / "f", [("a.jpg", (1, 1, 20, 20), "wear", "x"), ("b.jpg", (1, 1, 20, 20), "masked", "y")])
    with pytest.raises(DatasetError, match=r"faces.csv line 3: mask 'masked'"):
        source_samples([f"{tmp_path / 'f'}=faces.csv"])
    _faces_csv(tmp_path / "g", [("a.jpg", (30, 1, 20, 20), "wear", "x")])
    with pytest.raises(DatasetError, match=r"line 2: box .* is empty"):
        source_samples([f"{tmp_path / 'g'}=faces.csv"])
    with pytest.raises(DatasetError, match="file not found"):
        source_samples([f"{tmp_path / 'f'}=labels.csv"])
