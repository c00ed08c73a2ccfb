"""Colour-threshold segmentation of stained white cells in peripheral blood smear images.

A re-implementation, in the spirit of the dataset authors' HSV segmentation, that works on any
RGB image: pixels whose hue/saturation/value fall inside an :class:`HSVRange` are kept, the mask
is cleaned with morphology, and its connected components are reported as cells.

Conventions (everything is a plain numpy array):

* RGB images are ``HxWx3`` ``uint8`` in **RGB** channel order (not OpenCV's BGR).
* Masks are ``HxW`` ``bool``.
* HSV values are in OpenCV units: H in 0..179 (degrees / 2), S and V in 0..255.

Fitting and evaluation on a dataset (``evaluate``, ``tune``) are tooling, in
:mod:`core.segmentation_tools`; this module is what the app runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from core.imageio import as_rgb_uint8

__all__ = [
    "HSVRange",
    "DEFAULT_HSV_RANGE",
    "DEFAULT_MIN_AREA",
    "REFERENCE_THRESHOLD",
    "REFERENCE_EMPTY_COVERAGE",
    "Cell",
    "Segmentation",
    "segment_hsv",
    "mask_from_reference",
    "iou",
]


# --------------------------------------------------------------------------------------------
# Ranges
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HSVRange:
    """An inclusive box in OpenCV HSV space (H 0..179, S 0..255, V 0..255).

    ``lower[0] > upper[0]`` means the hue interval wraps through red, i.e. the kept hues are
    ``lower[0]..179`` and ``0..upper[0]``; S and V never wrap.
    """

    lower: tuple[int, int, int]
    upper: tuple[int, int, int]

    def __post_init__(self) -> None:
        # Normalise to plain int tuples so numpy scalars / lists from JSON compare and hash well.
        object.__setattr__(self, "lower", tuple(int(v) for v in self.lower))
        object.__setattr__(self, "upper", tuple(int(v) for v in self.upper))
        if len(self.lower) != 3 or len(self.upper) != 3:
            raise ValueError(f"HSVRange needs 3 values per bound, got {self.lower}, {self.upper}")
        for name, lo, hi, top in (("H", self.lower[0], self.upper[0], 179),
                                  ("S", self.lower[1], self.upper[1], 255),
                                  ("V", self.lower[2], self.upper[2], 255)):
            if not (0 <= lo <= top and 0 <= hi <= top):
                raise ValueError(f"HSVRange {name} bounds must lie in 0..{top}, got {lo}..{hi}")
            if name != "H" and lo > hi:
                raise ValueError(f"HSVRange {name} lower bound {lo} exceeds upper bound {hi}")

    @property
    def wraps(self) -> bool:
        """True when the hue interval crosses 179 -> 0."""
        return self.lower[0] > self.upper[0]

    def to_dict(self) -> dict[str, list[int]]:
        return {"lower": list(self.lower), "upper": list(self.upper)}

    def in_range(self, hsv: np.ndarray) -> np.ndarray:
        """``HxW`` uint8 mask (0/255) of the pixels of an ``HxWx3`` uint8 HSV image in the box."""
        lo, hi = self.lower, self.upper
        if not self.wraps:
            return cv2.inRange(hsv, np.array(lo, np.uint8), np.array(hi, np.uint8))
        # A wrapping hue interval is the union of two ordinary boxes sharing S and V.
        a = cv2.inRange(hsv, np.array(lo, np.uint8), np.array((179, hi[1], hi[2]), np.uint8))
        b = cv2.inRange(hsv, np.array((0, lo[1], lo[2]), np.uint8), np.array(hi, np.uint8))
        return cv2.bitwise_or(a, b)


# Found by `python -m core.segmentation_tools tune --data <dataset> --limit 400 --seed 0` on the
# working copy (2,932 pairs; ~2-5 min on 2 busy cores), see tune_hsv_range. The stain sits at
# H ~ 120-133 (blue-violet); the bright background and pale red cells fail the S bound.
# No hue wrap-around is needed: read in RGB order, this violet is far from H = 0/180 (it lands
# near 0/180 only if BGR pixels are mistaken for RGB). Magenta cells on pale Pro slides
# (H ~ 135-145) are left out, as the reference leaves them out; see tune_hsv_range.
DEFAULT_HSV_RANGE = HSVRange(lower=(120, 46, 55), upper=(133, 255, 255))

# Components smaller than this (pixels) are dropped as JPEG speckle. Kept small on purpose:
# on pale, pink-stained slides the reference itself is only fragments, and larger values cost
# agreement (full working copy: min_area 20 / 30 give mean IoU -0.005 / -0.009 and 1.4 % /
# 3.3 % empty masks). A white cell at the dataset's 224x224 scale is >= ~150 px: to *count*
# cells, filter Segmentation.cells by area or pass a larger min_area.
DEFAULT_MIN_AREA = 10

# A reference (dataset "Segmented") pixel counts as foreground when its brightest channel is
# above this. The files are JPEG at quality ~95 with 4:2:0 chroma subsampling, which bleeds the
# saturated pink of kept cells 1 px into the black at levels up to ~40-80; kept pixels are
# >= ~80 even for the dimmest segment colours. On synthetic masks round-tripped that way, 50
# recovers the mask (IoU >= 0.95) where 20 fattens every object by ~1 px (IoU 0.81-0.92).
# Background noise far from cells is above 50 in only ~0.1 % of pixels.
REFERENCE_THRESHOLD = 50

# A reference mask covering less than this fraction of the image is treated as the authors'
# segmentation having failed (IoU against it would be meaningless).
REFERENCE_EMPTY_COVERAGE = 0.01


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One connected component of a segmentation mask.

    ``label`` is the component's value in :attr:`Segmentation.labels` (1-based), ``area`` its
    pixel count, ``bbox`` its bounding box ``(x, y, w, h)`` in pixels and ``centroid`` its
    centre of mass ``(x, y)`` in pixels.
    """

    label: int
    area: int
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]


@dataclass(frozen=True)
class Segmentation:
    """Output of :func:`segment_hsv`.

    ``mask``: ``HxW`` bool, True on cells. ``labels``: ``HxW`` int32, 0 for background and
    ``cell.label`` on each cell. ``overlay``: ``HxWx3`` uint8 RGB, the input with cells tinted
    and outlined. ``segmented``: ``HxWx3`` uint8 RGB, the input's cell pixels on black (the
    dataset's ``Segmented/`` style, but in the original colours). ``cells``: one :class:`Cell`
    per component, in label order.
    """

    mask: np.ndarray
    labels: np.ndarray
    overlay: np.ndarray
    segmented: np.ndarray
    cells: list[Cell] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Number of cells (connected components that survived ``min_area``)."""
        return len(self.cells)

    @property
    def coverage(self) -> float:
        """Fraction of the image covered by the mask, 0..1 (0 for a zero-size image)."""
        return float(self.mask.mean()) if self.mask.size else 0.0


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------

_OVERLAY_TINT = np.array((0, 230, 120), np.float32)  # green: contrasts with purple/pink stain
_OVERLAY_ALPHA = 0.35
_OUTLINE_RGB = (255, 230, 0)
_CLOSE_KERNEL = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions of a 0/255 mask that do not touch the image border."""
    h, w = mask.shape
    # Flood the background from a 1-px frame so that every border-connected region is reached.
    padded = np.zeros((h + 2, w + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    flood = padded.copy()
    cv2.floodFill(flood, np.zeros((h + 4, w + 4), np.uint8), (0, 0), 255)
    holes = cv2.bitwise_not(flood)[1:-1, 1:-1]
    return cv2.bitwise_or(mask, holes)


def hsv_components(
    hsv: np.ndarray,
    hsv_range: HSVRange,
    min_area: int,
    open_close: bool,
    fill_holes: bool,
) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
    """Threshold + clean an HSV image.

    Returns ``(labels, n_labels, stats, centroids)`` as from cv2.connectedComponentsWithStats,
    but with components below ``min_area`` already removed and the rest renumbered 1..n.
    Shared by :func:`segment_hsv` and the tuner, so what is tuned is exactly what is shipped.
    """
    mask = hsv_range.in_range(hsv)
    if open_close:
        # Closing re-joins the granular chromatin/cytoplasm texture into one blob per cell.
        # No opening: it erased thin features the reference keeps (about -0.01 IoU on a
        # 300-image sample); isolated specks are dropped by min_area instead.
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _CLOSE_KERNEL)
    if fill_holes:
        # Pale nucleoli / vacuoles fall outside the range. Off by default: on the dataset the
        # reference keeps such holes about as often as not (full set: -0.003 IoU when filled).
        mask = _fill_holes(mask)
    n, labels, stats, cents = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= max(int(min_area), 1)) + 1
    if len(keep) != n - 1:
        remap = np.zeros(n, np.int32)
        remap[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
        labels = remap[labels]
        stats = np.concatenate([stats[:1], stats[keep]])
        cents = np.concatenate([cents[:1], cents[keep]])
        n = len(keep) + 1
    return labels.astype(np.int32, copy=False), n, stats, cents


def _overlay(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = rgb.copy()
    if mask.any():
        tinted = rgb[mask].astype(np.float32) * (1 - _OVERLAY_ALPHA) + _OVERLAY_TINT * _OVERLAY_ALPHA
        out[mask] = np.clip(tinted, 0, 255).astype(np.uint8)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, _OUTLINE_RGB, 1)
    return out


def segment_hsv(
    rgb: np.ndarray,
    hsv_range: HSVRange = DEFAULT_HSV_RANGE,
    min_area: int = DEFAULT_MIN_AREA,
    open_close: bool = True,
    fill_holes: bool = False,
) -> Segmentation:
    """Segment stained cells in an RGB smear image by HSV thresholding.

    Args:
        rgb: ``HxWx3`` uint8 image in RGB order, any size (``HxW`` grey and ``HxWx4`` RGBA are
            accepted too; grey has no saturation, so it yields an empty mask unless the range
            admits S = 0).
        hsv_range: the HSV box to keep (OpenCV units; hue may wrap, see :class:`HSVRange`).
        min_area: components with fewer pixels are discarded (values < 1 act as 1).
        open_close: clean the raw threshold with a 3x3 closing (see _mask_from_hsv for why
            there is no opening step).
        fill_holes: fill enclosed background inside each component.

    Returns:
        A :class:`Segmentation`. All-black, all-white, uniform or zero-size images give an
        empty mask and ``count == 0``.

    Raises:
        ValueError: for a non-uint8 array or a shape that is not an image.
    """
    img = as_rgb_uint8(rgb)
    h, w = img.shape[:2]
    if h == 0 or w == 0:
        empty = np.zeros((h, w), bool)
        return Segmentation(empty, np.zeros((h, w), np.int32), img.copy(), img.copy(), [])
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    labels, n, stats, cents = hsv_components(hsv, hsv_range, min_area, open_close, fill_holes)
    mask = labels > 0
    cells = [
        Cell(
            label=i,
            area=int(stats[i, cv2.CC_STAT_AREA]),
            bbox=(int(stats[i, cv2.CC_STAT_LEFT]), int(stats[i, cv2.CC_STAT_TOP]),
                  int(stats[i, cv2.CC_STAT_WIDTH]), int(stats[i, cv2.CC_STAT_HEIGHT])),
            centroid=(float(cents[i, 0]), float(cents[i, 1])),
        )
        for i in range(1, n)
    ]
    segmented = np.where(mask[:, :, None], img, np.uint8(0))
    return Segmentation(mask, labels, _overlay(img, mask), segmented, cells)


def mask_from_reference(segmented_rgb: np.ndarray, threshold: int = REFERENCE_THRESHOLD) -> np.ndarray:
    """Foreground of a dataset ``Segmented/`` image: ``HxW`` bool, True where any channel > threshold.

    ``segmented_rgb`` is ``HxWx3`` (or ``HxW``) uint8. The authors' output is cells on pure
    black, but JPEG re-encoding bleeds colour around cells; see REFERENCE_THRESHOLD for why
    the default 50 separates that bleed from real (bright) cell pixels.
    """
    arr = np.asarray(segmented_rgb)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    if arr.ndim != 2:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {np.shape(segmented_rgb)}")
    return arr > threshold


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two same-shape masks (non-zero = foreground), in 0..1.

    Two empty masks are identical, so their IoU is defined as 1.0.
    """
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    union = np.count_nonzero(a | b)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(a & b) / union)
