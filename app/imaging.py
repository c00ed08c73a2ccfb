"""Image decoding, white cells, HSV segmentation and the shipped samples, cached on the image bytes.

Uploads stay in memory: bytes come from the uploader and go through core.imageio; nothing is
written to disk.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import streamlit as st

from core.cells import WhiteCells, find_white_cells
from core.imageio import decode_image
from core.labels import DISPLAY_NAMES
from core.segmentation import DEFAULT_MIN_AREA, HSVRange, Segmentation, segment_hsv

from app import PROJECT_ROOT

SAMPLES_DIR = PROJECT_ROOT / "samples"
# Segmentation and CAMs run on a copy whose longer side is at most this; the dataset's images
# are 224 px, and a whole-field photograph does not need 40 MP to be looked at.
MAX_VIEW_SIDE = 1024


@st.cache_data(show_spinner=False, max_entries=64)
def decode_for_view(data: bytes) -> tuple[np.ndarray, tuple[int, int]]:
    """(RGB uint8 at most MAX_VIEW_SIDE on its longer side, original (width, height)).
    Raises core.imageio.ImageError with a plain message for unusable files."""
    rgb = decode_image(data)
    h, w = rgb.shape[:2]
    scale = MAX_VIEW_SIDE / max(h, w)
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return rgb, (w, h)


@st.cache_data(show_spinner=False, max_entries=128)
def segment(data: bytes, lower: tuple[int, int, int], upper: tuple[int, int, int],
            min_area: int = DEFAULT_MIN_AREA) -> Segmentation:
    """HSV segmentation of the view-sized image (core.segmentation.segment_hsv)."""
    rgb, _ = decode_for_view(data)
    return segment_hsv(rgb, HSVRange(lower, upper), min_area=min_area)


@st.cache_data(show_spinner=False, max_entries=128)
def white_cells(data: bytes) -> WhiteCells:
    """The nucleated (white) cells of the view-sized image (core.cells.find_white_cells): their
    outlines, count and sizes in pixels of that image (see `view_scale` for the original's)."""
    rgb, _ = decode_for_view(data)
    return find_white_cells(rgb)


def white_cell_overlay(data: bytes) -> np.ndarray:
    """The view-sized image with every white cell outlined."""
    rgb, _ = decode_for_view(data)
    return white_cells(data).draw(rgb)


def view_scale(data: bytes) -> float:
    """Original pixels per view pixel (1.0 unless the image was downscaled for viewing)."""
    rgb, (w, _) = decode_for_view(data)
    return w / rgb.shape[1]


def heat_overlay(rgb: np.ndarray, heat_u8: np.ndarray, opacity: float) -> np.ndarray:
    from core.explain import overlay_heatmap

    return overlay_heatmap(rgb, heat_u8.astype(np.float32) / 255.0, opacity)


def heat_colour(heat_u8: np.ndarray) -> np.ndarray:
    """The heat map alone, jet-coloured, RGB uint8."""
    return cv2.cvtColor(cv2.applyColorMap(heat_u8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def mask_image(seg: Segmentation) -> np.ndarray:
    return (seg.mask.astype(np.uint8) * 255)


# --------------------------------------------------------------------------------------------
# Shipped samples (samples/Original/<class>/*.jpg, samples/Segmented/<class>/*.jpg)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    rel: str  # "<class folder>/<file>", e.g. "Pre/WBC-Malignant-Pre-241.jpg"

    @property
    def path(self) -> Path:
        return SAMPLES_DIR / "Original" / self.rel

    @property
    def segmented_path(self) -> Path | None:
        p = SAMPLES_DIR / "Segmented" / self.rel
        return p if p.is_file() else None

    @property
    def label(self) -> str:
        """The dataset's class for this image (display name)."""
        return DISPLAY_NAMES.get(self.rel.split("/", 1)[0], "?")

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]

    def read(self) -> bytes:
        return self.path.read_bytes()


@st.cache_data(show_spinner=False)
def list_samples() -> list[str]:
    base = SAMPLES_DIR / "Original"
    if not base.is_dir():
        return []
    return sorted(str(p.relative_to(base)).replace("\\", "/") for p in base.glob("*/*")
                  if p.is_file() and not p.name.startswith("."))


def sample_label(rel: str) -> str:
    s = Sample(rel)
    return f"{s.label} · {s.name}"


def find_sample(rel: str | None) -> Sample | None:
    return Sample(rel) if rel and rel in list_samples() else None
