"""Bad and unusual image inputs: each case and exactly what it gets (docs/reliability.md lists the same)."""
import io

import numpy as np
import pytest
from PIL import Image

from maskage.errors import UsageError
from maskage.images import ImageError, batches, image_list, load_image


def _jpeg_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def photo(w=64, h=48, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def write_case(tmp_path, case: str):
    """Write one bad or unusual input; return its path."""
    p = tmp_path / f"{case}.jpg"
    if case == "truncated_jpeg":
        p.write_bytes(_jpeg_bytes(photo())[:300])
    elif case == "text_named_jpg":
        p.write_text("this is not an image")
    elif case == "empty_file":
        p.write_bytes(b"")
    elif case == "grayscale":
        photo().convert("L").save(p)
    elif case == "rgba_png":
        p = p.with_suffix(".png")
        photo().convert("RGBA").save(p)
    elif case == "png_16bit":
        p = p.with_suffix(".png")
        Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16)).save(p)
    elif case == "cmyk_jpeg":
        photo().convert("CMYK").save(p)
    elif case == "exif_rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
        photo(64, 48).save(p, exif=exif)
    elif case == "one_pixel":
        Image.new("RGB", (1, 1), (10, 20, 30)).save(p)
    elif case == "huge_png":  # 400 megapixels of one colour: a few hundred kilobytes on disk
        p = p.with_suffix(".png")
        Image.new("1", (20000, 20000)).save(p)
    elif case == "folder":
        p.mkdir()
    elif case == "missing":
        pass
    else:
        raise ValueError(case)
    return p


# case -> (expected shape, or the error message's key words)
READABLE = {"grayscale": (48, 64, 3), "rgba_png": (48, 64, 3), "png_16bit": (48, 64, 3), "cmyk_jpeg": (48, 64, 3),
            "exif_rotated": (64, 48, 3), "one_pixel": (1, 1, 3)}
REFUSED = {"truncated_jpeg": "cannot read image", "text_named_jpg": "cannot read image",
           "empty_file": "cannot read image", "huge_png": "image too large", "folder": "is a folder",
           "missing": "file not found"}


@pytest.mark.parametrize("case", sorted(READABLE))
def test_unusual_images_load_as_rgb(tmp_path, case):
    arr = load_image(write_case(tmp_path, case))
    assert arr.shape == READABLE[case] and arr.dtype == np.uint8


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_bad_images_raise_a_clear_error(tmp_path, case):
    p = write_case(tmp_path, case)
    with pytest.raises(ImageError, match=REFUSED[case]) as info:
        load_image(p)
    assert str(p) in str(info.value)  # the message names the file


def test_conversions_keep_the_content(tmp_path):
    gray = load_image(write_case(tmp_path, "grayscale"))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    deep = load_image(write_case(tmp_path, "png_16bit"))
    assert deep.max() == 255 and deep.min() == 0  # scaled to 8 bits, not clipped to white
    cmyk = load_image(write_case(tmp_path, "cmyk_jpeg")).astype(int)
    assert np.abs(cmyk - np.asarray(photo()).astype(int)).mean() < 40  # colours survive the CMYK round trip
    assert load_image(write_case(tmp_path, "one_pixel"))[0, 0].tolist() == [10, 20, 30]


def test_arrays_and_pil_images(tmp_path):
    assert load_image(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert load_image(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
    with pytest.raises(ImageError, match="uint8"):
        load_image(np.zeros((5, 6, 3), np.float32))
    with pytest.raises(ImageError, match="HxW"):
        load_image(np.zeros((5, 6, 2), np.uint8))
    with pytest.raises(ImageError, match="unsupported image type"):
        load_image(42)
    assert load_image(photo().convert("P")).shape == (48, 64, 3)


def test_size_limit_is_checked_before_decoding(tmp_path):
    p = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(p)
    assert load_image(p, max_pixels=60_000).shape == (200, 300, 3)
    with pytest.raises(ImageError, match="300x200 pixels; the limit is 59,999"):
        load_image(p, max_pixels=59_999)


def test_batches_cover_every_item_once_in_order():
    items = list(range(10))
    assert [list(b) for b in batches(items, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [list(b) for b in batches(items, 10)] == [items]
    assert list(batches([], 3)) == []


@pytest.mark.parametrize("size", [0, -3, 2.5, True])
def test_a_batch_size_under_one_or_not_whole_is_a_usage_error(size):
    # a negative size would otherwise yield nothing at all: every photo silently left out
    with pytest.raises(UsageError, match="batch size"):
        list(batches([1, 2, 3], size))


def test_one_photo_or_many_give_a_list():
    arr = np.zeros((4, 4, 3), np.uint8)
    assert image_list("a.jpg") == ["a.jpg"] and len(image_list(arr)) == 1
    assert image_list(p for p in ["a.jpg", "b.jpg"]) == ["a.jpg", "b.jpg"]
