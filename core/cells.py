"""Find the nucleated (white) cells in a Romanowsky-stained blood smear, from any lab.

`find_white_cells(rgb)` outlines the nuclei of white cells (and of any other nucleated cell,
such as an erythroblast) in a Giemsa, Wright, Leishman or May-Grünwald-Giemsa smear, and
leaves out red cells, their rims, platelets and background. It is UI-free and runs on the
CPU in well under a second for a 1024 px field.

How it works (every step on a copy whose longer side is at most `WORK_MAX_SIDE` px):

1. **Background-relative optical density.** The slide background is estimated as the median
   colour of the brightest fifth of the pixels, and each channel is converted to optical
   density against it (Beer-Lambert, as in colour deconvolution), so a white, yellowish,
   peach or bluish background all become zero density.
2. **A nucleus-colour map.** Nuclear chromatin stained by the azure-eosinate complex of every
   Romanowsky stain absorbs green light strongly and passes blue: its green-minus-blue optical
   density is high (0.15 for the palest magenta blasts of the training hospital, 0.3-1 for
   ordinary purple nuclei). Erythrocytes, pink-red or gray-blue, absorb green and blue about
   equally (0.03-0.15), and the background is 0.
3. **A threshold for this image**: Otsu's threshold of the map over the stained pixels (the
   darkest 0.5% clipped first, so a few very dark specks do not hide pale magenta nuclei), but
   at least the erythrocytes' typical map value plus a margin and at least a floor (all in the
   parameter file), so a field of red cells alone does not give up its red cells.
4. **A ruler from the red cells.** Erythrocytes are about 7.5 µm across in every lab; their
   diameter in pixels is the median diameter of circles found (OpenCV's Hough transform) on
   the outline of the stained, hole-filled, nucleus-free mask. The morphology below and the
   smallest white cell are sized from it, so the same code works at any magnification. Where
   fewer than three circles are found (red cells packed into clumps), the training hospital's
   red-cell diameter is assumed.
5. **Clean-up and cells.** The nucleus mask is closed, hole-filled and opened; lobes of one
   nucleus (a neutrophil's) are grouped; touching nuclei are split by a watershed on the
   distance transform. A group counts as a white cell when its equivalent diameter is at least
   `min_diameter_rel` erythrocyte diameters (measured on its nucleus-coloured pixels): platelets
   (2-3 µm, most under 0.7 of a red cell even in clumps) and stain specks are left out. The
   smallest diameter used is reported. An object whose mean colour has the red cells' hue
   (within `min_hue_angle_deg` in optical-density space) is overlapping red cells, only darker,
   and is not counted either.

What it does not do: it outlines the nucleus, not the cytoplasm (the mask covers nuclei); it
does not tell white-cell types apart; cells cut by the image border are found but flagged, and
the median diameter uses the whole cells when there are any. Two nuclei touching along a long
edge may stay one cell. A grayscale image has no colour to find nuclei by and gives no cells.

The tunable constants and the training hospital's white-cell and red-cell diameters in pixels
live in `core/data/white_cells.json`, written by
`python -m core.cells_fit fit --data DIR --other-lab DIR` (which records its command, data and
date there).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from core.imageio import as_rgb_uint8

__all__ = [
    "PARAMS_PATH",
    "WORK_MAX_SIDE",
    "CellParams",
    "WhiteCell",
    "WhiteCells",
    "load_params",
    "background_colour",
    "optical_density",
    "training_reference",
    "nucleus_map",
    "find_white_cells",
]

PARAMS_PATH = Path(__file__).resolve().parent / "data" / "white_cells.json"
# Larger images are analysed on a copy this size (results are scaled back to the input).
WORK_MAX_SIDE = 1024
_OUTLINE_RGB = (0, 200, 90)


@dataclass(frozen=True)
class CellParams:
    """The constants of `find_white_cells` (see the module docstring for their roles)."""

    stained_od: float = 0.06  # a pixel is stained (not background) above this optical density
    smooth_sigma: float = 1.0  # Gaussian blur of the nucleus map, in working pixels
    nucleus_floor: float = 0.08  # the nucleus threshold is never below this map value
    nucleus_margin: float = 0.05  # ... nor below the erythrocytes' median map value plus this
    otsu_clip_percentile: float = 99.5  # map values above this percentile are clipped before Otsu
    min_diameter_rel: float = 0.75  # smallest white cell, in erythrocyte diameters
    min_hue_angle_deg: float = 8.0  # a nucleus's colour differs from the red cells' by at least this
    close_rel: float = 0.08  # closing radius (chromatin texture), in erythrocyte diameters
    open_rel: float = 0.05  # opening radius (thin specks), in erythrocyte diameters
    group_rel: float = 0.12  # lobes closer than this belong to one cell, in erythrocyte diameters
    split_h_rel: float = 0.45  # touching nuclei are split at necks this much thinner (watershed)
    circle_quality: float = 0.8  # OpenCV HOUGH_GRADIENT_ALT param2: how perfect a red-cell circle must be
    min_circles: int = 3  # circles needed to trust the red-cell ruler
    default_rbc_diameter_px: float = 20.0  # ruler used when no red cells are measurable

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CellParams":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@functools.lru_cache(maxsize=4)
def _read_json(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_params(path: str | Path | None = None) -> CellParams:
    """The parameters stored in `core/data/white_cells.json` (the dataclass defaults when the
    file has none, e.g. before the first fit)."""
    p = Path(path) if path else PARAMS_PATH
    if not p.is_file():
        return CellParams()
    return CellParams.from_dict(_read_json(str(p)).get("params", {}))


def training_reference(path: str | Path | None = None) -> dict[str, Any]:
    """What the fit measured on the training hospital's train/val images: white-cell and
    red-cell diameters in pixels (p1, p5, median, p95, p99) and the detection rate. Empty when
    the data file has not been written."""
    p = Path(path) if path else PARAMS_PATH
    if not p.is_file():
        return {}
    return dict(_read_json(str(p)).get("training_hospital", {}))


@dataclass(frozen=True, eq=False)
class WhiteCell:
    """One nucleated cell, in pixels of the input image.

    ``bbox`` is ``(x, y, w, h)``; ``centroid`` ``(x, y)``; ``area_px`` the nucleus area;
    ``diameter_px`` the diameter of the disc of that area (equivalent diameter); ``contour`` an
    ``(N, 1, 2)`` int32 array for ``cv2.drawContours``; ``touches_border`` whether the image
    edge cuts the cell (its size is then a lower bound); ``stained_fraction`` the share of
    the outlined pixels that are nucleus-coloured (chromatin; granular platelets score lower).
    """

    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    area_px: int
    diameter_px: float
    contour: np.ndarray
    touches_border: bool = False
    stained_fraction: float = 1.0


@dataclass(frozen=True, eq=False)
class WhiteCells:
    """Result of `find_white_cells`.

    ``cells``: the white cells found. ``mask``: ``HxW`` uint8, 255 on their nuclei, at the
    input's resolution. ``rbc_diameter_px``: the red-cell ruler (None when no red cells could
    be measured; ``default_rbc_diameter_px`` was used). ``min_diameter_px``: objects whose
    nucleus-coloured pixels make a disc smaller than this were not counted (platelets, specks).
    ``n_small``: how many nucleus-coloured objects were not counted (too small, or of the red
    cells' own hue: red cells overlapping).
    """

    cells: tuple[WhiteCell, ...]
    mask: np.ndarray
    rbc_diameter_px: float | None
    min_diameter_px: float
    n_small: int = 0
    params: CellParams = field(default_factory=CellParams)

    @property
    def count(self) -> int:
        return len(self.cells)

    @property
    def median_diameter_px(self) -> float | None:
        """Median equivalent diameter of the whole cells (of all cells when every one touches
        the border); None when there are none."""
        whole = [c.diameter_px for c in self.cells if not c.touches_border]
        sizes = whole or [c.diameter_px for c in self.cells]
        return float(np.median(sizes)) if sizes else None

    def draw(self, rgb: np.ndarray, color: tuple[int, int, int] = _OUTLINE_RGB,
             thickness: int | None = None) -> np.ndarray:
        """An RGB copy of ``rgb`` (the analysed image or one of the same size) with every
        cell outlined."""
        out = as_rgb_uint8(rgb).copy()
        if out.shape[:2] != self.mask.shape:
            raise ValueError(f"image is {out.shape[:2]}, the cells were found on {self.mask.shape}")
        if thickness is None:
            thickness = max(1, round(max(out.shape[:2]) / 300))
        cv2.drawContours(out, [c.contour for c in self.cells], -1, color, thickness, cv2.LINE_AA)
        return out

    def crops(self, rgb: np.ndarray, k: int = 3, context: float = 2.0, min_side: int = 32,
              fill: tuple[int, int, int] = (225, 225, 225)) -> list[np.ndarray]:
        """Square RGB crops of ``rgb`` (the analysed image or one of the same size) centred on
        the ``k`` largest cells, each ``context`` nucleus diameters wide (at least ``min_side``
        px); parts beyond the image edge are ``fill``. A cell centred within a larger chosen
        cell's diameter of it is skipped. Largest first; empty when no cells."""
        if rgb.shape[:2] != self.mask.shape:
            raise ValueError(f"image is {rgb.shape[:2]}, the cells were found on {self.mask.shape}")
        if k < 1 or context <= 0:
            raise ValueError("k must be at least 1 and context positive")
        out, centres = [], []
        for cell in sorted(self.cells, key=lambda c: -c.area_px):
            if len(out) == k:
                break
            # A piece of a nucleus already cropped (a lobe, an over-split clump) adds no new cell.
            if any(np.hypot(cell.centroid[0] - cx, cell.centroid[1] - cy) < d for cx, cy, d in centres):
                continue
            centres.append((*cell.centroid, cell.diameter_px))
            half = max(min_side, int(round(context * cell.diameter_px))) // 2
            pad = cv2.copyMakeBorder(rgb, half, half, half, half, cv2.BORDER_CONSTANT, value=fill)
            x, y = (int(round(v)) + half for v in cell.centroid)  # centre, in the padded image
            out.append(pad[y - half:y + half, x - half:x + half].copy())
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-ready numbers: count, median diameter, ruler, smallest counted size."""
        med = self.median_diameter_px
        return {
            "white_cells": self.count,
            "median_diameter_px": None if med is None else round(med, 1),
            "diameters_px": [round(c.diameter_px, 1) for c in self.cells],
            "rbc_diameter_px": None if self.rbc_diameter_px is None else round(self.rbc_diameter_px, 1),
            "min_diameter_px": round(self.min_diameter_px, 1),
            "small_stained_objects": self.n_small,
        }


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


def _disk(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def background_colour(rgb: np.ndarray) -> np.ndarray:
    """Median RGB colour (float32, >= 1) of the brightest fifth of the pixels: the slide
    between the cells in a bright-field smear."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    bright = gray >= np.percentile(gray, 80)
    return np.maximum(np.median(rgb[bright].astype(np.float32), axis=0), 1.0)


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Per-channel optical density, -log10(I / I0), against the image's own background I0
    (`background_colour`) for an HxWx3 uint8 RGB image: HxWx3 float32, 0 on the background."""
    rgb = as_rgb_uint8(rgb)
    rel = rgb.astype(np.float32) / background_colour(rgb)
    return -np.log10(np.clip(rel, 1.0 / 255.0, 1.0))


def _maps(rgb: np.ndarray, p: CellParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(optical density HxWx3, nucleus map HxW, stained mask HxW) of an RGB uint8 image."""
    od = optical_density(rgb)
    m = cv2.GaussianBlur(od[..., 1] - od[..., 2], (0, 0), p.smooth_sigma)
    stained = cv2.GaussianBlur(od.max(axis=2), (0, 0), p.smooth_sigma) > p.stained_od
    return od, m, stained


def nucleus_map(rgb: np.ndarray, params: CellParams | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(map, stained)``: the green-minus-blue optical density (float32, smoothed) and the
    stained-pixel mask (bool) of an RGB uint8 image, at its own resolution."""
    _, m, stained = _maps(as_rgb_uint8(rgb), params or load_params())
    return m, stained


def _nucleus_threshold(m: np.ndarray, stained: np.ndarray, p: CellParams) -> float:
    from skimage.filters import threshold_otsu

    vals = m[stained]
    if vals.size < 50:
        return float("inf")  # nothing stained: a blank or a dark picture
    rbc_level = float(np.median(vals))
    # Otsu separates red cells from nuclei; the darkest 0.5% are clipped first so that a few very
    # dark specks cannot pull the threshold above pale (magenta) nuclei.
    clipped = np.minimum(vals, np.percentile(vals, p.otsu_clip_percentile))
    otsu = float(threshold_otsu(clipped)) if float(clipped.max()) > float(clipped.min()) else rbc_level
    return max(otsu, rbc_level + p.nucleus_margin, p.nucleus_floor)


def _red_cells(stained: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Stained pixels away from anything nucleus-coloured: red cells (and pale cytoplasm)."""
    other = stained & ~cv2.dilate(nuclei, _disk(2)).astype(bool)
    return cv2.morphologyEx(other.astype(np.uint8), cv2.MORPH_OPEN, _disk(1))


def _rbc_diameter(red: np.ndarray, p: CellParams) -> float | None:
    """Median diameter of the circles on the outline of the red cells (central pallor filled);
    None when fewer than ``min_circles`` are found."""
    from scipy import ndimage as ndi

    filled = ndi.binary_fill_holes(red).astype(np.uint8) * 255
    h, w = filled.shape
    if min(h, w) < 16 or not filled.any():
        return None
    edges = cv2.GaussianBlur(filled, (0, 0), 1.5)
    circles = cv2.HoughCircles(edges, cv2.HOUGH_GRADIENT_ALT, dp=1.5, minDist=4, param1=100,
                               param2=p.circle_quality, minRadius=3, maxRadius=max(4, int(min(h, w) / 5)))
    if circles is None or len(circles[0]) < p.min_circles:
        return None
    return float(2.0 * np.median(circles[0][:, 2]))


def _hue_angle(od_mean: np.ndarray, red_od: np.ndarray | None) -> float:
    """Angle (degrees) between two optical-density colours: 0 for the same hue at any density."""
    if red_od is None:
        return 90.0
    a, b = np.asarray(od_mean, np.float64), np.asarray(red_od, np.float64)
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < 1e-6 or nb < 1e-6:
        return 90.0
    return float(np.degrees(np.arccos(np.clip(a @ b / (na * nb), -1.0, 1.0))))


def _split_touching(group: np.ndarray, rbc: float, p: CellParams) -> np.ndarray:
    """Labels (int32, 0 = background) of one group, split where the distance transform has
    separate maxima deeper than ``split_h_rel`` erythrocyte diameters (touching nuclei)."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    dist = cv2.distanceTransform(group, cv2.DIST_L2, 5)
    h = max(1.0, p.split_h_rel * rbc)
    if float(dist.max()) < 2 * h:
        return (group > 0).astype(np.int32)
    peaks = h_maxima(dist, h)
    n, markers = cv2.connectedComponents(peaks.astype(np.uint8), connectivity=8)
    if n <= 2:
        return (group > 0).astype(np.int32)
    return watershed(-dist, markers, mask=group > 0).astype(np.int32)


@dataclass(frozen=True, eq=False)
class _Candidate:
    """A nucleus-coloured object before the size rule (working resolution)."""

    origin: tuple[int, int]  # (y0, x0) of ``part`` in the working image
    part: np.ndarray  # bool patch: the outline's inside
    core: int  # nucleus-coloured pixels inside the outline
    diameter: float  # equivalent diameter of ``core``, working px
    rel_diameter: float  # in erythrocyte diameters
    fill: float  # fraction of the object's pixels above the nucleus threshold before clean-up
    contrast: float  # mean nucleus-map value / threshold
    hue_angle: float  # degrees between its mean optical density and the red cells'
    counted: bool


def _candidates(work: np.ndarray, p: CellParams, scale: float) -> tuple[list[_Candidate], float | None, float]:
    """Nucleus-coloured objects of a working-size image, each with the measures the size rule
    uses; also the red-cell ruler (None if unmeasured) and the smallest counted diameter."""
    from scipy import ndimage as ndi

    h, w = work.shape[:2]
    od, m, stained = _maps(work, p)
    t = _nucleus_threshold(m, stained, p)
    raw = (m > t).astype(np.uint8)
    red = _red_cells(stained, raw)
    rbc = _rbc_diameter(red, p)
    ruler = rbc if rbc is not None else p.default_rbc_diameter_px * scale
    # The red cells' colour (median optical density): an object of the same hue is overlapping
    # red cells, only darker, not a nucleus.
    red_od = np.median(od[red > 0], axis=0) if int(red.sum()) >= 20 else None
    nuc = cv2.morphologyEx(raw, cv2.MORPH_CLOSE, _disk(p.close_rel * ruler))
    nuc = ndi.binary_fill_holes(nuc).astype(np.uint8)
    nuc = cv2.morphologyEx(nuc, cv2.MORPH_OPEN, _disk(p.open_rel * ruler))
    grouped = cv2.dilate(nuc, _disk(p.group_rel * ruler))
    n_groups, group_labels = cv2.connectedComponents(grouped, connectivity=8)
    min_d = p.min_diameter_rel * ruler
    out: list[_Candidate] = []
    for g in range(1, n_groups):
        ys, xs = np.nonzero(group_labels == g)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        in_group = group_labels[y0:y1, x0:x1] == g
        member = in_group & (nuc[y0:y1, x0:x1] > 0)
        if not member.any():
            continue
        # One cell's lobes: close them together with the grouping radius, keep inside the group.
        pad = int(np.ceil(p.group_rel * ruler)) + 2
        patch = np.pad(member.astype(np.uint8), pad)
        patch = cv2.morphologyEx(patch, cv2.MORPH_CLOSE, _disk(p.group_rel * ruler))
        patch = ndi.binary_fill_holes(patch).astype(np.uint8)[pad:-pad, pad:-pad]
        patch &= in_group.astype(np.uint8)
        parts = _split_touching(patch, ruler, p)
        for k in range(1, int(parts.max()) + 1):
            part = parts == k
            area = int(part.sum())
            if area == 0:
                continue
            core = int((raw[y0:y1, x0:x1][part] > 0).sum())
            d = float(np.sqrt(4.0 * core / np.pi))
            vals = m[y0:y1, x0:x1][part]
            contrast = float(vals.mean() / t) if np.isfinite(t) and t > 0 else 0.0
            angle = _hue_angle(od[y0:y1, x0:x1][part].mean(axis=0), red_od)
            out.append(_Candidate((int(y0), int(x0)), part, core, d, d / ruler, core / area, contrast, angle,
                                  d >= min_d and angle >= p.min_hue_angle_deg))
    return out, rbc, min_d


def find_white_cells(rgb: np.ndarray, params: CellParams | None = None) -> WhiteCells:
    """Nucleated (white) cells of a Romanowsky-stained smear image (``HxWx3`` uint8 RGB; gray
    ``HxW`` and RGBA are accepted). See the module docstring; raises ValueError for arrays
    that are not uint8 images."""
    p = params or load_params()
    img = as_rgb_uint8(rgb)
    H, W = img.shape[:2]
    scale = min(1.0, WORK_MAX_SIDE / max(H, W, 1))
    work = img if scale == 1.0 else cv2.resize(
        img, (max(1, round(W * scale)), max(1, round(H * scale))), interpolation=cv2.INTER_AREA)
    h, w = work.shape[:2]
    empty = WhiteCells((), np.zeros((H, W), np.uint8), None, p.min_diameter_rel * p.default_rbc_diameter_px,
                       0, p)
    if min(h, w) < 8:
        return empty

    cands, rbc, min_d = _candidates(work, p, scale)
    counted = [c for c in cands if c.counted]
    labels = np.zeros((h, w), np.int32)
    for k, c in enumerate(counted, start=1):
        y0, x0 = c.origin
        labels[y0:y0 + c.part.shape[0], x0:x0 + c.part.shape[1]][c.part] = k
    inv = 1.0 / scale
    labels_full = labels if scale == 1.0 else cv2.resize(labels, (W, H), interpolation=cv2.INTER_NEAREST)
    cells = []
    for k, c in enumerate(counted, start=1):
        # The cell's window in the input image (one working pixel of margin for the rescaling).
        y0, x0 = c.origin
        wy0, wx0 = max(0, int((y0 - 1) * inv)), max(0, int((x0 - 1) * inv))
        wy1 = min(H, int(np.ceil((y0 + c.part.shape[0] + 1) * inv)))
        wx1 = min(W, int(np.ceil((x0 + c.part.shape[1] + 1) * inv)))
        one = (labels_full[wy0:wy1, wx0:wx1] == k).astype(np.uint8)
        area = int(one.sum())
        if area == 0:
            continue
        contours, _ = cv2.findContours(one, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(wx0, wy0))
        contour = max(contours, key=cv2.contourArea)
        x, y, bw, bh = cv2.boundingRect(one)
        x, y = x + wx0, y + wy0
        mom = cv2.moments(one, binaryImage=True)
        cx, cy = mom["m10"] / mom["m00"] + wx0, mom["m01"] / mom["m00"] + wy0
        border = x == 0 or y == 0 or x + bw >= W or y + bh >= H
        cells.append(WhiteCell((int(x), int(y), int(bw), int(bh)), (float(cx), float(cy)), area,
                               float(np.sqrt(4.0 * area / np.pi)), contour.astype(np.int32), bool(border),
                               round(c.fill, 3)))
    mask = np.where(labels_full > 0, np.uint8(255), np.uint8(0))
    return WhiteCells(tuple(cells), mask, None if rbc is None else rbc * inv, min_d * inv,
                      len(cands) - len(counted), p)
