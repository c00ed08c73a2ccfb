"""Compare models: one image through every available model, side by side."""
from __future__ import annotations

import streamlit as st

from app.common import _, guarded, plain_message, research_notice, show_table, status_label, status_message

st.title(_("Compare models"))
st.caption(_("One image through every model with weights on this machine: prediction, confidence, "
           "Grad-CAM of the predicted class, and time."))
research_notice()

GRID = 3


def card(name, img, method, opacity, rgb, device):
    """One model's result in the current column; returns a row for the summary table."""
    from core.labels import CLASS_NAMES
    from core.status import Status

    from app.imaging import heat_overlay
    from app.models import diagnose_one, display_name, get_predictor, model_cam, weights_signature

    st.markdown(f"**{display_name(name)}**")
    row = {"model": name, "status": Status.ERROR.value, "label": "", "confidence": None, "seconds": None,
           "load_seconds": None, "message": ""}
    try:
        predictor = get_predictor(name)
        sig = weights_signature(name)
        rec = diagnose_one(name, sig, img.name, img.data)
    except Exception as exc:  # noqa: BLE001 - one broken model must not hide the others
        row["message"] = plain_message(exc, _("running {name}").format(name=name))
        st.error(row["message"])
        return row
    row.update(status=rec.status.value, label=rec.label or "", confidence=rec.confidence, seconds=rec.seconds,
               load_seconds=predictor.load_seconds, message=rec.message)
    if not rec.status.gives_subtype:  # error, rejected, out of scope: no class to show or explain
        (st.warning if rec.status is Status.OUT_OF_SCOPE else st.error)(status_message(rec.status, rec.message))
        return row
    text = f"{rec.label} · {rec.confidence:.1%}"
    ok = rec.status is Status.OK
    (st.success if ok else st.warning)(text if ok else _("{result} (uncertain)").format(result=text))
    k = CLASS_NAMES.index(rec.label)
    heat = model_cam(name, sig, img.data, k, method)
    st.image(heat_overlay(rgb, heat, opacity), width="stretch",
             caption=f"{method}: {rec.label}" + (_(" (mean of members)") if predictor.is_ensemble else ""))
    st.caption(_("Status: {status} · {ms} ms inference · loaded in {load} s · {device}").format(
        status=status_label(rec.status), ms=f"{rec.seconds * 1000:.0f}", load=f"{predictor.load_seconds:.1f}",
        device=device))
    return row


with guarded(_("comparing the models")):
    import pandas as pd

    from core.explain import METHODS

    from app.imaging import decode_for_view
    from app.inputs import image_inputs
    from app.models import device, display_name, model_lists

    avail, missing = model_lists()
    # ?models=a,b in the URL preselects those (a shareable comparison); otherwise every model here.
    wanted = [n for n in (st.query_params.get("models") or "").split(",") if n in avail]
    with st.sidebar:
        chosen = st.multiselect(_("Models"), avail, default=wanted or avail, format_func=display_name,
                                key="cmp_models",
                                help=_("Every model with weights on this machine; each is loaded once."))
        method = st.radio(_("Heat map"), METHODS, key="cmp_method", horizontal=True)
        opacity = st.slider(_("Heat-map opacity"), 0.0, 1.0, 0.45, 0.05, key="cmp_opacity")
        if missing:
            st.caption(_("{n} registry models have no weights here; see the front page.").format(n=len(missing)))

    images = image_inputs("cmp", multiple=False, default_sample=True)
    if not avail:
        st.error(_("No trained model weights on this machine; see the front page for how to get them."))
        st.stop()
    if not images:
        st.info(_("Upload a smear image or pick a shipped sample."))
        st.stop()
    if not chosen:
        st.info(_("Choose at least one model in the sidebar."))
        st.stop()
    img = images[0]
    rgb, (w, h) = decode_for_view(img.data)  # a bad file stops here with its plain message
    left, right = st.columns([1, 3])
    left.image(rgb, caption=f"{img.name} ({w}×{h})", width="stretch")
    if img.sample:
        left.markdown(_("Dataset label: **{label}**").format(label=img.sample.label))
    dev = device()

    rows = []
    with right:
        for start in range(0, len(chosen), GRID):
            cols = st.columns(GRID)
            for col, name in zip(cols, chosen[start:start + GRID]):
                with col, st.container(border=True):
                    rows.append(card(name, img, method, opacity, rgb, dev))
    st.session_state["cmp_results"] = rows
    if rows:
        table = pd.DataFrame(rows)
        table["display"] = [display_name(n) for n in table["model"]]
        table["status"] = [status_label(x) for x in table["status"]]
        st.subheader(_("Summary"))
        show_table(table[["display", "status", "label", "confidence", "seconds", "load_seconds", "message"]],
                   column_config={"display": st.column_config.TextColumn(_("model")),
                                  "status": st.column_config.TextColumn(_("status")),
                                  "label": st.column_config.TextColumn(_("label")),
                                  "confidence": st.column_config.NumberColumn(_("confidence"), format="percent"),
                                  "seconds": st.column_config.NumberColumn(_("inference s"), format="%.3f"),
                                  "load_seconds": st.column_config.NumberColumn(_("load s"), format="%.1f"),
                                  "message": st.column_config.TextColumn(_("message"))})
