"""Fuzzing the readers of outside files: photos and CSVs. Any input gives a result or the reader's own clear
error (ImageError, DatasetError, ValueError with the file named), never a crash of another kind."""
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from maskage.training.data import DatasetError, load_train_samples, read_corrections
from maskage.images import ImageError, load_image
from maskage.metrics import read_class_csv

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid(fmt: str) -> bytes:
    buf = io.BytesIO()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))
    img.save(buf, format=fmt)
    return buf.getvalue()


SEEDS = {fmt: _valid(fmt) for fmt in ("JPEG", "PNG", "BMP", "WEBP")}


@st.composite
def damaged_images(draw) -> bytes:
    """Valid photos with bytes flipped, cut short, or spliced with noise; or noise alone."""
    kind = draw(st.sampled_from(["flip", "truncate", "splice", "noise"]))
    if kind == "noise":
        return draw(st.binary(max_size=2000))
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    if kind == "flip":
        for pos in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=20)):
            data[pos] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    else:
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = draw(st.binary(min_size=1, max_size=200))
    return bytes(data)


@FUZZ
@given(data=damaged_images(), suffix=st.sampled_from([".jpg", ".png", ".bmp", ".webp"]))
def test_load_image_never_crashes(tmp_path, data, suffix):
    p = tmp_path / f"photo{suffix}"
    p.write_bytes(data)
    try:
        arr = load_image(p)
    except ImageError as exc:
        assert str(p) in str(exc)
    else:
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and arr.size > 0


csv_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400)
csv_like = st.lists(st.lists(st.sampled_from(["id", "gender", "race", "age", "path", "ImageID", "ans", "male",
                                              "female", "3", "-1", "17.5", "x", "", '"', "a,b", "99999999999"]),
                             max_size=6), max_size=8).map(lambda rows: "\n".join(",".join(r) for r in rows))


@FUZZ
@given(text=st.one_of(csv_text, csv_like))
def test_csv_readers_never_crash(tmp_path, text):
    p = tmp_path / "f.csv"
    p.write_text(text, encoding="utf-8")
    for reader in (read_class_csv, read_corrections):
        try:
            out = reader(p)
        except (DatasetError, ValueError) as exc:
            assert "f.csv" in str(exc)
        else:
            assert isinstance(out, dict)
    (tmp_path / "images").mkdir(exist_ok=True)
    (tmp_path / "train.csv").write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match="train.csv"):  # no row can point at a complete person folder here
        load_train_samples(tmp_path)
