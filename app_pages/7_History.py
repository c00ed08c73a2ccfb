"""Case history: signed cases kept (opt-in) in a SQLite file on this computer; search, reopen,
the audit trail, and the report again."""
from __future__ import annotations

import streamlit as st

from app.common import NO_VALUE, _, guarded, show_table

st.title(_("Case history"))
st.caption(_("Signed cases saved on this computer (switch the history on in the sidebar of Case review). "
             "Nothing leaves this computer."))

with guarded(_("reading the case history")):
    import pandas as pd

    from core.case import display_time

    from app.cases import (CASE_KEY, DB_NAME, addenda_section, case_downloads, class_name, decision_label,
                           history_settings, history_store)

    with st.sidebar:
        _on, folder, _keep = history_settings()
    if not (folder / DB_NAME).is_file():
        st.info(_("No case history in {folder} yet. Switch the history on in Case review and sign a case.").format(
            folder=folder))
        st.stop()
    store = history_store(folder)
    search = st.text_input(_("Search by specimen ID or patient reference"), key="hist_search")
    rows = store.list_cases(search=search)
    if not rows:
        st.info(_("No saved case matches."))
        st.stop()
    status_text = {"open": _("open"), "signed": _("signed")}
    show_table(pd.DataFrame([{
        _("specimen ID"): r["specimen_id"], _("patient reference"): r["patient_ref"] or NO_VALUE,
        _("status"): status_text.get(r["status"], r["status"]), _("images"): r["n_images"],
        _("created"): display_time(r["created_at"]), _("signed by"): r["signed_by"] or NO_VALUE,
        _("signed"): display_time(r["signed_at"]) or NO_VALUE, _("case ID"): r["case_id"],
    } for r in rows]))
    labels = {r["case_id"]: f"{r['specimen_id']} · {display_time(r.get('signed_at') or r.get('created_at'))}"
              for r in rows}
    chosen = st.selectbox(_("Open a case"), list(labels), format_func=labels.get, key="hist_pick")
    case = store.load(chosen)
    st.subheader(_("Specimen {specimen}").format(specimen=case.specimen_id))
    st.markdown(_("Signed by {name} on {when}.").format(name=case.signed_by, when=display_time(case.signed_at))
                if case.signed_by else _("Not signed."))
    if case.impression:
        st.markdown(_("**Impression:** {text}").format(text=case.impression))
    show_table(pd.DataFrame([{
        _("file"): im.analysis.file_name, _("suggested"): class_name(im.analysis.suggested_label),
        _("decision"): decision_label(im.review.decision) if im.review else NO_VALUE,
        _("final class"): class_name(im.final_label), _("reason"): im.review.reason if im.review else "",
    } for im in case.images]))
    if case.status.value == "signed":
        addenda_section(case, f"hist_{case.case_id}", store=store)
    elif st.button(_("Continue this review"), type="primary", key=f"hist_continue_{case.case_id}",
                   help=_("An unsigned draft: open it in Case review to decide the remaining images and sign.")):
        st.session_state[CASE_KEY] = case
        st.session_state["case_seen_uploads"] = set()
        st.switch_page("app_pages/6_Case.py")
    case_downloads(case, f"hist_dl_{case.case_id}")
    with st.expander(_("Audit trail")):
        # The database keeps each detail's English sentence as written; the app's own wording is
        # said again in the user's language (the reviewer's typed words stay as typed).
        actions = {"created": _("created"), "details changed": _("details changed"), "image added": _("image added"),
                   "decision changed": _("decision changed"), "image removed": _("image removed"),
                   "impression changed": _("impression changed"), "signed": _("signed"), "addendum": _("addendum")}
        show_table(pd.DataFrame([{
            _("when"): display_time(e["at"]), _("who"): e["who"] or NO_VALUE,
            _("action"): actions.get(e["action"], e["action"]), _("detail"): _(e["detail"]),
        } for e in store.audit_trail(case.case_id)]))
