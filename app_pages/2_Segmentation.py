"""Segmentation: the white cells found in a smear (outlines, count, sizes), and the HSV threshold
tools that reproduce the dataset's own segmentation, for researchers."""
from __future__ import annotations

import streamlit as st

from app.common import _, guarded, research_notice, show_table

st.title(_("Segmentation"))
st.caption(_("White cells are found by the colour of their nuclear stain (Giemsa, Wright, Leishman, "
           "May-Grünwald-Giemsa), measured against the slide's own background, so red cells, their rims and "
           "platelets are left out whatever the lab. Below, the HSV threshold tools reproduce the dataset's own "
           "segmentation, for research."))
research_notice()


def reset_ranges() -> None:
    from core.segmentation import DEFAULT_HSV_RANGE, DEFAULT_MIN_AREA

    lo, hi = DEFAULT_HSV_RANGE.lower, DEFAULT_HSV_RANGE.upper
    st.session_state.update(seg_h=(lo[0], hi[0]), seg_s=(lo[1], hi[1]), seg_v=(lo[2], hi[2]),
                            seg_min_area=DEFAULT_MIN_AREA, seg_wrap=False)


def headings() -> dict:
    """Translated headings for the tables' columns (the column keys themselves stay English)."""
    names = {"cell": _("cell"), "diameter (px)": _("diameter (px)"), "area (px)": _("area (px)"),
             "width": _("width"), "height": _("height"), "at the edge": _("at the edge"),
             "component": _("component"), "centre x": _("centre x"), "centre y": _("centre y")}
    return {k: st.column_config.Column(v) for k, v in names.items()}


def px(value: float | None, scale: float) -> str:
    return "—" if value is None else f"{value * scale:.0f} px"


with guarded(_("segmenting the image")):
    import pandas as pd

    from core.cells import training_reference
    from core.imageio import read_image
    from core.segmentation import DEFAULT_HSV_RANGE, HSVRange, iou, mask_from_reference

    from app.imaging import decode_for_view, mask_image, segment, view_scale, white_cell_overlay, white_cells
    from app.inputs import image_inputs

    if "seg_h" not in st.session_state:
        reset_ranges()
    images = image_inputs("seg", multiple=False, default_sample=True)

    with st.sidebar:
        st.subheader(_("HSV ranges (research)"))
        h = st.slider(_("Hue (H)"), 0, 179, key="seg_h")
        wrap = st.checkbox(_("Hue wraps through red (keep H outside the range)"), key="seg_wrap")
        s = st.slider(_("Saturation (S)"), 0, 255, key="seg_s")
        v = st.slider(_("Value (V)"), 0, 255, key="seg_v")
        min_area = st.number_input(_("Smallest component (pixels)"), 1, 10_000, key="seg_min_area")
        st.button(_("Reset to defaults"), on_click=reset_ranges, key="seg_reset")
        st.caption(_("Defaults {lower} – {upper}: tuned on the dataset with `python -m core.segmentation_tools tune`. "
                     "They affect the HSV section only, not the white cells.").format(
            lower=DEFAULT_HSV_RANGE.lower, upper=DEFAULT_HSV_RANGE.upper))

    if not images:
        st.info(_("Upload a smear image or pick a shipped sample."))
        st.stop()
    img = images[0]
    rgb, (w, hgt) = decode_for_view(img.data)
    scale = view_scale(img.data)
    downscaled = scale > 1.0

    # ---- White cells ----------------------------------------------------------------------
    st.subheader(_("White cells"))
    cells = white_cells(img.data)
    cols = st.columns(3)
    cols[0].image(rgb, caption=f"{img.name} ({w}×{hgt})", width="stretch")
    cols[1].image(white_cell_overlay(img.data), caption=_("white cells: {n}").format(n=cells.count), width="stretch")
    cols[2].image(cells.mask, caption=_("white-cell mask (nuclei)"), width="stretch")
    m = st.columns(4)
    m[0].metric(_("White cells"), cells.count)
    m[1].metric(_("Median diameter"), px(cells.median_diameter_px, scale))
    m[2].metric(_("Red-cell diameter"), px(cells.rbc_diameter_px, scale),
                help=_("The ruler: red cells are about 7.5 µm across in every lab. '—' when none could be measured."))
    m[3].metric(_("Smallest counted"), px(cells.min_diameter_px, scale),
                help=_("Stained objects smaller than this (platelets, specks) are not counted as white cells."))
    ref = training_reference()
    ref_d = ref.get("white_cell_diameter_px") or {}
    if cells.count == 0:
        st.warning(_("No white cell in view: only red cells, platelets or background were found."))
    ref_rbc = (ref.get("rbc_diameter_px") or {}).get("median")
    if ref_d and ref_rbc:
        st.caption(_("Sizes in pixels of the original image. The training hospital's white cells measure "
                     "{median} px across (5–95%: {p5}–{p95} px) in its 224×224 fields, its red cells {rbc} px: "
                     "a very different size here means another magnification. Diameters are those of a disc of "
                     "the outlined area; cells cut by the image edge are marked and left out of the median when "
                     "whole cells exist.").format(median=f"{ref_d['median']:.0f}", p5=f"{ref_d['p5']:.0f}",
                                                  p95=f"{ref_d['p95']:.0f}", rbc=f"{ref_rbc:.0f}"))
    table = pd.DataFrame([{"cell": i, "diameter (px)": round(c.diameter_px * scale, 1),
                           "area (px)": round(c.area_px * scale * scale), "x": round(c.bbox[0] * scale),
                           "y": round(c.bbox[1] * scale), "width": round(c.bbox[2] * scale),
                           "height": round(c.bbox[3] * scale), "at the edge": c.touches_border}
                          for i, c in enumerate(cells.cells, start=1)],
                         columns=["cell", "diameter (px)", "area (px)", "x", "y", "width", "height", "at the edge"])
    show_table(table, height=min(38 + 35 * max(len(table), 1), 320),
               column_config=headings())

    # ---- HSV threshold (research) -----------------------------------------------------------
    st.subheader(_("HSV threshold (research)"))
    st.caption(_("Pixels whose hue, saturation and value fall inside the sidebar's ranges (OpenCV units: H 0–179, "
                 "S and V 0–255), cleaned with morphology; each connected component is counted. This reproduces "
                 "the dataset authors' segmentation: it keeps red-cell rims on some stains and misses pale magenta "
                 "blasts, so it is not used for the white-cell count above."))
    lower = (h[1], s[0], v[0]) if wrap else (h[0], s[0], v[0])
    upper = (h[0], s[1], v[1]) if wrap else (h[1], s[1], v[1])
    HSVRange(lower, upper)  # validates; a bad combination raises a plain ValueError
    seg = segment(img.data, lower, upper, int(min_area))

    ref_path = img.sample.segmented_path if img.sample else None
    cols = st.columns(3)
    cols[0].image(mask_image(seg), caption=_("HSV mask"), width="stretch")
    cols[1].image(seg.overlay, caption=_("HSV overlay: {n} component(s)").format(n=seg.count), width="stretch")
    if ref_path:
        ref_rgb = read_image(ref_path)
        cols[2].image(ref_rgb, caption=_("the dataset's own Segmented image"), width="stretch")

    m = st.columns(4)
    m[0].metric(_("HSV components"), seg.count)
    m[1].metric(_("HSV coverage"), f"{seg.coverage:.1%}")
    if ref_path and ref_rgb.shape[:2] == seg.mask.shape:
        m[2].metric(_("IoU with the dataset's mask"), f"{iou(seg.mask, mask_from_reference(ref_rgb)):.2f}")
    if img.sample:
        m[3].metric(_("Dataset label"), img.sample.label)

    comps = pd.DataFrame([{"component": c.label, "area (px)": c.area, "x": c.bbox[0], "y": c.bbox[1],
                           "width": c.bbox[2], "height": c.bbox[3],
                           "centre x": round(c.centroid[0], 1), "centre y": round(c.centroid[1], 1)}
                          for c in seg.cells],
                         columns=["component", "area (px)", "x", "y", "width", "height", "centre x", "centre y"])
    st.caption(_("Bounding boxes (x, y, width, height) in pixels of the image as shown (downscaled for viewing).")
               if downscaled else _("Bounding boxes (x, y, width, height) in pixels of the image as shown."))
    show_table(comps, height=min(38 + 35 * max(len(comps), 1), 320),
               column_config=headings())
