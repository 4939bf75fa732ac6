"""Face detection (MTCNN, batched, or YuNet for one-face photos; YuNet for scenes) and face crops with a fallback and an
on-disk cache. No PyTorch: MTCNN's networks run on ONNX Runtime (``maskage.mtcnn``)."""
from __future__ import annotations

import ctypes
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import UsageError
from . import mtcnn
from .mtcnn import MtcnnNets

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
SCENE_MODES = ("auto", "on", "off")
PORTRAIT_DETECTORS = ("mtcnn", "yunet")
YUNET_ONE_THREAD_PIXELS = 240 * 320  # smaller YuNet inputs run on one thread (see _yunet_detect)
YUNET_MAX_SIDE = 960  # libfacedetection's stated input limit: larger photos are scaled down to it first


@dataclass(frozen=True)
class CropSettings:
    """How a face crop is cut from a photo. Saved with every model that was trained on such crops."""

    crop_size: int = 256
    margin: float = 0.2  # fraction of the face box's longer side added on each side
    fallback_fraction: float = 0.7  # side of the centre crop, as a fraction of the shorter image side
    # UTKFace framing: keep only a square of ``frame`` x the box's longer side, centred ``frame_shift`` x that side
    # below the box centre, and repeat its border beyond it, as the margin does around UTKFace's tight 200 px crops
    # (there the photo is about 0.79 of MTCNN's box, 0.12 below its centre). Models that learnt from such crops then
    # see a face in a larger photo as they saw it in training. 0 = off.
    frame: float = 0.0
    frame_shift: float = 0.0
    # the crop's centre this many x the box's longer side below the box's: more of the chin and neck, where a mask
    # pulled down sits (real scenes' labelled boxes reach lower than the detectors' boxes). 0 = centred
    shift: float = 0.0

    def __post_init__(self) -> None:
        if self.frame < 0:
            raise UsageError(f"frame must be >= 0 (0 = off), got {self.frame}")
        if not -0.5 <= self.shift <= 0.5:
            raise UsageError(f"shift must be in [-0.5, 0.5] (0 = centred), got {self.shift}")

    def to_dict(self) -> dict:
        d = asdict(self)
        if not self.frame:  # settings, model files and crop-cache keys from before framing existed stay as they were
            d.pop("frame"), d.pop("frame_shift")
        if not self.shift:  # likewise
            d.pop("shift")
        return d


@dataclass(frozen=True)
class DetectorSettings:
    """How faces are found: MTCNN or YuNet for photos of one person (the largest face), YuNet for scenes."""

    min_face_size: int = 40
    # the smallest face searched for is also at least this share of the photo's shorter side: fewer pyramid
    # levels on large photos (0 = off; `benchmarks/speed.py --sweep` measures its speed and box overlap)
    min_face_fraction: float = 0.0
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    batch_size: int = 16
    # Scenes (streets, shops, queues: several people, small and masked faces) go to YuNet (libfacedetection, the
    # `yuface` package), which finds far more of them than MTCNN and faster (benchmarks/scenes.py): "auto" when every
    # face of a photo is asked for (predict_all_faces, --all-faces, video), "on" always, "off" never (MTCNN only).
    scene: str = "auto"
    scene_threshold: float = 0.7  # YuNet's score (0..1) a face needs
    scene_min_face: int = 15  # px, shorter side: smaller faces are too few pixels to tell a mask's state
    # The detector outside scene mode (the largest face of a photo): "mtcnn", or "yunet" on the photo scaled down so
    # that the smallest face searched for (``min_face``) is ``portrait_face_px`` px: 2.7x MTCNN's speed at 24 px on
    # 384x512 photos with min_face_fraction 0.2, and boxes that hold on tight crops where MTCNN's outgrow the photo
    # (benchmarks/cross_source.py, docs/measurements.md). Its score threshold is ``scene_threshold``.
    portrait: str = "mtcnn"
    portrait_face_px: int = 24

    def __post_init__(self) -> None:
        if self.scene not in SCENE_MODES:
            raise UsageError(f"scene must be one of {', '.join(SCENE_MODES)}, got {self.scene!r}")
        if self.portrait not in PORTRAIT_DETECTORS:
            raise UsageError(f"portrait must be one of {', '.join(PORTRAIT_DETECTORS)}, got {self.portrait!r}")
        if self.portrait_face_px < 8:
            raise UsageError(f"portrait_face_px must be >= 8 (YuNet finds no smaller face), got {self.portrait_face_px}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["thresholds"] = list(self.thresholds)
        if self.portrait == "mtcnn":  # files and crop-cache keys from before the setting existed stay as they were
            d.pop("portrait"), d.pop("portrait_face_px")
        return d

    def uses_scene(self, all_faces: bool) -> bool:
        """Whether photos go to the scene detector, when every face (``all_faces``) or the largest is asked for."""
        return self.scene == "on" or (self.scene == "auto" and all_faces)

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorSettings":
        d = dict(d)
        if "thresholds" in d:
            d["thresholds"] = tuple(d["thresholds"])
        return cls(**d)


@dataclass(frozen=True)
class Detection:
    """The chosen face of one photo; ``box`` is None when no face was found."""

    box: Box | None
    prob: float | None = None
    # MTCNN's five landmarks: left eye, right eye, nose tip, left and right mouth corner, as (x, y)
    landmarks: tuple[tuple[float, float], ...] | None = None


class FaceDetector:
    """Batched MTCNN (photos of equal size go through the network together), or YuNet (scenes; portraits when
    ``DetectorSettings.portrait`` says so)."""

    def __init__(self, settings: DetectorSettings = DetectorSettings()) -> None:
        self.settings = settings
        self._nets: MtcnnNets | None = None

    @property
    def nets(self) -> MtcnnNets:
        """MTCNN's three networks on ONNX Runtime, loaded on first use (YuNet alone never needs them)."""
        if self._nets is None:
            self._nets = MtcnnNets()
        return self._nets

    def detect(self, images: Sequence[np.ndarray]) -> list[Detection]:
        """The largest face of each RGB uint8 image, in input order (``box=None`` where none was found)."""
        return [faces[0] if faces else Detection(None) for faces in self.detect_all(images)]

    def detect_all(self, images: Sequence[np.ndarray], scene: bool = False) -> list[list[Detection]]:
        """Every face of each image, largest first; an empty list where none was found. ``scene``: with the scene
        detector (YuNet at full size, see ``DetectorSettings.scene``); else faces from about ``min_face`` px up, by
        the ``portrait`` detector."""
        if scene:
            return [_yunet_detect(img, self.settings.scene_threshold, self.settings.scene_min_face) for img in images]
        if self.settings.portrait == "yunet":
            return [self._yunet_portrait(img) for img in images]
        out: list[list[Detection] | None] = [None] * len(images)
        for chunk in self.batches(images):
            for i, dets in zip(chunk, self._detect_batch([images[i] for i in chunk])):
                out[i] = dets
        return out  # type: ignore[return-value]

    def _yunet_portrait(self, image: np.ndarray) -> list[Detection]:
        # no size filter: as with MTCNN's pyramid, the scale sets the smallest face found (somewhat under min_face);
        # a photo without a face at that scale gets a second look at twice it: masked faces near min_face score
        # under the threshold when that small (no face at all, and the centre crop, otherwise)
        scale = self.settings.portrait_face_px / self.min_face(*image.shape[:2])
        found = _yunet_detect(image, self.settings.scene_threshold, 0.0, scale)
        return found if found or scale >= 1 else _yunet_detect(image, self.settings.scene_threshold, 0.0, 2 * scale)

    def batches(self, images: Sequence[np.ndarray]) -> list[list[int]]:
        """Indices of the images in the batches MTCNN sees: photos of one size, at most ``batch_size`` each."""
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, img in enumerate(images):
            by_shape.setdefault(img.shape, []).append(i)
        bs = self.settings.batch_size
        return [idx[start : start + bs] for idx in by_shape.values() for start in range(0, len(idx), bs)]

    def min_face(self, height: int, width: int) -> int:
        """The smallest face searched for in a photo of this size, in pixels."""
        return max(self.settings.min_face_size, int(self.settings.min_face_fraction * min(height, width)))

    def _detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        min_face = self.min_face(*images[0].shape[:2])  # a batch holds photos of one size
        found = mtcnn.detect(self.nets, np.stack(images), min_face, self.settings.thresholds, self.settings.factor)
        out = []
        for boxes, points in found:
            order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
            out.append([
                Detection(tuple(float(v) for v in boxes[k, :4]), float(boxes[k, 4]),
                          tuple((float(x), float(y)) for x, y in points[k]))
                for k in order  # largest first
            ])
        return out


def _yunet_detect(image: np.ndarray, threshold: float, min_face: float, scale: float = 1.0) -> list[Detection]:
    """YuNet's faces of at least ``min_face`` px in one RGB photo, largest first, found on the photo scaled by
    ``scale`` (at most 1, and at most YuNet's 960 px) and mapped back. Its boxes match MTCNN's in centre and size
    (median offset under 0.01 of the side over 319 faces of AAF and RMFD, the same five landmarks in the same
    order), so the crops the task models learnt from MTCNN's boxes come out alike; not on tight crops (UTKFace's),
    where MTCNN's box outgrows the photo and YuNet's does not."""
    try:
        from yuface import yuface as _yu  # the compiled detector; yuface's Python wrapper only filters and warns
    except ImportError:
        raise ImportError("YuNet needs the yuface package (pip install yuface); or set the detector's scene='off' "
                          "and portrait='mtcnn' to use MTCNN only") from None
    h, w = image.shape[:2]
    scale = min(1.0, scale, YUNET_MAX_SIDE / max(h, w))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA) \
        if scale < 1 else image
    # a second thread gains nothing on a small input (portraits scaled down: 225 vs 231 photos/s on 2 idle cores)
    # and its OpenMP spin-waits cost 5x while another job holds the cores; full scenes gain about 10% from it
    _yunet_threads(1 if small.shape[0] * small.shape[1] < YUNET_ONE_THREAD_PIXELS else 0)
    # one row per face: score (0..100), x, y, w, h, five (x, y) landmarks, and a last column maskage does not use
    found = np.asarray(_yu.detect(np.ascontiguousarray(small[:, :, ::-1])), dtype=np.float64).reshape(-1, 16)
    out = []
    for row in found:
        score, (x, y, bw, bh), marks = row[0] / 100.0, row[1:5] / scale, row[5:15].reshape(5, 2) / scale
        if score < threshold or min(bw, bh) < min_face:
            continue
        box = (max(0.0, float(x)), max(0.0, float(y)), min(float(w), float(x + bw)), min(float(h), float(y + bh)))
        out.append(Detection(box, float(score), tuple((float(px), float(py)) for px, py in marks)))
    return sorted(out, key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))


@functools.lru_cache(maxsize=1)
def _yunet_gomp() -> ctypes.CDLL | None:
    """The OpenMP runtime bundled with yuface (its wheel's ``yuface.libs``), already loaded by its import; None when
    this build has none."""
    import yuface

    found = sorted(Path(yuface.__file__).parent.parent.glob("yuface.libs/libgomp*.so*"))
    return ctypes.CDLL(str(found[0])) if found else None


def _yunet_threads(n: int) -> None:
    """YuNet's OpenMP threads for the calls this thread makes next: n, or 0 for the runtime's default (one a core)."""
    gomp = _yunet_gomp()
    if gomp is not None:
        gomp.omp_set_num_threads(n or _cores())


def _cores() -> int:
    """The cores this process may use: ``MASKAGE_THREADS`` when set (a container's or a Ray actor's share of a
    machine), else the cores it may run on (all of them where the platform cannot say)."""
    limit = os.environ.get("MASKAGE_THREADS", "").strip()
    if limit:
        if not limit.isdigit() or int(limit) < 1:
            raise UsageError(f"MASKAGE_THREADS must be a whole number >= 1, got {limit!r}")
        return int(limit)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def box_iou(a: Box | None, b: Box | None) -> float:
    """Intersection over union of two boxes; 0 when either is missing."""
    if a is None or b is None:
        return 0.0
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def crop_face(image: np.ndarray, box: Box | None, settings: CropSettings = CropSettings()) -> np.ndarray:
    """A square ``crop_size`` crop around the face box plus margin, or around the image centre when box is None.

    Parts of the square outside the photo are filled by replicating its border.
    """
    if box is not None and settings.frame:
        image, box = _framed(image, box, settings.frame, settings.frame_shift)
    h, w = image.shape[:2]
    if box is None:
        side = settings.fallback_fraction * min(h, w)
        cx, cy = w / 2.0, h / 2.0
    else:
        x1, y1, x2, y2 = box
        side = max(x2 - x1, y2 - y1) * (1.0 + 2.0 * settings.margin)
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0 + settings.shift * max(x2 - x1, y2 - y1)
    side = max(side, 2.0)
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    size = int(round(side))
    # the part inside the photo, its border replicated where the square reaches out (padding this part, not the
    # whole photo: the same pixels for a fraction of the copying)
    (y0, y1, *pad_y), (x0, x1, *pad_x) = _span(top, size, h), _span(left, size, w)
    crop = image[y0:y1, x0:x1]
    if any(pad_y) or any(pad_x):
        crop = cv2.copyMakeBorder(crop, *pad_y, *pad_x, cv2.BORDER_REPLICATE)
    interp = cv2.INTER_AREA if size > settings.crop_size else cv2.INTER_LINEAR
    return cv2.resize(crop, (settings.crop_size, settings.crop_size), interpolation=interp)


def crop_faces(images: Sequence[np.ndarray], boxes: Sequence[Box | None], settings: CropSettings = CropSettings(),
               workers: int | None = None) -> np.ndarray:
    """``crop_face`` of each photo and box, stacked (N x S x S x 3), on ``workers`` threads (default: one a core):
    OpenCV resizes outside Python's lock, so the photos' crops are made side by side (numpy's normalisation after
    it is not worth splitting: two threads ran it slower than one)."""
    n = len(images)
    workers = min(workers or _cores(), n)
    if workers <= 1:
        return np.stack([crop_face(a, b, settings) for a, b in zip(images, boxes)])
    bounds = np.linspace(0, n, workers + 1).astype(int)
    parts = _crop_pool(workers).map(
        lambda i: [crop_face(images[k], boxes[k], settings) for k in range(bounds[i], bounds[i + 1])], range(workers))
    return np.stack([c for part in parts for c in part])


@functools.lru_cache(maxsize=4)
def _crop_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="maskage-crop")


def _span(start: int, size: int, limit: int) -> tuple[int, int, int, int]:
    """Along one axis of a photo ``limit`` pixels long, a square's side from ``start`` (``size`` long): the part
    inside the photo (at least its edge pixel) and the padding before and after it that makes ``size``."""
    a = min(max(start, 0), limit - 1)
    b = max(min(start + size, limit), a + 1)
    before = min(max(-start, 0), size - (b - a))
    return a, b, before, size - (b - a) - before


def _framed(image: np.ndarray, box: Box, frame: float, shift: float) -> tuple[np.ndarray, Box]:
    """The part of the photo inside the frame square (see ``CropSettings.frame``), and the box in its coordinates."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1)
    half = frame * side / 2.0
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0 + shift * side
    h, w = image.shape[:2]
    left, top = min(max(int(round(cx - half)), 0), w - 1), min(max(int(round(cy - half)), 0), h - 1)
    right, bottom = max(min(int(round(cx + half)), w), left + 1), max(min(int(round(cy + half)), h), top + 1)
    return image[top:bottom, left:right], (x1 - left, y1 - top, x2 - left, y2 - top)


HINT_IOU = 0.3  # a detection this close to a labelled box is that face (training crops, scene scores alike)


def pick_face(dets: Sequence[Detection], hint: Box | None) -> Box | None:
    """The largest face, or with a labelled box the detection that best overlaps it, else the labelled box."""
    if hint is None:
        return dets[0].box if dets else None
    best = max(dets, key=lambda d: box_iou(d.box, hint), default=None)
    return best.box if best is not None and box_iou(best.box, hint) >= HINT_IOU else tuple(map(float, hint))


