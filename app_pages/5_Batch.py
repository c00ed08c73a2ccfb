"""Batch: many images (or a .zip of them) -> one table and a CSV; one bad file never stops the batch."""
from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from app.common import IMAGE_TYPES, _, guarded, research_notice, show_table, status_label, status_message, upload_box

st.title(_("Batch"))
st.caption(_("Diagnose many images at once: upload them, or one .zip archive of them (read in memory; "
             "folders, hidden files and odd names inside are skipped)."))
research_notice()

THUMBS = 24  # Grad-CAM thumbnails are shown for at most this many images
STEP = 4  # images per progress-bar update


def run_batch(name, uploads):
    """Diagnose every file of the uploads with a progress bar; returns (records, notes, thumbnail bytes)."""
    from core.predict import diagnose

    from app.batch import plan_batch
    from app.models import get_predictor

    predictor = get_predictor(name)
    plan = plan_batch(uploads)
    records, thumbs = [], []  # thumbs: (index into records, image bytes)
    bar = st.progress(0.0, text=_("{i} of {n} files").format(i=0, n=len(plan)))
    chunk = []
    inputs = plan.iter_inputs()
    for i, (fname, data) in enumerate(inputs, start=1):
        chunk.append((fname, data))
        if len(chunk) == STEP or i == len(plan):
            for rec, (n, d) in zip(diagnose(predictor, chunk), chunk):
                if rec.status.gives_subtype and len(thumbs) < THUMBS and isinstance(d, bytes):
                    thumbs.append((len(records), d))
                records.append(rec)
            chunk = []
            bar.progress(i / len(plan), text=_("{i} of {n} files").format(i=i, n=len(plan)))
    bar.empty()
    return records, plan.notes, thumbs


with guarded(_("running the batch")):
    import pandas as pd

    from core.explain import METHODS
    from core.labels import CLASS_NAMES
    from core.predict import provenance, records_to_csv
    from core.status import Status

    from app.imaging import decode_for_view, heat_overlay
    from app.models import device, get_predictor, model_cam, model_picker, weights_signature

    with st.sidebar:
        name = model_picker("batch_model", container=st.sidebar)
        show_thumbs = st.checkbox(_("Grad-CAM thumbnails (first {n})").format(n=THUMBS), key="batch_thumbs")
        method = st.radio(_("Heat map"), METHODS, key="batch_method", horizontal=True)

    files = upload_box(_("Upload images or a .zip"), types=[*IMAGE_TYPES, "zip"], key="batch_upload",
                       help=_("Images are processed in memory and never stored."))
    if name is None:
        st.stop()
    if not files:
        st.info(_("Upload smear images ({types}) or a .zip of them.").format(types=", ".join(IMAGE_TYPES)))
        st.stop()

    sig = weights_signature(name)
    job = (name, sig, tuple((f.file_id, f.name, f.size) for f in files))
    if st.session_state.get("batch_job") != job:
        uploads = [(f.name, f.getvalue()) for f in files]
        records, notes, thumbs = run_batch(name, uploads)
        st.session_state.update(batch_job=job, batch_records=records, batch_notes=notes, batch_thumbs_data=thumbs,
                                batch_csv=records_to_csv(records, provenance(get_predictor(name))),
                                batch_stamp=time.strftime("%Y%m%d-%H%M"))
    records = st.session_state["batch_records"]
    for note in st.session_state["batch_notes"]:
        st.warning(note)

    table = pd.DataFrame([{"file": r.file, "status": r.status.value, "label": r.label or "",
                           "confidence": r.confidence, "message": status_message(r.status, r.message),
                           "time (s)": round(r.seconds, 3)}
                          for r in records], columns=["file", "status", "label", "confidence", "message", "time (s)"])
    counts = table["status"].value_counts()
    m = st.columns(1 + len(Status))
    m[0].metric(_("Files"), len(table))
    for col, status in zip(m[1:], reversed(Status)):  # ok first
        col.metric(status_label(status), int(counts.get(status.value, 0)))
    show_table(table, height=min(38 + 35 * max(len(table), 1), 420),
               column_config={"confidence": st.column_config.NumberColumn(format="percent"),
                              "message": st.column_config.TextColumn(width="large")})
    st.download_button(_("Download results (CSV)"), st.session_state["batch_csv"],
                       file_name=f"leukoscope_batch_{name}_{st.session_state['batch_stamp']}.csv",
                       mime="text/csv", key="batch_download", on_click="ignore")
    st.caption(_("Model {model} · device {device} · uncertain = below the model's confidence threshold: "
                 "refer for review by a hematologist; out of scope = a smear unlike the images the model was "
                 "validated on, no subtype given; rejected = not a blood smear, no diagnosis given.").format(
        model=name, device=device()))

    if show_thumbs:
        thumbs = st.session_state["batch_thumbs_data"]
        if not thumbs:
            st.info(_("No diagnosed images to explain."))
        for start in range(0, len(thumbs), 6):
            cols = st.columns(6)
            for col, (idx, data) in zip(cols, thumbs[start:start + 6]):
                rec = records[idx]
                with col, guarded(_("drawing the heat map of {name}").format(name=rec.file)):
                    rgb, _size = decode_for_view(data)
                    heat = model_cam(name, sig, data, CLASS_NAMES.index(rec.label), method)
                    st.image(heat_overlay(rgb, heat, 0.45), width="stretch",
                             caption=f"{Path(rec.file).name}: {rec.label} {rec.confidence:.0%}")
