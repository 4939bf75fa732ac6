"""Drawing masks on real face photos.

A mask is drawn in image space from MTCNN's five landmarks (eyes, nose tip, mouth corners): the face's own
axes (across the eyes, and from the eyes down to the mouth) place a mask whose outline, colour, texture,
shading and straps are drawn at random, so a model cannot learn one template. Every draw is determined by
its seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import MaskageError, UsageError
from ..images import ImageError, load_image
from ..labels import NOSE_EXPOSED, ONE_EAR, UNDER_CHIN
from ..progress import bar

# How a mask sits on the face. The competition's "incorrect" class is mostly nose exposed, some under the chin;
# real photos also show masks hanging from one ear (ONE_EAR: drawn on request, not among the demo's KINDS).
CORRECT = "correct"  # the others: labels.NOSE_EXPOSED, UNDER_CHIN and ONE_EAR

KINDS = (CORRECT, NOSE_EXPOSED, UNDER_CHIN)
ALL_KINDS = KINDS + (ONE_EAR,)
INCORRECT_KINDS = {NOSE_EXPOSED: 0.7, UNDER_CHIN: 0.3}


# (r, g, b) base colours of common masks: surgical blue, white, black, greys, navy, pink, beige, green
PALETTE = [
    (140, 190, 220), (120, 175, 215), (235, 235, 235), (250, 250, 245), (30, 30, 32), (60, 60, 65), (130, 130, 135),
    (35, 45, 85), (230, 170, 185), (215, 195, 165), (90, 140, 110), (175, 205, 190),
]
STYLES = ("surgical", "kn95", "cloth")


class SynthError(MaskageError, ValueError):
    """A face on which no mask can be drawn (no landmarks found)."""


@dataclass(frozen=True)
class FaceGeometry:
    """A face's landmarks and the axes derived from them, in image pixels.

    ``t`` runs from the eye midpoint (0) to the mouth midpoint (1) along the face's vertical axis ``down``;
    ``across`` is the unit vector from the left eye to the right eye.
    """

    left_eye: np.ndarray
    right_eye: np.ndarray
    nose: np.ndarray
    mouth_left: np.ndarray
    mouth_right: np.ndarray
    box: tuple[float, float, float, float]

    @classmethod
    def from_landmarks(cls, landmarks: Sequence[Sequence[float]], box: Sequence[float]) -> "FaceGeometry":
        pts = [np.asarray(p, dtype=np.float64) for p in landmarks]
        if len(pts) != 5:
            raise SynthError(f"expected 5 landmarks, got {len(pts)}")
        return cls(*pts, box=tuple(float(v) for v in box))  # type: ignore[arg-type]

    @property
    def eye_mid(self) -> np.ndarray:
        return (self.left_eye + self.right_eye) / 2

    @property
    def mouth_mid(self) -> np.ndarray:
        return (self.mouth_left + self.mouth_right) / 2

    @property
    def unit(self) -> float:
        """Eye-to-mouth distance: the length unit of ``t``."""
        return float(max(np.linalg.norm(self.mouth_mid - self.eye_mid), 1.0))

    @property
    def down(self) -> np.ndarray:
        return (self.mouth_mid - self.eye_mid) / self.unit

    @property
    def across(self) -> np.ndarray:
        a = self.right_eye - self.left_eye
        n = np.linalg.norm(a)
        if n < 1e-6:
            return np.array([-self.down[1], self.down[0]])
        return a / n

    @property
    def half_width(self) -> float:
        """Half the face's width at the cheeks."""
        eyes = float(np.linalg.norm(self.right_eye - self.left_eye))
        return max(0.9 * eyes, 0.38 * (self.box[2] - self.box[0]), 0.5 * self.unit)

    def point(self, s: float, t: float) -> np.ndarray:
        """Image point at ``s`` half-widths across and ``t`` units down from the eye midpoint."""
        return self.eye_mid + self.across * s * self.half_width + self.down * t * self.unit

    def t_of(self, p: np.ndarray) -> float:
        return float(np.dot(p - self.eye_mid, self.down) / self.unit)

    @property
    def chin(self) -> np.ndarray:
        """Estimated chin point: the mouth-to-chin distance is about 0.75 of eye-to-mouth on adult faces."""
        return self.point(0.0, 1.75)


@dataclass
class DrawnMask:
    """A photo with a mask drawn on it, the mask's coverage (0..1 per pixel) and how it was worn."""

    image: np.ndarray  # H x W x 3 uint8
    alpha: np.ndarray  # H x W float32
    kind: str
    style: str


def _outline(face: FaceGeometry, kind: str, rng: np.random.Generator, style: str, low: bool = False) -> np.ndarray:
    """The mask polygon in image pixels for a kind of wear. ``low`` (``draw_mask`` sets it for masks under the chin
    only): the mask pulled down as real ones are, its top edge anywhere from under the lower lip to the chin, hanging
    wide over the neck, its top edge crumpled."""
    if low:
        return _low_chin_outline(face, rng)
    if kind == ONE_EAR:
        return _one_ear_outline(face, rng)
    nose_t = face.t_of(face.nose)
    if kind == CORRECT:
        top = min(rng.uniform(0.36, 0.46), nose_t - 0.15)  # over the nose bridge, clear of the eyes
        bottom = rng.uniform(1.85, 2.05)  # below the chin
    elif kind == NOSE_EXPOSED:
        # as real masks slip: the top edge from the nostrils (just under the nose tip) to above the upper lip,
        # the nostrils' band the likeliest (drawn masks always well under the nose were not caught real)
        top = min(nose_t + rng.triangular(0.04, 0.08, 0.2), 0.85)
        bottom = rng.uniform(1.85, 2.05)
    elif kind == UNDER_CHIN:
        top = 1.0 + rng.uniform(0.3, 0.42)  # below the lower lip
        bottom = rng.uniform(2.15, 2.35)
    else:
        raise UsageError(f"unknown mask kind {kind!r}; choose from {ALL_KINDS}")
    w_top = rng.uniform(0.88, 1.0)
    w_mid = rng.uniform(0.92, 1.04)
    w_bot = rng.uniform(0.5, 0.7)
    peak = {"surgical": rng.uniform(0.0, 0.03), "kn95": rng.uniform(0.06, 0.1), "cloth": rng.uniform(0.03, 0.07)}[style]
    if kind == NOSE_EXPOSED:  # a shaped mask's peak must stay under the nose tip
        peak = max(0.0, min(peak, top - nose_t - 0.03))
    sag = rng.uniform(0.08, 0.16)  # the top edge drops towards the cheeks
    round_bottom = rng.uniform(0.25, 0.45)
    mid = (top + bottom) / 2 + rng.uniform(-0.1, 0.1)
    pts = []
    for s in np.linspace(-1, 1, 21):  # top edge, left to right; a peak at the nose for shaped masks
        pts.append(face.point(s * w_top, top + sag * s * s - peak * (1 - abs(s))))
    pts.append(face.point(w_mid, mid))
    for s in np.linspace(1, -1, 21):  # bottom edge, right to left, rounded around the chin
        pts.append(face.point(s * w_bot, bottom - round_bottom * s * s))
    pts.append(face.point(-w_mid, mid))
    return np.array(pts)


def _low_chin_outline(face: FaceGeometry, rng: np.random.Generator) -> np.ndarray:
    # real masks pulled down (the scene grids) sit from just under the lip to the chin itself, as wide as the
    # jaw and flatter at the bottom than a worn mask, which has no chin inside it to round over
    top = rng.triangular(1.15, 1.35, 1.55)
    bottom = top + rng.uniform(0.85, 1.1)
    w_top, w_mid, w_bot = rng.uniform(0.8, 0.95), rng.uniform(0.95, 1.1), rng.uniform(0.75, 0.95)
    sag, round_bottom = rng.uniform(0.0, 0.08), rng.uniform(0.05, 0.2)
    mid = (top + bottom) / 2 + rng.uniform(-0.1, 0.1)
    crumple = rng.normal(0, rng.uniform(0.01, 0.05), 21)
    pts = [face.point(s * w_top, top + sag * s * s + c) for s, c in zip(np.linspace(-1, 1, 21), crumple)]
    pts.append(face.point(w_mid, mid))
    pts += [face.point(s * w_bot, bottom - round_bottom * s * s) for s in np.linspace(1, -1, 21)]
    pts.append(face.point(-w_mid, mid))
    return np.array(pts)


def _one_ear_outline(face: FaceGeometry, rng: np.random.Generator) -> np.ndarray:
    # a mask off the face but for one loop: it hangs from that ear down the jaw's side to the neck, folded to about
    # half its width; the nose, mouth and chin are bare. Same point layout as the others: a top edge of 21 points
    # (inner to outer), a side point, a bottom edge of 21 (outer to inner), a side point.
    side = 1.0 if rng.random() < 0.5 else -1.0
    top = rng.uniform(0.7, 1.0)  # under the ear lobe
    bottom = top + rng.uniform(1.3, 1.8)
    s_in, s_out = rng.uniform(0.62, 0.8), rng.uniform(1.35, 1.65)
    drift = rng.uniform(-0.1, 0.15)  # the bottom swings in towards the neck or out
    crumple = rng.normal(0, rng.uniform(0.01, 0.04), 21)
    pts = [face.point(side * (s_in + a * (s_out - s_in)), top - 0.1 * a + c)
           for a, c in zip(np.linspace(0, 1, 21), crumple)]
    pts.append(face.point(side * (s_out + 0.05), (top + bottom) / 2))
    pts += [face.point(side * (s_in + drift + a * (s_out - s_in)), bottom - 0.15 * (1 - (2 * a - 1) ** 2))
            for a in np.linspace(1, 0, 21)]
    pts.append(face.point(side * (s_in - 0.03), (top + bottom) / 2))
    return np.array(pts)


def _texture(h: int, w: int, colour: np.ndarray, style: str, rng: np.random.Generator) -> np.ndarray:
    """An H x W x 3 float fabric image: base colour, noise, and a pattern for cloth masks."""
    tex = np.empty((h, w, 3), np.float32)
    tex[:] = colour
    tex += rng.normal(0, rng.uniform(2, 10), (h, w, 1)).astype(np.float32)
    if style == "cloth" and rng.random() < 0.5:
        period = rng.uniform(6, 18)
        yy, xx = np.mgrid[0:h, 0:w]
        angle = rng.uniform(0, np.pi)
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
        other = np.array(PALETTE[rng.integers(len(PALETTE))], np.float32)
        tex += (wave[..., None] > 0.3) * (other - colour) * rng.uniform(0.3, 0.8)
    return tex


# a real mask's fabric, as cut from a photo of a worn mask: the face's own coordinates, from just under the nose
# tip (t = nose + 0.1) to above the chin (t = 1.6), across +-0.9 half-widths, resampled to this many pixels (h, w)
TEXTURE_SIZE = (48, 64)


def cut_texture(image: np.ndarray, landmarks: Sequence[Sequence[float]], box: Sequence[float]) -> np.ndarray:
    """The fabric of a mask worn over nose and mouth in a real photo: the patch under the nose tip, in the face's
    own axes (so a tilted face gives an upright patch), ``TEXTURE_SIZE`` uint8 RGB."""
    face = FaceGeometry.from_landmarks(landmarks, box)
    h, w = TEXTURE_SIZE
    t0, t1 = face.t_of(face.nose) + 0.1, 1.6
    ss, tt = np.meshgrid(np.linspace(-0.9, 0.9, w), np.linspace(t0, t1, h))
    pts = face.point(ss[..., None], tt[..., None])  # H x W x 2 image points
    return cv2.remap(image, pts[..., 0].astype(np.float32), pts[..., 1].astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REFLECT)


def real_textures(folder: str | Path, holdout: float = 0.2, limit: int = 0, progress: bool = True) -> list[np.ndarray]:
    """Mask fabrics cut (``cut_texture``) from photos of people wearing masks (e.g. ``rmfd/with_mask``): only the
    people outside the held-out share that the mask task's benchmarks keep (``data.source_samples``), faces found by
    YuNet (which finds masked faces MTCNN misses). ``limit``: at most that many photos, spread over the folder."""
    from .data import source_samples
    from ..detect.faces import DetectorSettings, FaceDetector

    paths = [s.path for s in source_samples([f"{folder}=wear"], "train", holdout)]
    if limit and len(paths) > limit:
        paths = [paths[int(i * len(paths) / limit)] for i in range(limit)]
    detector = FaceDetector(DetectorSettings(portrait="yunet", min_face_size=20))
    out = []
    for path in bar(paths, desc="mask textures", enabled=progress):
        try:
            img = load_image(path)
        except ImageError:
            continue
        det = detector.detect([img])[0]
        if det.landmarks is not None and min(det.box[2] - det.box[0], det.box[3] - det.box[1]) >= 40:
            out.append(cut_texture(img, det.landmarks, det.box))
    if not out:
        raise UsageError(f"no masked face found in {folder} to take a mask texture from")
    return out


def draw_mask(  # long: one mask's geometry, shading and fabric, drawn in order
    image: np.ndarray,
    landmarks: Sequence[Sequence[float]],
    box: Sequence[float],
    kind: str = CORRECT,
    seed: int = 0,
    textures: Sequence[np.ndarray] | None = None,
    texture_share: float = 0.5,
    chin_low: float = 0.0,
) -> DrawnMask:
    """Draw one random mask of the given kind on an RGB uint8 photo, from the face's 5 MTCNN landmarks.

    ``textures`` (``real_textures``): with probability ``texture_share`` the mask's fabric is one of these real
    masks' (colour, print, folds and their shading) instead of a drawn one; the outline and placement stay drawn.
    ``chin_low``: the share of masks under the chin drawn pulled down further and crumpled (``_low_chin_outline``,
    with folds across it). Without either option the drawing is the same as before they existed."""
    low = kind == UNDER_CHIN and chin_low > 0 and np.random.default_rng([seed, 3]).random() < chin_low
    rng = np.random.default_rng(seed)
    face = FaceGeometry.from_landmarks(landmarks, box)
    style = STYLES[rng.integers(len(STYLES))]
    real = None
    if textures:
        trng = np.random.default_rng([seed, 2])  # its own stream: the drawn masks stay as they were
        if trng.random() < texture_share:
            real = textures[trng.integers(len(textures))]
            if trng.random() < 0.5:
                real = real[:, ::-1]
    h, w = image.shape[:2]
    ss = 4  # supersampled polygon for smooth edges
    poly = _outline(face, kind, rng, style, low)
    cover = np.zeros((h * ss, w * ss), np.uint8)
    cv2.fillPoly(cover, [np.round(poly * ss).astype(np.int32)], 255, lineType=cv2.LINE_AA)
    alpha = cv2.resize(cover, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    colour = np.array(PALETTE[rng.integers(len(PALETTE))], np.float32) + rng.normal(0, 8, 3).astype(np.float32)
    tex = _texture(h, w, colour, style, rng)
    # shading: the photo's own light (blurred luminance) and a darkening towards the mask's sides
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    inside = alpha > 0.5
    light = cv2.GaussianBlur(gray, (0, 0), max(face.unit * 0.25, 1.0))
    ref = float(light[inside].mean()) if inside.any() else float(light.mean())
    shade = (light / max(ref, 1.0)) ** rng.uniform(0.3, 0.8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rel = np.stack([xx, yy], -1) - face.eye_mid.astype(np.float32)
    s_coord = (rel @ face.across.astype(np.float32)) / face.half_width
    t_coord = (rel @ face.down.astype(np.float32)) / face.unit
    shade = shade * (1 - rng.uniform(0.1, 0.3) * np.clip(s_coord, -1.2, 1.2) ** 2)
    mask_t = face.t_of(poly[:21].mean(0)), face.t_of(poly[22:43].mean(0))  # the top and bottom edges' heights
    if real is not None:
        tex = _real_texture(real, poly, face, s_coord, t_coord)
        shade = shade ** 0.5  # the real fabric carries its own folds and light
    elif style == "surgical" and kind != ONE_EAR:  # pleats: darker horizontal folds (a hanging mask's run down)
        for f in np.linspace(0.3, 0.7, 3):
            t0 = mask_t[0] + f * (mask_t[1] - mask_t[0])
            shade = shade * (1 - 0.18 * np.exp(-(((t_coord - t0) * face.unit / 1.5) ** 2)))
    if low:  # a mask bunched on the chin: deeper, uneven folds across it
        for t0 in rng.uniform(mask_t[0], mask_t[1], rng.integers(2, 5)):
            width = face.unit * rng.uniform(0.02, 0.06)
            shade = shade * (1 - rng.uniform(0.15, 0.35) * np.exp(-(((t_coord - t0) * face.unit / width) ** 2)))
    tex = np.clip(tex * shade[..., None], 0, 255)

    out = image.astype(np.float32)
    out = out * (1 - alpha[..., None]) + tex * alpha[..., None]
    # straps from the mask's corners towards the ears
    base = colour if real is None else real.reshape(-1, 3).mean(0).astype(np.float32)
    strap = tuple(int(v) for v in np.clip(base * rng.uniform(0.7, 1.1), 0, 255))
    thick = max(1, int(round(face.unit * rng.uniform(0.03, 0.07))))
    out_u8 = np.clip(out, 0, 255).astype(np.uint8)
    ear_t = rng.uniform(0.1, 0.4)
    # top corners to the ears, bottom corners to the back of the neck
    neck_t = face.t_of(poly[22]) if low else 1.3  # a mask pulled down: the lower straps run level round the neck
    straps = ((poly[0], -1, ear_t), (poly[20], 1, ear_t), (poly[22], 1, neck_t), (poly[42], -1, neck_t))
    if kind == ONE_EAR:  # the one loop still on, from the mask's outer top corner up to its ear
        outer = float(np.dot(poly[20] - face.eye_mid, face.across))
        straps = ((poly[20], 1 if outer > 0 else -1, face.t_of(poly[20]) - 0.25),)
    for corner, side, t in straps:
        ear = face.point(side * rng.uniform(1.3, 1.5), t + rng.uniform(-0.05, 0.05))
        cv2.line(out_u8, tuple(int(v) for v in np.round(corner)), tuple(int(v) for v in np.round(ear)), strap, thick, cv2.LINE_AA)
    return DrawnMask(out_u8, alpha, kind, style)


def _real_texture(real: np.ndarray, poly: np.ndarray, face: FaceGeometry, s_coord: np.ndarray,
                  t_coord: np.ndarray) -> np.ndarray:
    """A real fabric patch stretched over the mask outline ``poly``, as an H x W x 3 float image."""
    ts = [face.t_of(p) for p in poly]
    t0, t1 = min(ts), max(ts)
    s_max = max(abs(float(np.dot(p - face.eye_mid, face.across) / face.half_width)) for p in poly)
    ph, pw = real.shape[:2]
    u = ((s_coord / s_max + 1) / 2 * (pw - 1)).astype(np.float32)
    v = ((t_coord - t0) / max(t1 - t0, 1e-6) * (ph - 1)).astype(np.float32)
    return cv2.remap(np.ascontiguousarray(real), u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT).astype(np.float32)


def landmark_points(face: FaceGeometry) -> dict[str, np.ndarray]:
    """Named points that each kind of wear covers or leaves bare (used by tests and the dataset report)."""
    return {
        "eyes": face.eye_mid,
        "nose": face.nose,
        "mouth": face.mouth_mid,
        "chin": face.point(0.0, 1.6),
    }
