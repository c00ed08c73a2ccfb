"""On-the-fly augmentation of RGB uint8 images with NumPy/OpenCV (backend-agnostic).

`PAPER` reproduces the paper's list (flips, +-15 deg and 90 deg rotations, scale/crop,
brightness/contrast/saturation, elastic distortion, intensity). `STAIN_ROBUST` adds hue
shifts and random grayscale so a model cannot lean on the stain colour alone, which
differs between classes in this dataset (see the dataset README). `SESSION_ROBUST` also
repaints the slide between the cells in a random light tint and covers the scale bar: within
a capture session every image shares its background and scale bar, so a model can learn the
session instead of the cell (issue 13's shortcut audit); a new patient's smear is a new session.
`SCALE_ROBUST` also zooms over a wider range: magnification differs between sessions, and in this
dataset between classes too (median red-cell diameter 17 px in Pro-B fields, 21 px in Pre-B ones).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    flip: bool = True
    rot90: bool = True
    rotate_deg: float = 15.0
    scale: tuple[float, float] = (0.85, 1.15)
    brightness: float = 0.15  # additive, fraction of full range
    contrast: float = 0.15  # multiplicative around the mean
    saturation: float = 0.2
    gamma: float = 0.15  # intensity (gamma) change
    elastic_p: float = 0.3
    elastic_alpha: float = 6.0  # displacement in pixels
    elastic_sigma: float = 5.0
    hue_shift: float = 0.0  # OpenCV hue units (0-179)
    grayscale_p: float = 0.0
    background_p: float = 0.0  # repaint the unstained slide between the cells in a random light tint
    scale_bar_p: float = 0.0  # cover the scale-bar corner with the image's own background colour

    def to_dict(self) -> dict:
        return asdict(self)


PAPER = AugmentConfig()
STAIN_ROBUST = AugmentConfig(hue_shift=12.0, saturation=0.35, grayscale_p=0.2)
SESSION_ROBUST = AugmentConfig(hue_shift=12.0, saturation=0.35, grayscale_p=0.2, background_p=0.5, scale_bar_p=0.5)
# Red-cell diameters of the sessions span about 15-23 px (a factor of 1.5), so zoom by 0.7-1.4.
SCALE_ROBUST = replace(SESSION_ROBUST, scale=(0.7, 1.4))
NONE = AugmentConfig(False, False, 0.0, (1.0, 1.0), 0.0, 0.0, 0.0, 0.0, 0.0)
PRESETS: dict[str, AugmentConfig] = {"paper": PAPER, "stain-robust": STAIN_ROBUST,
                                     "session-robust": SESSION_ROBUST, "scale-robust": SCALE_ROBUST, "none": NONE}


def augment(img: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Return a randomly augmented copy of an (H, W, 3) uint8 RGB image (same shape and dtype)."""
    h, w = img.shape[:2]
    out = img
    # In the image's own frame, before any flip or rotation moves the scale bar.
    if cfg.background_p and rng.random() < cfg.background_p:
        out = repaint_background(out, rng)
    if cfg.scale_bar_p and rng.random() < cfg.scale_bar_p:
        out = cover_scale_bar(out, rng)
    if cfg.flip:
        if rng.random() < 0.5:
            out = out[:, ::-1]
        if rng.random() < 0.5:
            out = out[::-1]
    if cfg.rot90:
        out = np.rot90(out, int(rng.integers(4)))
    out = np.ascontiguousarray(out)
    angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg) if cfg.rotate_deg else 0.0
    scale = rng.uniform(*cfg.scale)
    if angle or scale != 1.0:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        # Reflection keeps smear-like texture at the borders instead of black corners.
        out = cv2.warpAffine(out, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    if cfg.elastic_p and rng.random() < cfg.elastic_p:
        out = _elastic(out, cfg.elastic_alpha, cfg.elastic_sigma, rng)
    if cfg.hue_shift or cfg.saturation:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV).astype(np.float32)
        if cfg.hue_shift:
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-cfg.hue_shift, cfg.hue_shift)) % 180
        if cfg.saturation:
            hsv[..., 1] *= 1 + rng.uniform(-cfg.saturation, cfg.saturation)
        out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB)
    x = out.astype(np.float32) / 255.0
    if cfg.contrast:
        mean = x.mean()
        x = (x - mean) * (1 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    if cfg.brightness:
        x = x + rng.uniform(-cfg.brightness, cfg.brightness)
    x = np.clip(x, 0.0, 1.0)
    if cfg.gamma:
        x = x ** np.exp(rng.uniform(-cfg.gamma, cfg.gamma))
    if cfg.grayscale_p and rng.random() < cfg.grayscale_p:
        g = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        x = np.repeat(g[..., None], 3, axis=2)
    return (x * 255.0 + 0.5).astype(np.uint8)


def slide_mask(img: np.ndarray) -> np.ndarray:
    """Pixels of the unstained slide: outside every stained cell (red or white), one pixel of
    margin kept around the cells so their rims stay as captured."""
    from core.cells import nucleus_map

    stained = nucleus_map(img)[1].astype(np.uint8)
    return ~cv2.dilate(stained, np.ones((3, 3), np.uint8)).astype(bool)


def repaint_background(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of an RGB uint8 image with its unstained slide set to one random light, weakly
    tinted colour with a little noise (as another session's slide and lamp might look)."""
    slide = slide_mask(img)
    tint = np.array([[[rng.uniform(0, 180), rng.uniform(0, 35), rng.uniform(195, 250)]]], np.float32)
    colour = cv2.cvtColor(tint.astype(np.uint8), cv2.COLOR_HSV2RGB).reshape(3).astype(np.float32)
    noise = rng.normal(0.0, 3.0, (int(slide.sum()), 3)).astype(np.float32)
    out = img.copy()
    out[slide] = np.clip(colour + noise, 0, 255).astype(np.uint8)
    return out


def cover_scale_bar(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of an RGB uint8 image with the scale-bar corner (`core.dataset.SCALE_BAR_FROM`)
    filled with the median colour of its own slide, plus a little noise."""
    from core.dataset import scale_bar_corner

    slide = slide_mask(img)
    colour = np.median(img[slide], axis=0) if slide.sum() >= 50 else np.percentile(img.reshape(-1, 3), 90, axis=0)
    out = img.copy()
    corner = out[scale_bar_corner(img.shape)]
    corner[...] = np.clip(colour + rng.normal(0.0, 3.0, corner.shape), 0, 255).astype(np.uint8)
    return out


def _elastic(img: np.ndarray, alpha: float, sigma: float, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    dx = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma)
    dy = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma)
    # Normalise so alpha is the largest displacement in pixels, whatever sigma is.
    norm = max(np.abs(dx).max(), np.abs(dy).max(), 1e-6)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx = gx + dx / norm * alpha
    my = gy + dy / norm * alpha
    return cv2.remap(img, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def to_grayscale(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB -> the same shape with every pixel's luma in all channels."""
    g = (images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).round()
    return np.repeat(g.astype(np.uint8)[..., None], 3, axis=-1)


def colour_jitter(images: np.ndarray, seed: int = 0, hue: float = 15.0, saturation: float = 0.3) -> np.ndarray:
    """(N, H, W, 3) uint8 RGB with a random stain-like hue/saturation shift per image (seeded)."""
    cfg = AugmentConfig(False, False, 0.0, (1.0, 1.0), 0.1, 0.1, saturation, 0.0, 0.0, hue_shift=hue)
    rng = np.random.default_rng(seed)
    return np.stack([augment(im, cfg, rng) for im in images])
