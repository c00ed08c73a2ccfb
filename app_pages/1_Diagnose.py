"""Diagnose: one or more smear images -> status, class, confidence, segmentation, Grad-CAM."""
from __future__ import annotations

import streamlit as st

from app.common import _, guarded, research_notice, status_label, status_message

st.title(_("Diagnose"))
research_notice()


def show_cam(name, sig, member, img, target, method, opacity, rgb, key, probs=None, threshold=None, stain="none"):
    """One member's heat map for `target` beside (optionally) its probabilities."""
    from core.labels import CLASS_NAMES

    from app.charts import probability_bars
    from app.imaging import heat_colour, heat_overlay
    from app.models import cam_heat

    heat = cam_heat(name, sig, member, img.data, CLASS_NAMES.index(target), method, stain)
    cols = st.columns([1, 1, 1.5])
    cols[0].image(heat_overlay(rgb, heat, opacity), caption=f"{method}: {target}", width="stretch")
    cols[1].image(heat_colour(heat), caption=_("heat map alone"), width="stretch")
    if probs:
        cols[2].plotly_chart(probability_bars(probs, threshold, title=_("{member} probabilities").format(member=member),
                                              height=210),
                             key=f"{key}_bars", config={"displayModeBar": False})
    else:
        cols[2].caption(_("Red = regions that raised the score of the target class most; the map is "
                          "normalised per image, so compare shapes, not absolute colours."))


def show_image(i, img, name, sig, predictor, method, opacity, device, views=1, stain="none"):
    from core.labels import CLASS_NAMES
    from core.status import Status

    from app.charts import probability_bars
    from app.imaging import decode_for_view, white_cell_overlay, white_cells
    from app.models import diagnose_one

    rec = diagnose_one(name, sig, img.name, img.data, views, stain)
    truth = _(" · dataset label: {label}").format(label=img.sample.label) if img.sample else ""
    st.markdown(f"#### {img.name}")
    timing = (_("Status: **{status}** · ran on {device} in {ms} ms").format(
                  status=status_label(rec.status), device=device, ms=f"{rec.seconds * 1000:.0f}")
              + (_(" · average of 8 rotations/flips") if views == 8 else "")
              + (_(" · colours matched to the training images (Reinhard)") if stain != "none" else "") + truth)
    if rec.status is Status.ERROR:
        st.error(_("No diagnosis: {message}").format(message=rec.message))
        st.caption(_("Status: **{status}**").format(status=status_label(rec.status)) + truth)
        return
    rgb, (w, h) = decode_for_view(img.data)
    if not rec.status.gives_subtype:  # rejected or out of scope: no class, no heat map
        cols = st.columns([1, 3])
        if rec.status is Status.OUT_OF_SCOPE:  # show what was (not) found
            cols[0].image(white_cell_overlay(img.data), caption=_("original ({w}×{h}), white cells outlined: "
                                                                  "{n}").format(w=w, h=h, n=rec.white_cells),
                          width="stretch")
        else:
            cols[0].image(rgb, caption=_("original ({w}×{h})").format(w=w, h=h), width="stretch")
        (cols[1].error if rec.status is Status.REJECTED else cols[1].warning)(status_message(rec.status, rec.message))
        cols[1].caption(timing + (_(" · smear score {score}").format(score=f"{rec.smear_score:.2f}")
                                  if rec.smear_score is not None else "")
                        + (_(" · distance to the training images {ratio}× the validated limit").format(
                            ratio=f"{rec.scope_ratio:.2f}") if rec.scope_ratio is not None else ""))
        return
    if rec.status is Status.OK:
        st.success(_("**{label}** — confidence {confidence} (threshold {threshold})").format(
            label=rec.label, confidence=f"{rec.confidence:.1%}", threshold=f"{predictor.threshold:.0%}"))
    else:
        st.warning(_("**Uncertain — review by a hematologist.** Most likely **{label}** at {confidence}, below "
                     "this model's threshold of {threshold}.").format(
            label=rec.label, confidence=f"{rec.confidence:.1%}", threshold=f"{predictor.threshold:.0%}"))
    st.caption(timing)

    cells = white_cells(img.data)
    size = (_(", median {px} px across").format(px=f"{rec.white_cell_diameter_px:.0f}")
            if rec.white_cell_diameter_px else "")
    cols = st.columns([1, 1, 1, 1.6])
    cols[0].image(rgb, caption=_("original ({w}×{h})").format(w=w, h=h), width="stretch")
    cols[1].image(white_cell_overlay(img.data), caption=_("white cells found: {n}").format(n=rec.white_cells) + size,
                  width="stretch")
    cols[2].image(cells.mask, caption=_("nuclei mask ({share} of the image)").format(
        share=f"{(cells.mask > 0).mean():.0%}"), width="stretch")
    cols[3].plotly_chart(probability_bars(rec.probabilities, predictor.threshold),
                         key=f"dx_bars_{i}_{img.digest}", config={"displayModeBar": False})

    key = f"dx_{name}_{img.digest}_{i}"
    target = st.selectbox(_("Explain which class (heat map target)"), CLASS_NAMES,
                          index=CLASS_NAMES.index(rec.label), key=f"{key}_target",
                          help=_("Default: the predicted class."))
    if not predictor.is_ensemble:
        show_cam(name, sig, predictor.members[0].name, img, target, method, opacity, rgb, key, stain=stain)
        return
    st.caption(_("Ensemble: each member's probabilities and heat map (the diagnosis above is their soft vote)."))
    tabs = st.tabs([m.name for m in predictor.members])
    for j, (tab, m) in enumerate(zip(tabs, predictor.members)):
        with tab:
            show_cam(name, sig, m.name, img, target, method, opacity, rgb, f"{key}_m{j}",
                     probs=rec.members.get(m.name), threshold=None, stain=stain)


with guarded(_("diagnosing")):
    from core.explain import METHODS
    from core.stain import DEFAULT_ON as STAIN_DEFAULT_ON, StainMethod

    from app.inputs import image_inputs
    from app.models import device, get_predictor, model_picker, weights_signature

    with st.sidebar:
        name = model_picker("dx_model", container=st.sidebar)
        method = st.radio(_("Heat map"), METHODS, key="dx_method", horizontal=True)
        opacity = st.slider(_("Heat-map opacity"), 0.0, 1.0, 0.45, 0.05, key="dx_opacity")
        views = 8 if st.checkbox(
            _("Average over 8 rotations/flips"), key="dx_views",
            help=_("Test-time augmentation: 8x the compute. The benchmark lists its accuracy separately; "
                   "the default model was chosen and calibrated with one view.")) else 1
        stain = StainMethod.REINHARD.value if st.checkbox(
            _("Match stain colours to the training images"), value=STAIN_DEFAULT_ON, key="dx_stain",
            help=_("Reinhard normalisation (torchstain) before the network, for smears stained or "
                   "photographed differently. The Benchmark page shows its measured effect; the model was "
                   "not trained on normalised images.")) else StainMethod.NONE.value

    images = image_inputs("dx")
    if name is None:
        st.stop()
    if not images:
        st.info(_("Upload one or more smear images, or pick a shipped sample, to get a diagnosis. To review, "
                  "sign and file them as a case, use the Case review page."))
        st.stop()

    predictor = get_predictor(name)
    sig = weights_signature(name)
    dev = device()
    st.caption(_("Model **{model}** · uncertain below {threshold} confidence · temperature {temperature} · "
                 "loaded in {seconds} s · device: {device}").format(
        model=predictor.display, threshold=f"{predictor.threshold:.0%}", temperature=f"{predictor.temperature:.2f}",
        seconds=f"{predictor.load_seconds:.1f}", device=dev))
    for i, img in enumerate(images):
        with st.container(border=True), guarded(_("showing {name}").format(name=img.name)):
            show_image(i, img, name, sig, predictor, method, opacity, dev, views, stain)
