"""Drawing masks on real face photos, and building a competition-style dataset from unmasked faces.

A mask is drawn in image space from MTCNN's five landmarks (eyes, nose tip, mouth corners): the face's own
axes (across the eyes, and from the eyes down to the mouth) place a mask whose outline, colour, texture,
shading and straps are drawn at random, so a model cannot learn one template. Every draw is determined by
its seed.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from ..atomic import write_csv_atomic
from ..errors import MaskageError, UsageError
from ..images import IMAGE_EXTENSIONS, ImageError, load_image
from ..labels import MASK_FILE_STEMS, age_to_group, encode
from ..progress import bar
from .sources import FaceRecord, held_out, read_sources

# How a mask sits on the face. The competition's "incorrect" class is mostly nose exposed, some under the chin.
CORRECT, NOSE_EXPOSED, UNDER_CHIN = "correct", "nose_exposed", "under_chin"
KINDS = (CORRECT, NOSE_EXPOSED, UNDER_CHIN)
INCORRECT_KINDS = {NOSE_EXPOSED: 0.7, UNDER_CHIN: 0.3}
RACES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Other"}
GENDERS = {0: "male", 1: "female"}

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
    nose_t = face.t_of(face.nose)
    if kind == CORRECT:
        top = min(rng.uniform(0.36, 0.46), nose_t - 0.15)  # over the nose bridge, clear of the eyes
        bottom = rng.uniform(1.85, 2.05)  # below the chin
    elif kind == NOSE_EXPOSED:
        # as real masks slip: the top edge from the nostrils (just under the nose tip) to above the upper lip,
        # the nostrils' band the likeliest (issue 16: drawn masks always well under the nose were not caught real)
        top = min(nose_t + rng.triangular(0.04, 0.08, 0.2), 0.85)
        bottom = rng.uniform(1.85, 2.05)
    elif kind == UNDER_CHIN:
        top = 1.0 + rng.uniform(0.3, 0.42)  # below the lower lip
        bottom = rng.uniform(2.15, 2.35)
    else:
        raise UsageError(f"unknown mask kind {kind!r}; choose from {KINDS}")
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
    # real masks pulled down (issue 16's scene grids) sit from just under the lip to the chin itself, as wide as the
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
    elif style == "surgical":  # pleats: darker horizontal folds
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
    for corner, side, t in ((poly[0], -1, ear_t), (poly[20], 1, ear_t), (poly[22], 1, neck_t), (poly[42], -1, neck_t)):
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


# ------------------------------------------------------------------------------------------------ dataset builder

_UTK = re.compile(r"^(\d+)_([01])_(\d)_")


def parse_utkface_name(name: str) -> FaceRecord | None:
    """Labels from a UTKFace file name ``AGE_GENDER_RACE_*.jpg``; None when the name does not follow it."""
    m = _UTK.match(Path(name).name)
    if not m:
        return None
    return FaceRecord(name, int(m.group(1)), int(m.group(2)), int(m.group(3)))


def read_faces(faces_dir: str | Path, labels_csv: str | Path | None = None) -> tuple[list[FaceRecord], list[str]]:
    """The face photos of a folder with their labels, and the names that could not be labelled.

    Labels come from UTKFace-style names, or from a CSV with columns ``path,age,gender[,race]`` (path relative
    to the folder; gender 0/1 or male/female; race a number as UTKFace's or empty).
    """
    from ..tables import read_csv_rows
    from ..labels import gender_from_text

    root = Path(faces_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"faces folder {root} not found")
    unlabelled: list[str] = []
    records: list[FaceRecord] = []
    if labels_csv:
        for line, row in enumerate(read_csv_rows(Path(labels_csv), ["path", "age", "gender"]), start=2):
            try:
                race = row.get("race", "").strip()
                records.append(FaceRecord(str(root / row["path"].strip()), int(float(row["age"])),
                                          gender_from_text(row["gender"]), int(race) if race else None))
            except ValueError as exc:
                raise UsageError(f"{labels_csv} line {line}: {exc}") from None
        return records, unlabelled
    for p in sorted(root.iterdir()):
        if p.name.startswith(".") or p.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        rec = parse_utkface_name(p.name)
        if rec is None:
            unlabelled.append(p.name)
        else:
            records.append(FaceRecord(str(p), rec.age, rec.gender, rec.race))
    return records, unlabelled


SCENE_SIZE = (384, 512)  # (width, height) of the competition's photos
SCENE_SIDES = (150, 320)  # side in pixels the face photo is resized to in a scene
SCENE_KINDS = ("plain", "gradient", "blotches", "noise")


def in_scene(images: Sequence[np.ndarray], rng: np.random.Generator, size: tuple[int, int] = SCENE_SIZE,
             sides: tuple[int, int] = SCENE_SIDES) -> tuple[list[np.ndarray], str]:
    """Square face photos of one size (one person's photos) resized to a random side in ``sides`` and pasted at
    one random place on one ``size`` (width, height) background of a random kind (``SCENE_KINDS``): the
    competition's framing, where a face crop's margin shows background instead of UTKFace's repeated border.
    Returns a scene per photo and the background's kind."""
    width, height = size
    if not 0 < sides[0] <= sides[1] <= min(width, height):
        raise UsageError(f"face sides {sides} must be positive and fit in a {width}x{height} scene")
    kind = SCENE_KINDS[int(rng.integers(len(SCENE_KINDS)))]
    a, b = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    if kind == "plain":
        bg = np.broadcast_to(a, (height, width, 3)).astype(np.float32)
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        t = xx / width * np.cos(angle) + yy / height * np.sin(angle)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        bg = a + (b - a) * t[..., None]
    elif kind == "blotches":  # a smooth random colour field: walls, curtains, out-of-focus rooms
        coarse = rng.uniform(20, 235, (int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)).astype(np.float32)
        bg = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    else:
        bg = np.broadcast_to(a, (height, width, 3)) + rng.normal(0, rng.uniform(5, 25), (height, width, 1))
    background = np.clip(bg, 0, 255).astype(np.uint8)
    side = int(rng.integers(sides[0], sides[1] + 1))
    x, y = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    scenes = []
    for image in images:
        scene = background.copy()
        scene[y : y + side, x : x + side] = cv2.resize(
            image, (side, side), interpolation=cv2.INTER_AREA if side < image.shape[0] else cv2.INTER_LINEAR)
        scenes.append(scene)
    return scenes, kind


def _person_seed(seed: int, path: str) -> int:
    return int.from_bytes(hashlib.sha1(f"{seed}:{Path(path).name}".encode()).digest()[:8], "little")


@dataclass
class BuildReport:
    out: Path
    n_train_people: int
    n_eval_people: int
    skipped: list[tuple[str, str]]  # (photo, why)
    unlabelled: list[str]


def _records(faces_dir: str | Path | Sequence[str], labels_csv: str | Path | None, races: Sequence[int] | None,
             min_age: int, max_age: int, limit: int) -> tuple[list[FaceRecord], list[str]]:
    """The labelled faces a build uses (a folder, or ``NAME=DIR`` sources; unknown ages kept for sources) and the
    names that carry no labels."""
    sourced = not isinstance(faces_dir, (str, Path))
    if sourced:
        records, unlabelled = read_sources(faces_dir)
    else:
        records, unlabelled = read_faces(faces_dir, labels_csv)
    records = [r for r in records if (min_age <= r.age <= max_age or (sourced and r.age < 0))
               and (not races or r.race in races)]
    records = records[:limit] if limit else records
    if not records:
        raise UsageError(f"no faces in {faces_dir} pass the filters (races={races}, ages {min_age}..{max_age})")
    return records, unlabelled


def _person_photos(img: np.ndarray, det, stems: Sequence[str], pseed: int, chin_share: float,
                   textures: Sequence[np.ndarray] | None = None,
                   texture_share: float = 0.5, chin_low: float = 0.0) -> tuple[dict[str, np.ndarray], str]:
    """One person's photos by stem (five correct masks, the incorrect one, the bare photo) and how the incorrect
    mask is worn. Each mask has its own seed, so photos left out of ``stems`` change none of the others."""
    drawn: dict[str, np.ndarray] = {}
    for j in range(1, 6):
        if f"mask{j}" in stems:
            drawn[f"mask{j}"] = draw_mask(img, det.landmarks, det.box, CORRECT, pseed + j, textures, texture_share).image
    kind = NOSE_EXPOSED if np.random.default_rng(pseed).random() < 1.0 - chin_share else UNDER_CHIN
    if "incorrect_mask" in stems:
        drawn["incorrect_mask"] = draw_mask(img, det.landmarks, det.box, kind, pseed + 6, textures, texture_share,
                                             chin_low).image
    drawn["normal"] = img
    return drawn, kind


def _race_name(r: FaceRecord) -> str:
    return RACES.get(r.race, "Unknown") if r.race is not None else "Unknown"


def _write_eval_person(images: Path, r: FaceRecord, pid: str, drawn: dict[str, np.ndarray], stems: Sequence[str],
                       kind: str, seed: int, extra: list) -> list[list]:
    """An eval person's photos under hashed names (nothing in a name tells its label); their meta.csv rows."""
    rows = []
    for stem in stems:
        name = hashlib.sha1(f"{seed}:{pid}:{stem}".encode()).hexdigest()[:20] + ".jpg"
        Image.fromarray(drawn[stem]).save(images / name, quality=95)
        mask = MASK_FILE_STEMS[stem]
        rows.append([name, encode(mask, r.gender, age_to_group(r.age)), pid, int(mask), r.gender, r.age, _race_name(r),
                     kind if stem == "incorrect_mask" else "", Path(r.path).name] + extra)
    return rows


def _write_train_person(images: Path, r: FaceRecord, pid: str, drawn: dict[str, np.ndarray], stems: Sequence[str],
                        kind: str, scene: str) -> list:
    """A training person's folder of photos named by stem (the competition layout); their train.csv row's start."""
    folder = f"{pid}_{GENDERS[r.gender]}_{_race_name(r)}_{r.age}"
    (images / folder).mkdir(exist_ok=True)
    for stem in stems:
        Image.fromarray(drawn[stem]).save(images / folder / f"{stem}.jpg", quality=95)
    return [pid, GENDERS[r.gender], _race_name(r), r.age, folder, kind, Path(r.path).name, scene]


def build_dataset(  # long: checks, then one pass over the people; steps kept in reading order
    faces_dir: str | Path | Sequence[str],
    out: str | Path,
    eval_fraction: float = 0.2,
    seed: int = 0,
    races: Sequence[int] | None = None,
    eval_races: Sequence[int] | None = None,
    min_age: int = 18,
    max_age: int = 200,
    labels_csv: str | Path | None = None,
    limit: int = 0,
    train_scenes: float = 0.0,
    progress: bool = True,
    photos: Sequence[str] | None = None,
    chin_share: float = INCORRECT_KINDS[UNDER_CHIN],
    textures: Sequence[np.ndarray] | None = None,
    texture_share: float = 0.5,
    chin_low: float = 0.0,
) -> BuildReport:
    """Write a competition-style dataset: ``out/train`` (train.csv, images/PERSON/{mask1..5,incorrect_mask,normal})
    and ``out/eval`` (images/, info.csv, gt.csv and meta.csv with each eval photo's person and labels).

    Each face photo becomes one person: five differently drawn correct masks, one incorrect mask (nose exposed or
    under the chin), and the photo itself unmasked. People go to eval with probability ``eval_fraction`` (only
    people of ``eval_races`` when given), decided per person by the seed. Faces without landmarks are listed in
    ``out/skipped.csv`` and left out.

    ``train_scenes``: the share of training people whose seven photos are pasted into a competition-sized scene
    (``in_scene``), so that models learn both UTKFace's tight framing and a face with background around it. Eval
    people keep the faces' own framing, so eval scores compare across builds. 0 (the default) writes the same
    photos as before the option existed.

    ``faces_dir`` may instead be a list of ``NAME=DIR`` sources (``maskage.sources``: utkface, aaf, lfw). Then each
    record keeps its source and person (train.csv's ``dataset`` and ``person`` columns, meta.csv's ``dataset`` and
    ``source_person``), ages may be unknown (-1, kept whatever ``min_age``), and a person goes to eval by a fixed hash
    of their key (``sources.held_out``), so builds with fewer sources hold out the same people.
    ``photos``: the subset of the seven photo names to write per person (train.csv's ``photos`` column lists them).
    gt.csv's class of a person of unknown age uses the <30 group; meta.csv keeps the age as -1.
    ``chin_share``: the share of incorrect masks worn under the chin (the rest: nose exposed).
    ``textures`` (``real_textures``): real mask fabrics, used for ``texture_share`` of the masks (``draw_mask``).
    ``chin_low``: the share of masks under the chin drawn pulled down further and crumpled (``draw_mask``).
    """
    from ..detect.faces import DetectorSettings, FaceDetector

    if not 0.0 <= eval_fraction < 1.0:
        raise UsageError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    for name, share in (("chin_share", chin_share), ("texture_share", texture_share), ("chin_low", chin_low),
                        ("train_scenes", train_scenes)):
        if not 0.0 <= share <= 1.0:
            raise UsageError(f"{name} must be in [0, 1], got {share}")
    sourced = not isinstance(faces_dir, (str, Path))
    records, unlabelled = _records(faces_dir, labels_csv, races, min_age, max_age, limit)
    stems = list(MASK_FILE_STEMS) if photos is None else [s for s in MASK_FILE_STEMS if s in set(photos)]
    if photos is not None and (not stems or len(stems) != len(set(photos))):
        raise UsageError(f"photos must name some of {', '.join(MASK_FILE_STEMS)}; got {list(photos)}")
    out = Path(out)
    for sub in ("train/images", "eval/images"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    split = rng.random(len(records))
    detector = FaceDetector(DetectorSettings(min_face_size=20, batch_size=32))
    train_rows, eval_rows, skipped = [], [], []
    chunk = 128
    drawing = bar(total=len(records), desc="drawing masks", enabled=progress)
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]
        images, ok = [], []
        for index, r in enumerate(part, start=start):
            try:
                images.append(load_image(r.path))
                ok.append((index, r))
            except ImageError as exc:
                skipped.append((r.path, str(exc)))
        for (index, r), img, det in zip(ok, images, detector.detect(images)):
            if det.landmarks is None:
                skipped.append((r.path, "no face landmarks found"))
                continue
            pseed = _person_seed(seed, r.path)
            pid = f"{index:06d}"
            in_eval = held_out(r.person, eval_fraction) if sourced else split[index] < eval_fraction
            to_eval = in_eval and (not eval_races or r.race in eval_races)
            drawn, kind = _person_photos(img, det, stems, pseed, chin_share, textures, texture_share, chin_low)
            extra = [r.source, r.person] if sourced else []
            if to_eval:
                eval_rows += _write_eval_person(out / "eval" / "images", r, pid, drawn, stems, kind, seed, extra)
            else:
                # its own stream, so that the option leaves the masks and the split as they were
                srng = np.random.default_rng([pseed, 1])
                scene = ""
                if train_scenes and srng.random() < train_scenes:  # one placement and background for all seven
                    scenes, scene = in_scene([drawn[stem] for stem in stems], srng)
                    drawn = dict(zip(stems, scenes))
                train_rows.append(_write_train_person(out / "train" / "images", r, pid, drawn, stems, kind, scene)
                                  + extra + ([";".join(stems)] if photos else []))
        drawing.update(len(part))
    drawing.close()
    _write_build_csvs(out, train_rows, eval_rows, skipped, sourced, bool(photos), seed)
    return BuildReport(out, len(train_rows), len(eval_rows) // len(stems), skipped, unlabelled)


def _write_build_csvs(out: Path, train_rows: list, eval_rows: list, skipped: list, sourced: bool, photos: bool,
                      seed: int) -> None:
    """A build's CSVs: train.csv, the eval split's info.csv / gt.csv / meta.csv (its photos in a seeded order, so
    that neighbouring IDs are not one person's), and skipped.csv."""
    write_csv_atomic(out / "train" / "train.csv", ["id", "gender", "race", "age", "path", "incorrect_kind", "source", "scene"]
                     + (["dataset", "person"] if sourced else []) + (["photos"] if photos else []), train_rows)
    order = np.random.default_rng(seed + 1).permutation(len(eval_rows))
    eval_rows = [eval_rows[i] for i in order]
    write_csv_atomic(out / "eval" / "info.csv", ["ImageID", "ans"], ([r[0], 0] for r in eval_rows))
    write_csv_atomic(out / "eval" / "gt.csv", ["ImageID", "ans"], ([r[0], r[1]] for r in eval_rows))
    write_csv_atomic(out / "eval" / "meta.csv",
                     ["ImageID", "ans", "person", "mask", "gender", "age", "race", "incorrect_kind", "source"]
                     + (["dataset", "source_person"] if sourced else []), eval_rows)
    write_csv_atomic(out / "skipped.csv", ["photo", "why"], skipped)
