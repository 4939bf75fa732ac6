"""Reading photos into RGB uint8 arrays, and taking them in batches."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Iterable, Iterator, Sequence, TypeVar, Union

import numpy as np
from PIL import Image, ImageOps

from .errors import MaskageError, UsageError

ImageInput = Union[str, Path, Image.Image, np.ndarray]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Larger photos are refused before decoding (a decompression bomb would take gigabytes); 80 MP is above any camera
# photo people feed a face classifier and below Pillow's own bomb warning (89 MP).
MAX_PIXELS = 80_000_000


T = TypeVar("T")


class ImageError(MaskageError, ValueError):
    """A file or object that cannot be read as a photo."""


class ImageTooLargeError(ImageError):
    """A photo over the pixel limit, refused before it is decoded."""


def _read_photo(source: str | Path | io.BytesIO, name: str, max_pixels: int,
                unknown_format: str | None = None) -> np.ndarray:
    """Open a photo file, refuse it unread over ``max_pixels``, decode it upright as RGB; ImageError naming
    ``name``. ``unknown_format``: the message for data no image format reads (else "cannot read image")."""
    try:
        with Image.open(source) as im:
            if im.width * im.height > max_pixels:
                raise ImageTooLargeError(f"{name}: image too large ({im.width}x{im.height} pixels; the limit is "
                                         f"{max_pixels:,})")
            return _pil_to_rgb(ImageOps.exif_transpose(im))  # decodes here: a truncated file fails inside the try
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own check fires first above 179 MP
        raise ImageTooLargeError(f"{name}: image too large ({exc})") from None
    except FileNotFoundError:
        raise ImageError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a folder, not an image") from None
    except Image.UnidentifiedImageError as exc:
        raise ImageError(f"{name}: {unknown_format or f'cannot read image ({exc})'}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: cannot read image ({exc})") from None


def decode_image_bytes(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An RGB uint8 array from an encoded photo's bytes (an upload); ImageError saying what is wrong with it:
    empty, not an image, truncated, or (ImageTooLargeError) over ``max_pixels``."""
    if not data:
        raise ImageError(f"{name}: empty (0 bytes)")
    return _read_photo(io.BytesIO(data), name, max_pixels, unknown_format="not an image (no known image format)")


def load_image(image: ImageInput, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An RGB uint8 HxWx3 array from a path, a PIL image or an array (HxW, HxWx3 RGB, HxWx4 RGBA).

    EXIF orientation is applied, so phone photos come out upright. Files over ``max_pixels`` are refused unread.
    """
    if isinstance(image, (str, Path)):
        return _read_photo(image, str(image), max_pixels)
    if isinstance(image, Image.Image):
        return _pil_to_rgb(image)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ImageError(f"array image must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
        if arr.dtype != np.uint8:
            raise ImageError(f"array image must be uint8, got {arr.dtype}")
        return np.ascontiguousarray(arr[:, :, :3])
    raise ImageError(f"unsupported image type {type(image).__name__}")


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping
        arr = np.asarray(im, dtype=np.float64)
        top = arr.max() or 1.0
        im = Image.fromarray((arr / top * 255).astype(np.uint8))
    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError("empty image")
    return np.ascontiguousarray(arr)


def image_list(images: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """The inputs as a list: one photo (a path, a PIL image or an array) becomes a list of one."""
    if isinstance(images, (str, Path, np.ndarray, Image.Image)):
        return [images]
    return list(images)


def batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items``, ``size`` each (the last may be shorter). A size under 1 is a UsageError:
    ``range`` would fail on 0 and silently yield nothing for a negative step."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise UsageError(f"batch size must be a whole number >= 1, got {size!r}")
    for start in range(0, len(items), size):
        yield items[start : start + size]
