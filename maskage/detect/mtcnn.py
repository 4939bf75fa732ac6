"""MTCNN without PyTorch: facenet-pytorch's three networks, exported once to ONNX and shipped in
``pretrained/mtcnn``, run by ONNX Runtime, with facenet-pytorch's box arithmetic written in numpy.

Why: importing facenet-pytorch (torch, torchvision) cost about 3.5 s of every ``maskage predict``; ONNX Runtime and
numpy are imported anyway. ``faces.FaceDetector`` is the public entry; this module is its engine. The networks and
thresholds are facenet-pytorch's (MIT), and ``tests/test_mtcnn.py`` checks the shipped files against its networks and
the detections against its ``MTCNN.detect``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..onnx_files import cpu_session, export_module

NETS_DIR = Path(__file__).resolve().parents[1] / "pretrained" / "mtcnn"
NET_NAMES = ("pnet", "rnet", "onet")
# each network's outputs, in facenet-pytorch's order: box regression, (O-Net: 5 landmarks,) face probability
OUTPUTS = {"pnet": ("reg", "prob"), "rnet": ("reg", "prob"), "onet": ("reg", "landmarks", "prob")}


class MtcnnNets:
    """The three networks on ONNX Runtime, loaded from ``directory`` (the shipped ``pretrained/mtcnn``)."""

    def __init__(self, directory: str | Path = NETS_DIR) -> None:
        self.sessions = {name: cpu_session(Path(directory) / f"{name}.onnx") for name in NET_NAMES}

    def run(self, name: str, x: np.ndarray) -> list[np.ndarray]:
        """One network's outputs (``OUTPUTS[name]``) for N x 3 x H x W inputs scaled to -1..1."""
        return self.sessions[name].run(None, {"input": x})


def export_nets(directory: str | Path) -> Path:
    """Write facenet-pytorch's P-Net, R-Net and O-Net (its bundled weights) as ONNX into ``directory``: how
    ``pretrained/mtcnn`` was made (needs torch and facenet-pytorch)."""
    import torch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for name, cls, size in (("pnet", PNet, 24), ("rnet", RNet, 24), ("onet", ONet, 48)):
        # P-Net slides over a photo of any size; R-Net and O-Net take fixed-size candidates
        axes = {0: "batch", 2: "height", 3: "width"} if name == "pnet" else {0: "batch"}
        export_module(cls(pretrained=True).eval(), torch.zeros(2, 3, size, size), d / f"{name}.onnx", OUTPUTS[name],
                      {n: axes for n in ("input", *OUTPUTS[name])})
    return d


def facenet_mtcnn(min_face_size: int, thresholds: Sequence[float], factor: float):
    """facenet-pytorch's own ``MTCNN`` (largest face first, no post-processing): the reference that tests and
    ``benchmarks/face_detection.py --compare`` hold ``detect`` against."""
    import torch
    from facenet_pytorch import MTCNN

    with torch.random.fork_rng(devices=[]):  # its layers draw random weights before its own replace them
        return MTCNN(min_face_size=min_face_size, thresholds=list(thresholds), factor=factor, post_process=False,
                     select_largest=True, keep_all=False)


def area_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Close to area resampling to ``size`` (w, h), 3-4x quicker than OpenCV's direct non-integer area resize of a
    large image: bilinear to k times the size (a reduction of less than (k+1)/k), then OpenCV's fast integer-factor
    area reduction by k."""
    w, h = size
    k = min(img.shape[0] // h, img.shape[1] // w)
    if k >= 2:
        img = cv2.resize(img, (w * k, h * k), interpolation=cv2.INTER_LINEAR)
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)


def detect(nets: MtcnnNets,  # long: MTCNN's three stages in sequence, batched
           images: np.ndarray, min_face: int, thresholds: Sequence[float],
           factor: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """MTCNN on N x H x W x 3 uint8 photos: per photo (K x 5 boxes with score, K x 5 x 2 landmarks).

    facenet-pytorch's ``detect_face`` with the same networks, thresholds and box arithmetic (float32, as there), but
    faster on a CPU: the scale pyramid and the candidate faces of the 2nd and 3rd stages are resized with OpenCV's
    area resampling on the uint8 photo (``area_resize``), where facenet-pytorch calls torch's area interpolation on
    float tensors once per candidate.
    """
    # one function on purpose: its three stages sit in the order of facenet-pytorch's detect_face, which it must
    # match box for box (tests/test_mtcnn.py), so the two read side by side
    n, h, w = images.shape[:3]
    empty = [(np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)) for _ in range(n)]
    scale, scales = 12.0 / min_face, []
    while min(h, w) * scale >= 12:
        scales.append(scale)
        scale *= factor
    if not scales:
        return empty  # photos smaller than the smallest face searched for

    # Stage 1: P-Net over the scale pyramid; levels of at most half the photo's size are made from one
    # half-size copy (an exact 2x2 area reduction), which costs a quarter of resizing the photo each time
    boxes, inds = [], []
    half = None
    for scale in scales:
        size = (int(w * scale + 1), int(h * scale + 1))
        if 2 * size[0] <= w and 2 * size[1] <= h:
            if half is None:
                half = [cv2.resize(im[: h // 2 * 2, : w // 2 * 2], (w // 2, h // 2), interpolation=cv2.INTER_AREA)
                        for im in images]
            level = [area_resize(im, size) for im in half]
        else:
            level = [area_resize(im, size) for im in images]
        reg, probs = nets.run("pnet", _net_input(level))
        b, i = _candidates(reg, probs[:, 1], scale, thresholds[0])
        pick = batched_nms(b[:, :4], b[:, 4], i, 0.5)
        boxes.append(b[pick])
        inds.append(i[pick])
    boxes, inds = np.concatenate(boxes), np.concatenate(inds)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes, inds = boxes[pick], inds[pick]
    if len(boxes) == 0:
        return empty
    regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    boxes = np.stack([boxes[:, 0] + boxes[:, 5] * regw, boxes[:, 1] + boxes[:, 6] * regh,
                      boxes[:, 2] + boxes[:, 7] * regw, boxes[:, 3] + boxes[:, 8] * regh, boxes[:, 4]], 1)
    boxes = _square(boxes)

    def cut(boxes: np.ndarray, inds: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        # the box clipped to the photo (facenet-pytorch's pad), resized to size x size; empty boxes are dropped
        y, ey, x, ex = _clip(boxes, w, h)
        keep = np.flatnonzero((ey > y - 1) & (ex > x - 1))
        patches = [area_resize(images[inds[k]][y[k] - 1 : ey[k], x[k] - 1 : ex[k]], (size, size)) for k in keep]
        return _net_input(patches), keep

    # Stage 2: R-Net on the candidates
    x, keep = cut(boxes, inds, 24)
    if len(keep) == 0:
        return empty
    boxes, inds = boxes[keep], inds[keep]
    reg, score = nets.run("rnet", x)
    keep = score[:, 1] > thresholds[1]
    boxes = np.concatenate([boxes[keep, :4], score[keep, 1:2]], 1)
    inds, reg = inds[keep], reg[keep]
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7)
    boxes, inds, reg = boxes[pick], inds[pick], reg[pick]
    if len(boxes) == 0:
        return empty
    boxes = _square(_regress(boxes, reg))

    # Stage 3: O-Net gives the final boxes and the five landmarks
    x, keep = cut(boxes, inds, 48)
    if len(keep) == 0:
        return empty
    boxes, inds = boxes[keep], inds[keep]
    reg, marks, score = nets.run("onet", x)
    keep = score[:, 1] > thresholds[2]
    boxes = np.concatenate([boxes[keep, :4], score[keep, 1:2]], 1)
    inds, reg, marks = inds[keep], reg[keep], marks[keep]
    if len(boxes) == 0:
        return empty
    bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
    bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
    points = np.stack([bw * marks[:, :5] + boxes[:, :1] - 1, bh * marks[:, 5:] + boxes[:, 1:2] - 1], 2)
    boxes = _regress(boxes, reg)
    pick = batched_nms(boxes[:, :4], boxes[:, 4], inds, 0.7, by_smaller=True)
    boxes, inds, points = boxes[pick], inds[pick], points[pick]
    return [(boxes[inds == k], points[inds == k]) for k in range(n)]


def _net_input(patches: list[np.ndarray]) -> np.ndarray:
    if not patches:
        return np.zeros((0, 3, 1, 1), np.float32)
    x = np.stack(patches).transpose(0, 3, 1, 2).astype(np.float32)
    return np.ascontiguousarray((x - np.float32(127.5)) * np.float32(0.0078125))


def _candidates(reg: np.ndarray, probs: np.ndarray, scale: float, thresh: float) -> tuple[np.ndarray, np.ndarray]:
    """P-Net's cells over the threshold as boxes in photo pixels: K x 9 (box, score, regression) and the photo
    index of each (facenet-pytorch's generateBoundingBox: stride 2, 12 px cells)."""
    img, yy, xx = np.nonzero(probs >= thresh)
    cells = np.stack([xx, yy], 1).astype(np.float32)
    q1 = np.floor((2 * cells + 1) / np.float32(scale))
    q2 = np.floor((2 * cells + 12) / np.float32(scale))
    return np.concatenate([q1, q2, probs[img, yy, xx][:, None], reg[img, :, yy, xx]], 1), img


def batched_nms(boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float,
                by_smaller: bool = False) -> np.ndarray:
    """Greedy non-maximum suppression within each group (photo), best score first; returns the kept indices.

    Default: torchvision's ``batched_nms`` (overlap = intersection over union, areas without +1). ``by_smaller``:
    facenet-pytorch's "Min" NMS of the last stage (intersection over the smaller area, pixel areas with +1)."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    # boxes of different photos are shifted apart so that they never overlap (as both libraries do)
    b = boxes + (groups.astype(boxes.dtype) * (boxes.max() + 1))[:, None]
    one = np.float32(1 if by_smaller else 0)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = (x2 - x1 + one) * (y2 - y1 + one)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
        ih = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
        inter = iw * ih
        overlap = inter / (np.minimum(area[i], area[rest]) if by_smaller else area[i] + area[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, np.int64)


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Boxes moved by the network's regression, in units of the box's pixel size (facenet-pytorch's bbreg)."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, :4] = boxes[:, :4] + reg[:, :4] * np.stack([w, h, w, h], 1)
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    """Each box made square on its longer side, about the same centre (facenet-pytorch's rerec)."""
    out = boxes.copy()
    h, w = boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2:4] = out[:, :2] + side[:, None]
    return out


def _clip(boxes: np.ndarray, w: int, h: int) -> tuple[np.ndarray, ...]:
    """Integer box edges clipped to the photo, 1-based as facenet-pytorch's pad: y, ey, x, ex."""
    b = np.trunc(boxes[:, :4]).astype(np.int32)
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    return y, ey, x, ex
