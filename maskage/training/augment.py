"""Training-time augmentation of face crops: geometry and colour jitter, photo degradations, occluders, CLAHE, and
MixUp/CutMix of a batch."""
from __future__ import annotations

import numpy as np
import torch


class TrainAugment:
    """Random scale/shift crop, horizontal flip, brightness/contrast jitter and CLAHE on a uint8 crop."""

    def __init__(self, hflip: bool = True, color_jitter: float = 0.2, scale_jitter: float = 0.1, seed: int = 0,
                 clahe: float = 0.0, photo: float = 0.0, photo_min_scale: float = 0.25) -> None:
        """``clahe``: the probability of contrast-limited adaptive histogram equalisation of the lightness.
        ``photo``: the probability of each of the photo degradations (``degrade``): lower resolution, blur,
        JPEG, a small rotation, an occluding patch; ``photo_min_scale``: the lowest resolution, as a share of the side."""
        self.hflip, self.color_jitter, self.scale_jitter, self.clahe = hflip, color_jitter, scale_jitter, clahe
        self.photo, self.photo_min_scale = photo, photo_min_scale
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._worker_seeded = False

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        info = torch.utils.data.get_worker_info()
        if info is not None and not self._worker_seeded:
            # DataLoader workers start from copies of this object: without a reseed every worker, and every
            # epoch, would draw the same augmentations. torch's worker seed differs per worker and per epoch.
            self.rng = np.random.default_rng([self.seed, info.seed])
            self._worker_seeded = True
        out = crop
        s = crop.shape[0]
        if self.scale_jitter > 0:
            side = int(round(s * (1 - self.rng.uniform(0, self.scale_jitter))))
            x0 = int(self.rng.integers(0, s - side + 1))
            y0 = int(self.rng.integers(0, s - side + 1))
            out = out[y0 : y0 + side, x0 : x0 + side]
        if self.hflip and self.rng.random() < 0.5:
            out = out[:, ::-1]
        if self.color_jitter > 0:
            a = 1 + self.rng.uniform(-self.color_jitter, self.color_jitter)  # contrast
            b = 255 * self.rng.uniform(-self.color_jitter, self.color_jitter) / 2  # brightness
            mean = out.mean()
            out = np.clip((out.astype(np.float32) - mean) * a + mean + b, 0, 255).astype(np.uint8)
        if self.clahe > 0 and self.rng.random() < self.clahe:
            out = clahe(out)
        if self.photo > 0:
            out = degrade(out, self.rng, self.photo, self.photo_min_scale)
        return np.ascontiguousarray(out)


def degrade(crop: np.ndarray, rng: np.random.Generator, p: float, min_scale: float = 0.25) -> np.ndarray:
    """Each with probability ``p``: a small rotation (up to 12 degrees), a lower resolution (down to ``min_scale``
    of the side, scaled back up), a Gaussian blur, JPEG at quality 30..90, and a grey or noise patch over up to a third
    of the side, so that models trained on clean crops meet the photos they will be given."""
    import cv2

    out = np.ascontiguousarray(crop)
    s = out.shape[0]
    if rng.random() < p:
        m = cv2.getRotationMatrix2D((s / 2, s / 2), float(rng.uniform(-12, 12)), 1.0)
        out = cv2.warpAffine(out, m, (s, s), borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < p:
        small = max(8, int(round(s * rng.uniform(min(min_scale, 0.8), 0.8))))
        out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (s, s),
                         interpolation=cv2.INTER_LINEAR)
    if rng.random() < p:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.5, 1.8)))
    if rng.random() < p:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 91))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if rng.random() < p:
        h, w = (int(s * rng.uniform(0.1, 0.33)) for _ in range(2))
        y, x = int(rng.integers(0, s - h + 1)), int(rng.integers(0, s - w + 1))
        out = out.copy()
        out[y : y + h, x : x + w] = (rng.integers(0, 256, (h, w, 3)) if rng.random() < 0.5
                                     else int(rng.integers(0, 256)))
    return out


def paste_occluder(crop: np.ndarray, other: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Something in front of the lower face: an elliptical piece of ``other`` (another bare face's crop: skin as a
    hand's, hair as another head's, background as a phone's) over the mouth and chin, with a soft edge. Real scenes'
    bare faces behind a hand or a head were called masked; pasted on bare crops, it teaches that a covered mouth is
    not yet a mask."""
    import cv2

    s = crop.shape[0]
    h, w = int(s * rng.uniform(0.25, 0.5)), int(s * rng.uniform(0.3, 0.65))
    sy, sx = int(rng.integers(0, other.shape[0] - h + 1)), int(rng.integers(0, other.shape[1] - w + 1))
    piece = other[sy : sy + h, sx : sx + w].astype(np.float32)
    # the crop is the face's box plus 20% a side: the mouth sits near 0.68 of its height
    y0 = int(np.clip(s * rng.uniform(0.6, 0.85) - h / 2, 0, s - h))
    x0 = int(np.clip(s * rng.uniform(0.25, 0.75) - w / 2, 0, s - w))
    yy, xx = np.mgrid[:h, :w]
    alpha = ((((yy + 0.5) / h - 0.5) / 0.5) ** 2 + (((xx + 0.5) / w - 0.5) / 0.5) ** 2 <= 1).astype(np.float32)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, s / 80))[..., None]
    out = crop.copy()
    region = out[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    out[y0 : y0 + h, x0 : x0 + w] = np.clip(alpha * piece + (1 - alpha) * region + 0.5, 0, 255).astype(np.uint8)
    return out


def clahe(crop: np.ndarray, clip_limit: float = 2.0, grid: int = 8) -> np.ndarray:
    """CLAHE on the L channel of an RGB uint8 image (colours kept), as the competition's teams applied it."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(grid, grid)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def mix_batch(x: torch.Tensor, y: torch.Tensor, mixup_alpha: float, cutmix_alpha: float,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """MixUp or CutMix of a batch with a shuffled copy of itself: ``(x, y, y_other, lam)``, the loss being
    ``lam * loss(out, y) + (1 - lam) * loss(out, y_other)``. With both alphas set, each batch takes one of the two
    at random (as timm's Mixup). CutMix pastes a box of the other images; ``lam`` is then the share of each image
    left unpasted, so the labels mix exactly by area."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return x, y, y, 1.0
    r = torch.rand(3, generator=generator)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or bool(r[0] < 0.5))
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=generator)
    if not use_cutmix:
        return lam * x + (1 - lam) * x[perm], y, y[perm], lam
    h, w = x.shape[-2:]
    cut_h, cut_w = int(round(h * (1 - lam) ** 0.5)), int(round(w * (1 - lam) ** 0.5))
    cy, cx = int(r[1] * h), int(r[2] * w)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + (cut_h - cut_h // 2), h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + (cut_w - cut_w // 2), w)
    out = x.clone()
    out[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the box as clipped at the border
    return out, y, y[perm], lam
