"""Face crops stored on disk, keyed by the photo's bytes and the crop and detector settings: training epochs read
crops from here and never run detection again."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..atomic import atomic_path, write_json_atomic
from ..images import ImageError, load_image
from ..progress import bar
from .faces import Box, CropSettings, DetectorSettings, FaceDetector, crop_face, pick_face


def _hinted(digest: str | None, hint: Box | None) -> str | None:
    """A photo's cache key with its labelled box (one photo, two labelled faces: two crops)."""
    if digest is None or hint is None:
        return digest
    return hashlib.sha1(f"{digest}:{[round(float(v), 2) for v in hint]}".encode()).hexdigest()


def _digest(path: str | Path) -> str | None:
    """SHA-1 of a photo file's bytes (what the crop cache is keyed by); None when it cannot be read."""
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def default_cache_dir() -> Path:
    return Path(os.environ.get("MASKAGE_CACHE") or Path.home() / ".cache" / "maskage")


@dataclass
class CachedCrops:
    """Crops of a list of photos, with their boxes. ``errors`` maps an index to why that photo failed."""

    crops: np.ndarray  # N x S x S x 3 uint8 (zeros where errors)
    boxes: list[Box | None]
    errors: dict[int, str]

    @property
    def found(self) -> np.ndarray:
        return np.array([b is not None for b in self.boxes])


class CropCache:
    """Face crops stored on disk, keyed by the photo's bytes and the crop and detector settings.

    Training epochs read crops from here and never re-run detection.
    """

    def __init__(
        self,
        root: str | Path | None = None,
        crop: CropSettings = CropSettings(),
        detector: DetectorSettings = DetectorSettings(),
    ) -> None:
        self.crop = crop
        self.detector_settings = detector
        # batch size stays out of the key: boxes can shift slightly with a photo's batch-mates whatever the
        # batch size (near-tied MTCNN candidates), so keying on it would cost re-detection and buy no reproducibility
        found_by = {k: v for k, v in detector.to_dict().items() if k != "batch_size"}
        if not detector.min_face_fraction:  # keys from before that setting existed stay valid
            found_by.pop("min_face_fraction")
        # training crops come from the portrait detector (detect); the scene settings never touch them, but for
        # YuNet its score threshold does
        for k in ("scene", "scene_min_face") + (("scene_threshold",) if detector.portrait == "mtcnn" else ()):
            found_by.pop(k)
        # v2: maskage's own batched MTCNN (maskage.mtcnn), whose boxes differ slightly from facenet-pytorch's; its
        # move from torch to ONNX Runtime kept the key (boxes equal to 1e-4 px on 79 of 80 real photos, IoU 0.93 on one)
        key = json.dumps({"crop": crop.to_dict(), "detector": found_by, "v": 2}, sort_keys=True)
        self.dir = Path(root or default_cache_dir()) / "crops" / hashlib.sha1(key.encode()).hexdigest()[:16]
        self._detector: FaceDetector | None = None
        self.detections_run = 0  # how many photos went through the detector (for tests and logs)

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(self.detector_settings)
        return self._detector

    def _entry(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.npz"

    def stack(self, paths: Sequence[str | Path], progress: bool = True,
              hints: Sequence[Box | None] | None = None) -> CachedCrops:
        """Crops of these photos as one memory-mapped uint8 array, stored once per list of photos.

        The first call builds it from the per-photo cache (detecting what is missing); later calls with the same
        photos (another fold, a resumed run, a new experiment) open it instantly and share it between processes
        through the page cache instead of holding a copy in each. ``hints``: a labelled face box per photo (or None),
        see ``get``.
        """
        hints = list(hints) if hints is not None else [None] * len(paths)
        digests = [_hinted(_digest(p), h) for p, h in zip(paths, hints)]
        # an unreadable photo's entry names its path, which no digest can equal
        key = hashlib.sha1("\n".join(d or f"unreadable:{p}" for d, p in zip(digests, paths)).encode()).hexdigest()[:20]
        array, meta = self.dir / "stacks" / f"{key}.npy", self.dir / "stacks" / f"{key}.json"
        if array.is_file() and meta.is_file():
            info = json.loads(meta.read_text())
            boxes = [tuple(b) if b else None for b in info["boxes"]]
            return CachedCrops(np.load(array, mmap_mode="r"), boxes, {int(k): v for k, v in info["errors"].items()})
        cached = self.get(paths, progress, digests, hints)
        with atomic_path(array) as tmp:
            np.save(tmp, cached.crops)
        write_json_atomic(meta, {"boxes": [list(b) if b else None for b in cached.boxes], "errors": cached.errors})
        return CachedCrops(np.load(array, mmap_mode="r"), cached.boxes, cached.errors)

    def get(self, paths: Sequence[str | Path], progress: bool = True,
            digests: Sequence[str | None] | None = None, hints: Sequence[Box | None] | None = None) -> CachedCrops:
        """Crops of these photos, detecting only those not in the cache yet (``digests``: the photos' ``_digest``
        when the caller has them already, with their hints' as ``_hinted`` gives them).

        ``hints``: a labelled face box per photo (None: none). Where one is given, the crop is cut around the
        detection that overlaps it (IoU >= ``HINT_IOU``, so the face is framed as prediction frames it), or around
        the hint itself where the detector finds no such face (a missed face, or a larger neighbour in a crowd)."""
        n = len(paths)
        hints = list(hints) if hints is not None else [None] * n
        s = self.crop.crop_size
        crops = np.zeros((n, s, s, 3), dtype=np.uint8)
        boxes: list[Box | None] = [None] * n
        errors: dict[int, str] = {}
        missing: list[tuple[int, str]] = []
        for i, p in enumerate(bar(paths, desc="crop cache", enabled=progress and n >= 200, leave=False)):
            digest = digests[i] if digests is not None else None
            if digest is None:
                try:
                    digest = _hinted(hashlib.sha1(Path(p).read_bytes()).hexdigest(), hints[i])
                except OSError as exc:
                    errors[i] = f"{p}: cannot read file ({exc})"
                    continue
            entry = self._entry(digest)
            if entry.is_file():
                with np.load(entry) as z:
                    crops[i] = z["crop"]
                    boxes[i] = tuple(float(v) for v in z["box"]) if z["box"].size else None
            else:
                missing.append((i, digest))
        bar_ = bar(total=len(missing), desc="detecting faces", enabled=progress and bool(missing), leave=False)
        chunk = max(self.detector_settings.batch_size * 4, 64)
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            images, ok = [], []
            for i, digest in part:
                try:
                    images.append(load_image(paths[i]))
                    ok.append((i, digest))
                except ImageError as exc:
                    errors[i] = str(exc)
            for (i, digest), img, dets in zip(ok, images, self.detector.detect_all(images)):
                box = pick_face(dets, hints[i])
                crops[i] = crop_face(img, box, self.crop)
                boxes[i] = box
                with atomic_path(self._entry(digest)) as tmp:
                    np.savez(tmp, crop=crops[i], box=np.array(box if box else [], dtype=np.float64))
            self.detections_run += len(ok)
            bar_.update(len(part))
        bar_.close()
        return CachedCrops(crops, boxes, errors)
