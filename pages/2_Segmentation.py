"""Segmentation: HSV thresholding of stained cells, live, with the dataset's own segmentation beside it."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from app.common import guarded, research_notice, setup_page  # noqa: E402

setup_page("Segmentation")
st.title("Segmentation")
st.caption("Stained white cells are kept where hue, saturation and value fall inside the ranges below "
           "(OpenCV units: H 0–179, S and V 0–255), then cleaned with morphology; each connected "
           "component counts as one cell.")
research_notice()


def reset_ranges() -> None:
    from core.segmentation import DEFAULT_HSV_RANGE, DEFAULT_MIN_AREA

    lo, hi = DEFAULT_HSV_RANGE.lower, DEFAULT_HSV_RANGE.upper
    st.session_state.update(seg_h=(lo[0], hi[0]), seg_s=(lo[1], hi[1]), seg_v=(lo[2], hi[2]),
                            seg_min_area=DEFAULT_MIN_AREA, seg_wrap=False)


with guarded("segmenting the image"):
    import pandas as pd

    from core.segmentation import DEFAULT_HSV_RANGE, HSVRange, iou, mask_from_reference
    from core.imageio import read_image

    from app.imaging import decode_for_view, mask_image, segment
    from app.inputs import image_inputs

    if "seg_h" not in st.session_state:
        reset_ranges()
    images = image_inputs("seg", multiple=False, default_sample=True)

    with st.sidebar:
        st.subheader("HSV ranges")
        h = st.slider("Hue (H)", 0, 179, key="seg_h")
        wrap = st.checkbox("Hue wraps through red (keep H outside the range)", key="seg_wrap")
        s = st.slider("Saturation (S)", 0, 255, key="seg_s")
        v = st.slider("Value (V)", 0, 255, key="seg_v")
        min_area = st.number_input("Smallest cell (pixels)", 1, 10_000, key="seg_min_area")
        st.button("Reset to defaults", on_click=reset_ranges, key="seg_reset")
        st.caption(f"Defaults {DEFAULT_HSV_RANGE.lower} – {DEFAULT_HSV_RANGE.upper}: tuned on the dataset "
                   "with `python -m core.segmentation tune`.")

    if not images:
        st.info("Upload a smear image or pick a shipped sample.")
        st.stop()
    img = images[0]
    lower = (h[1], s[0], v[0]) if wrap else (h[0], s[0], v[0])
    upper = (h[0], s[1], v[1]) if wrap else (h[1], s[1], v[1])
    HSVRange(lower, upper)  # validates; a bad combination raises a plain ValueError
    rgb, (w, hgt) = decode_for_view(img.data)
    seg = segment(img.data, lower, upper, int(min_area))

    ref = img.sample.segmented_path if img.sample else None
    ncols = 4 if ref else 3
    cols = st.columns(ncols)
    cols[0].image(rgb, caption=f"{img.name} ({w}×{hgt})", width="stretch")
    cols[1].image(mask_image(seg), caption="our mask", width="stretch")
    cols[2].image(seg.overlay, caption=f"overlay: {seg.count} cell(s)", width="stretch")
    if ref:
        ref_rgb = read_image(ref)
        cols[3].image(ref_rgb, caption="the dataset's own Segmented image", width="stretch")

    m = st.columns(4)
    m[0].metric("Cells", seg.count)
    m[1].metric("Coverage", f"{seg.coverage:.1%}")
    if ref and ref_rgb.shape[:2] == seg.mask.shape:
        m[2].metric("IoU with the dataset's mask", f"{iou(seg.mask, mask_from_reference(ref_rgb)):.2f}")
    if img.sample:
        m[3].metric("Dataset label", img.sample.label)

    cells = pd.DataFrame([{"cell": c.label, "area (px)": c.area, "x": c.bbox[0], "y": c.bbox[1],
                           "width": c.bbox[2], "height": c.bbox[3],
                           "centre x": round(c.centroid[0], 1), "centre y": round(c.centroid[1], 1)}
                          for c in seg.cells],
                         columns=["cell", "area (px)", "x", "y", "width", "height", "centre x", "centre y"])
    st.subheader("Cells")
    st.caption("Bounding boxes (x, y, width, height) in pixels of the image as shown"
               + (" (downscaled for viewing)" if max(w, hgt) > max(rgb.shape[:2]) else "") + ".")
    st.dataframe(cells, hide_index=True, width="stretch", height=min(38 + 35 * max(len(cells), 1), 320))
