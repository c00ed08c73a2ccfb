"""Case review: a specimen's images, the model's suggestion for each, the reviewer's decision,
sign-off, the PDF report, and (opt-in) the local case history."""
from __future__ import annotations

import streamlit as st

from app.common import (NO_VALUE, _, guarded, plain_message, research_notice, status_label,
                        status_message, upload_box)

st.title(_("Case review"))
st.caption(_("The model pre-classifies each image; you confirm or reclassify it (with a reason) or mark it "
             "unusable. The case can be signed once every image has a decision; a signed case cannot be changed."))
research_notice()


def new_case_form() -> None:
    from core.case import Case, CaseError

    from app.cases import CASE_KEY

    with st.form("case_new"):
        st.subheader(_("New case"))
        specimen = st.text_input(_("Specimen ID"), key="case_specimen", help=_("Required, e.g. the lab's accession number."))
        patient = st.text_input(_("Patient reference (optional)"), key="case_patient",
                                help=_("Whatever your lab uses to find the patient; typed by you, never read from images."))
        if st.form_submit_button(_("Create the case"), type="primary", key="case_create"):
            try:
                st.session_state[CASE_KEY] = Case(specimen_id=specimen, patient_ref=patient)
                st.session_state["case_seen_uploads"] = set()
                st.rerun()
            except CaseError as exc:
                st.error(plain_message(exc, _("reviewing the case")))


def add_uploads(case, name: str, keep_images: bool) -> None:
    """Analyse every new upload into the case (the same image twice is added once)."""
    from core.case import analyse_image

    from app.models import get_predictor

    files = upload_box(_("Add smear images to this case"), key=f"case_upload_{case.case_id}",
                       help=_("JPEG, PNG, TIFF, BMP or WebP. Images are processed in memory."))
    seen = st.session_state.setdefault("case_seen_uploads", set())
    new = [f for f in files or [] if f.file_id not in seen]
    if not new:
        return
    predictor = get_predictor(name)
    known = {im.analysis.image_sha256 for im in case.images}
    import hashlib

    for f in new:
        seen.add(f.file_id)
        data = f.getvalue()
        if hashlib.sha256(data).hexdigest() in known:
            st.info(_("{name} is already in this case; it was not added again.").format(name=f.name))
            continue
        with st.spinner(_("Analysing {name}…").format(name=f.name)):
            item = analyse_image(predictor, f.name, data, keep_image=keep_images)
        case.add(item)
        known.add(item.analysis.image_sha256)


def review_image(case, i: int, item) -> None:
    """One image: thumbnails, the suggestion, and the decision form (while the case is open)."""
    from core.case import CaseError, Decision

    from app.cases import class_choices, class_name, decision_label

    a = item.analysis
    cols = st.columns([1, 1, 2.2])
    if item.thumbnail:
        cols[0].image(item.thumbnail, caption=a.file_name, width="stretch")
    else:
        cols[0].markdown(f"**{a.file_name}**")
    if item.cam_thumbnail:
        cols[1].image(item.cam_thumbnail, caption=_("Grad-CAM of the suggested class"), width="stretch")
    with cols[2]:
        st.markdown(_("**Image {n}** · status: **{status}**").format(n=i + 1, status=status_label(a.status)))
        if a.suggested_label:
            st.markdown(_("Model's suggestion: **{label}** ({confidence})").format(
                label=class_name(a.suggested_label), confidence=f"{a.confidence:.1%}"))
        if a.message:
            st.caption(status_message(a.status, a.message))
        if item.review:
            r = item.review
            st.success(_("Decision: {decision} → {label}").format(decision=decision_label(r.decision),
                                                                  label=class_name(r.final_label))
                       + (_(" · reason: {reason}").format(reason=r.reason) if r.reason else ""))
        if case.status.value != "open":
            return
        options = [d.value for d in Decision if a.suggested_label or d is not Decision.CONFIRMED]
        with st.form(f"case_decide_{case.case_id}_{i}"):
            decision = st.radio(_("Your decision"), options, horizontal=True, key=f"case_dec_{case.case_id}_{i}",
                                format_func=decision_label)
            choices = class_choices()  # preselect the first class that is not the suggestion
            first_other = next(j for j, c in enumerate(choices) if c != a.suggested_label)
            label = st.selectbox(_("Final class (when reclassifying)"), choices, index=first_other,
                                 format_func=class_name, key=f"case_cls_{case.case_id}_{i}")
            reason = st.text_input(_("Reason (required when reclassifying)"), key=f"case_why_{case.case_id}_{i}")
            if st.form_submit_button(_("Save decision"), key=f"case_save_{case.case_id}_{i}"):
                try:
                    case.decide(i, decision, label if decision == Decision.RECLASSIFIED.value else None, reason)
                    st.rerun()
                except CaseError as exc:
                    st.error(plain_message(exc, _("reviewing the case")))


def summary_and_sign(case, history_on: bool, folder, keep_images: bool) -> None:
    from core.case import CaseError, display_time

    from app.cases import addenda_section, class_name, history_store

    s = case.summary()
    st.subheader(_("Case summary"))
    m = st.columns(5)
    m[0].metric(_("Images"), s["images"])
    m[1].metric(_("Undecided"), s["undecided"])
    m[2].metric(_("Reclassified"), s["reclassified"])
    m[3].metric(_("Unusable"), s["unusable"])
    m[4].metric(_("Agreement with the model"), NO_VALUE if s["agreement"] is None else f"{s['agreement']:.0%}")
    st.markdown(" · ".join(f"{class_name(c)}: **{n}**" for c, n in s["per_class"].items()))
    if case.status.value != "open":
        st.success(_("Signed by {name} on {when}.").format(name=case.signed_by, when=display_time(case.signed_at)))
        if case.impression:
            st.markdown(_("**Impression:** {text}").format(text=case.impression))
        saved = st.session_state.get("case_saved") == (case.case_id, str(folder))
        addenda_section(case, f"case_{case.case_id}", store=history_store(folder) if saved else None)
        return
    case_impression = st.text_area(_("Impression (the case-level conclusion you sign)"), value=case.impression,
                                   key=f"case_impression_{case.case_id}")
    if case_impression != case.impression:
        case.impression = case_impression
    with st.form(f"case_sign_{case.case_id}"):
        reviewer = st.text_input(_("Reviewer's name"), key="case_reviewer")
        ready = case.can_sign
        if not ready:
            st.caption(_("Decide every image to sign: {n} left.").format(n=len(case.undecided()) or "—"))
        if st.form_submit_button(_("Sign the case"), type="primary", disabled=not ready, key="case_sign"):
            try:
                case.sign(reviewer)
            except CaseError as exc:
                st.error(plain_message(exc, _("reviewing the case")))
            else:
                if history_on:
                    save_to_history(case, folder, keep_images)
                st.rerun()


def save_draft(case, folder, keep_images: bool) -> None:
    """With the history on, an open case is saved as a draft whenever it has changed, so a reload,
    a closed tab or a crash loses no decision; Case history reopens it. The audit trail names the
    computer's user account until a reviewer signs."""
    import getpass
    import json

    from core.history import HistoryError

    from app.cases import history_store

    state = (case.case_id, json.dumps(case.to_dict(keep_images=False), sort_keys=True), keep_images)
    if st.session_state.get("case_draft_state") == state:
        return
    try:
        who = getpass.getuser()
    except (OSError, KeyError):  # no user name from the environment or the password database
        who = "unknown"
    try:
        history_store(folder).save(case, who=who, keep_images=keep_images)
    except (HistoryError, OSError, ValueError) as exc:
        st.warning(_("The draft could not be saved to the history folder: {error}").format(
            error=plain_message(exc, _("saving the case")) if isinstance(exc, HistoryError)
            else getattr(exc, "strerror", None) or exc))
        return
    st.session_state["case_draft_state"] = state


def save_to_history(case, folder, keep_images: bool) -> bool:
    """Write the signed case to the history; on failure say why in one sentence and keep the case
    in this session (the Case review page then offers to try again)."""
    from core.history import HistoryError

    from app.cases import history_store

    try:
        history_store(folder).save(case, who=case.signed_by, keep_images=keep_images)
    except (HistoryError, OSError, ValueError) as exc:
        st.session_state["case_save_error"] = _(
            "The case is signed but could not be saved to the history folder: {error}").format(
            error=plain_message(exc, _("saving the case")) if isinstance(exc, HistoryError)
            else getattr(exc, "strerror", None) or exc)
        return False
    st.session_state.pop("case_save_error", None)
    st.session_state["case_saved"] = (case.case_id, str(folder))
    return True


with guarded(_("showing the case")):
    from app.cases import CASE_KEY, case_downloads, history_settings
    from app.models import model_picker

    with st.sidebar:
        name = model_picker("case_model", container=st.sidebar)
        history_on, folder, keep_images = history_settings()

    case = st.session_state.get(CASE_KEY)
    if case is None:
        new_case_form()
        st.stop()
    top = st.columns([4, 1])
    top[0].markdown(_("### Specimen {specimen}").format(specimen=case.specimen_id)
                    + (_(" · patient {ref}").format(ref=case.patient_ref) if case.patient_ref else "")
                    + (_(" · status: **signed**") if case.status.value == "signed" else _(" · status: **open**")))
    if top[1].button(_("New case"), key="case_reset"):
        st.session_state.pop(CASE_KEY, None)
        st.rerun()
    if case.status.value == "open" and name is not None:
        add_uploads(case, name, keep_images and history_on)
    if case.status.value == "open" and history_on:
        save_draft(case, folder, keep_images)
        st.caption(_("Draft saved in the case history as you go; reopen it there after a reload."))
    if not case.images:
        st.info(_("Add the specimen's smear images above."))
        st.stop()
    for i, item in enumerate(case.images):
        with st.container(border=True), guarded(_("showing {name}").format(name=item.analysis.file_name)):
            review_image(case, i, item)
    summary_and_sign(case, history_on, folder, keep_images)
    if case.status.value == "open" and history_on:
        save_draft(case, folder, keep_images)  # the impression typed in this run
    if case.status.value == "signed":
        saved = st.session_state.get("case_saved")
        if saved and saved[0] == case.case_id:
            st.caption(_("Saved to the case history in {folder}.").format(folder=saved[1]))
        elif history_on:
            if st.session_state.get("case_save_error"):
                st.error(st.session_state["case_save_error"])
            if st.button(_("Save to the case history"), key="case_save_history"):
                save_to_history(case, folder, keep_images)
                st.rerun()
    case_downloads(case, f"case_dl_{case.case_id}")
