"""Tests for core.segmentation: synthetic images (fast, no data) plus one optional dataset check.

The dataset check runs only when the env var LEUKOSCOPE_DATA points at a folder with
Original/<class>/ and Segmented/<class>/ (the ALL image dataset layout).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.labels import CLASS_FOLDERS
from core.segmentation import (
    DEFAULT_HSV_RANGE,
    HSVRange,
    Segmentation,
    iou,
    mask_from_reference,
    segment_hsv,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# RGB colours: a Wright/Giemsa-like violet nucleus, a pinkish-white background and pale red cells.
PURPLE = (120, 90, 200)
BACKGROUND = (235, 215, 225)
PALE_RBC = (205, 190, 215)


def _smear(h: int = 160, w: int = 200, discs: list[tuple[int, int, int]] | None = None,
           colour: tuple[int, int, int] = PURPLE) -> np.ndarray:
    """A synthetic smear: background, a few pale red cells and violet discs (cx, cy, r)."""
    img = np.full((h, w, 3), BACKGROUND, np.uint8)
    for cx, cy, r in ((20, 20, 10), (w - 25, h - 25, 11), (w - 30, 25, 9)):
        cv2.circle(img, (cx, cy), r, PALE_RBC, -1)
    for cx, cy, r in discs or []:
        cv2.circle(img, (cx, cy), r, colour, -1)
    return img


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "core.segmentation_tools", *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


# ------------------------------------------------------------------ synthetic segmentation


def test_purple_disc_is_one_cell_with_its_area_and_bbox():
    cx, cy, r = 80, 60, 20
    rgb = _smear(discs=[(cx, cy, r)])
    seg = segment_hsv(rgb)

    assert isinstance(seg, Segmentation)
    assert seg.count == 1
    cell = seg.cells[0]
    assert 0.85 * math.pi * r * r <= cell.area <= 1.25 * math.pi * r * r
    x, y, w, h = cell.bbox
    assert abs(x - (cx - r)) <= 2 and abs(y - (cy - r)) <= 2
    assert abs(w - (2 * r + 1)) <= 4 and abs(h - (2 * r + 1)) <= 4
    assert abs(cell.centroid[0] - cx) < 1 and abs(cell.centroid[1] - cy) < 1
    assert cell.area == int(seg.mask.sum()) == int((seg.labels == cell.label).sum())
    # The pale red cells and background stay out.
    assert not seg.mask[20, 20] and not seg.mask[5, 150]


def test_outputs_have_documented_shapes_and_content():
    rgb = _smear(discs=[(80, 60, 20)])
    seg = segment_hsv(rgb)
    h, w = rgb.shape[:2]
    assert seg.mask.shape == (h, w) and seg.mask.dtype == bool
    assert seg.labels.shape == (h, w)
    for img in (seg.overlay, seg.segmented):
        assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert np.array_equal(seg.segmented[seg.mask], rgb[seg.mask])
    assert not seg.segmented[~seg.mask].any()
    # The overlay marks the cell but leaves pixels far from it untouched.
    assert not np.array_equal(seg.overlay[seg.mask], rgb[seg.mask])
    assert np.array_equal(seg.overlay[:10, 150:], rgb[:10, 150:])
    assert not np.shares_memory(seg.overlay, rgb)


def test_input_is_rgb_not_bgr():
    # The same violet in BGR order reads as a pinkish red (hue near 0/180): not stain.
    rgb = _smear(discs=[(80, 60, 20)])
    assert segment_hsv(rgb).count == 1
    assert segment_hsv(np.ascontiguousarray(rgb[:, :, ::-1])).count == 0


def test_two_discs_two_cells_and_small_specks_dropped():
    rgb = _smear(discs=[(50, 50, 15), (140, 100, 18)])
    rgb[130:132, 60:62] = PURPLE  # 4-px speck: below any sensible min_area
    seg = segment_hsv(rgb, min_area=30)
    assert seg.count == 2
    assert sorted(c.area > 850 for c in seg.cells) == [False, True]  # r=15 ~ 707 px, r=18 ~ 1018
    assert {int(v) for v in np.unique(seg.labels)} == {0, 1, 2}
    assert not seg.mask[130:132, 60:62].any()
    assert segment_hsv(rgb, min_area=1).count == 3


def test_hole_inside_a_cell_is_filled_only_when_asked():
    rgb = _smear(discs=[(90, 80, 25)])
    cv2.circle(rgb, (90, 80), 6, BACKGROUND, -1)  # pale nucleolus-like hole
    assert segment_hsv(rgb, fill_holes=True).mask[80, 90]
    assert not segment_hsv(rgb, fill_holes=False).mask[80, 90]


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((224, 224, 3), np.uint8),                 # black
        np.full((224, 224, 3), 255, np.uint8),             # white
        np.full((37, 301, 3), BACKGROUND, np.uint8),       # blank background, odd size
        np.full((50, 60, 3), 128, np.uint8),               # grey
        np.zeros((1, 1, 3), np.uint8),                     # single pixel
        np.zeros((0, 10, 3), np.uint8),                    # zero-size
        np.full((40, 40), 200, np.uint8),                  # 2-D grey input
        np.full((40, 40, 4), 255, np.uint8),               # RGBA
    ],
    ids=["black", "white", "blank", "grey", "1x1", "zero-size", "2d-grey", "rgba"],
)
def test_images_without_stain_give_an_empty_mask(image):
    seg = segment_hsv(image)
    assert seg.count == 0 and seg.cells == []
    assert seg.mask.shape == image.shape[:2] and not seg.mask.any()
    assert seg.overlay.shape == image.shape[:2] + (3,)


def test_rejects_non_uint8_and_non_images():
    with pytest.raises(ValueError):
        segment_hsv(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError):
        segment_hsv(np.zeros((10, 10, 2), np.uint8))


# ------------------------------------------------------------------ HSV ranges


def test_hue_wraparound_range():
    wrap = HSVRange(lower=(170, 50, 50), upper=(10, 255, 255))
    assert wrap.wraps and not DEFAULT_HSV_RANGE.wraps
    hues = np.array([169, 170, 179, 0, 10, 11, 90], np.uint8)
    hsv = np.stack([hues, np.full(7, 200, np.uint8), np.full(7, 200, np.uint8)], axis=-1)[None]
    assert (wrap.in_range(hsv)[0] > 0).tolist() == [False, True, True, True, True, False, False]

    # Red (H=0), crimson (H~175) and green (H=60) discs: the wrapping range keeps both reds.
    rgb = np.full((120, 220, 3), 255, np.uint8)
    cv2.circle(rgb, (40, 60), 18, (220, 30, 30), -1)    # red
    cv2.circle(rgb, (110, 60), 18, (220, 30, 60), -1)   # crimson, hue just below 180
    cv2.circle(rgb, (180, 60), 18, (30, 200, 30), -1)   # green
    seg = segment_hsv(rgb, wrap)
    assert seg.count == 2
    assert sorted(round(c.centroid[0]) for c in seg.cells) == [40, 110]
    # The same numbers without wrap-around would mean "everything but red".
    not_red = segment_hsv(rgb, HSVRange(lower=(10, 50, 50), upper=(170, 255, 255)))
    assert not_red.count == 1 and round(not_red.cells[0].centroid[0]) == 180


@pytest.mark.parametrize(
    "lower, upper",
    [((0, 0, 0), (180, 255, 255)), ((0, -1, 0), (179, 255, 255)), ((0, 200, 0), (179, 100, 255)),
     ((0, 0, 200), (179, 255, 100)), ((0, 0), (179, 255))],
)
def test_invalid_ranges_are_rejected(lower, upper):
    with pytest.raises(ValueError):
        HSVRange(lower, upper)


# ------------------------------------------------------------------ reference masks and IoU


def test_mask_from_reference_ignores_jpeg_noise():
    ref = np.random.default_rng(0).integers(0, 51, size=(64, 64, 3), dtype=np.uint8)  # <= 50
    assert not mask_from_reference(ref).any()
    ref[10:20, 10:20] = (240, 120, 180)
    m = mask_from_reference(ref)
    assert m.dtype == bool and m.shape == (64, 64) and m.sum() == 100


def test_jpeg_roundtrip_of_a_segmented_image_keeps_its_mask():
    # The dataset's files are JPEG quality ~95 with chroma subsampling: saturated pink bleeds
    # into the black around cells. The default threshold must not count that bleed.
    seg = np.zeros((96, 96, 3), np.uint8)
    cv2.circle(seg, (40, 48), 20, (240, 120, 180), -1)
    cv2.circle(seg, (80, 20), 6, (160, 100, 130), -1)
    ok, buf = cv2.imencode(".jpg", seg[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    truth = seg.max(axis=2) > 0
    assert ok and iou(mask_from_reference(decoded), truth) > 0.97
    assert iou(mask_from_reference(decoded, threshold=20), truth) < iou(
        mask_from_reference(decoded), truth)


def test_iou_edge_cases():
    empty = np.zeros((4, 4), bool)
    full = np.ones((4, 4), bool)
    half = np.zeros((4, 4), bool)
    half[:, :2] = True
    assert iou(empty, empty) == 1.0
    assert iou(empty, full) == 0.0 and iou(full, empty) == 0.0
    assert iou(full, full) == 1.0
    assert iou(half, full) == pytest.approx(0.5)
    quarter = np.zeros((4, 4), bool)
    quarter[:2, 1:3] = True  # 4 px, 2 of them inside `half`
    assert iou(half, quarter) == pytest.approx(2 / 10)
    assert iou(half.astype(np.uint8) * 255, half) == 1.0  # non-zero counts as foreground
    with pytest.raises(ValueError):
        iou(np.zeros((4, 4)), np.zeros((4, 5)))


# ------------------------------------------------------------------ command line


@pytest.mark.parametrize("missing", ["root", "Original", "Segmented/Pro"])
def test_cli_reports_a_wrong_layout_with_exit_code_2(tmp_path, missing):
    data = tmp_path / "data"
    if missing != "root":
        for top in ("Original", "Segmented"):
            for c in CLASS_FOLDERS:
                (data / top / c).mkdir(parents=True)
        target = data / missing
        for sub in sorted(target.rglob("*"), reverse=True):
            sub.rmdir()
        target.rmdir()
    proc = _run_cli("evaluate", "--data", str(data))
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    expected = data if missing == "root" else data / missing
    assert lines[0].startswith("error:") and str(expected) in lines[0]


def test_cli_evaluates_a_tiny_dataset_and_lists_unreadable_files(tmp_path):
    data = tmp_path / "data"
    for i, c in enumerate(CLASS_FOLDERS):
        (data / "Original" / c).mkdir(parents=True)
        (data / "Segmented" / c).mkdir(parents=True)
        rgb = _smear(discs=[(60 + 10 * i, 70, 22)])
        ref = np.zeros_like(rgb)
        cv2.circle(ref, (60 + 10 * i, 70), 22, (250, 130, 180), -1)
        cv2.imwrite(str(data / "Original" / c / "a.jpg"), rgb[:, :, ::-1])
        cv2.imwrite(str(data / "Segmented" / c / "a.jpg"), ref[:, :, ::-1])
    (data / "Original" / "Pro" / "broken.jpg").write_bytes(b"not a jpeg")
    (data / "Segmented" / "Pro" / "broken.jpg").write_bytes(b"not a jpeg")
    # A reference that the authors' segmentation "failed" on: counts, but not in the IoU.
    cv2.imwrite(str(data / "Original" / "Pre" / "b.jpg"), _smear(discs=[(50, 50, 20)])[:, :, ::-1])
    cv2.imwrite(str(data / "Segmented" / "Pre" / "b.jpg"), np.zeros((160, 200, 3), np.uint8))

    proc = _run_cli("evaluate", "--data", str(data))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n_images"] == 5 and result["n_iou_images"] == 4
    assert result["mean_iou"] > 0.85
    assert result["empty_fraction"] == 0.0
    assert result["reference_empty_fraction"] == pytest.approx(0.2)
    assert [s["path"].endswith("broken.jpg") for s in result["skipped"]] == [True]
    assert set(result["per_class_mean_iou"]) == set(CLASS_FOLDERS)
    assert result["hsv_range"] == {"lower": list(DEFAULT_HSV_RANGE.lower),
                                   "upper": list(DEFAULT_HSV_RANGE.upper)}


# ------------------------------------------------------------------ real data (optional)


def test_agreement_with_dataset_segmentation_on_200_pairs(data_root):
    if not (data_root / "Segmented").is_dir():
        pytest.skip(f"{data_root} has no Segmented/ folder: nothing to check agreement with")
    proc = _run_cli("evaluate", "--data", str(data_root), "--limit", "200", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["n_images"] == 200
    assert result["n_iou_images"] >= 150
    assert result["mean_iou"] >= 0.7
    assert result["empty_fraction"] < 0.02
