"""Case history: signed cases kept (opt-in) in a SQLite file on this computer; search, reopen,
the audit trail, and the report again."""
from __future__ import annotations

import streamlit as st

from app.common import NO_VALUE, _, guarded, setup_page, show_table

setup_page("Case history")
st.title(_("Case history"))
st.caption(_("Signed cases saved on this computer (switch the history on in the sidebar of Case review). "
             "Nothing leaves this computer."))

with guarded(_("reading the case history")):
    import pandas as pd

    from app.cases import DB_NAME, case_downloads, class_name, decision_label, history_settings, history_store

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
    table = pd.DataFrame(rows)
    show_table(table)
    labels = {r["case_id"]: f"{r['specimen_id']} · {r.get('signed_at') or r.get('created_at')}" for r in rows}
    chosen = st.selectbox(_("Open a case"), list(labels), format_func=labels.get, key="hist_pick")
    case = store.load(chosen)
    st.subheader(_("Specimen {specimen}").format(specimen=case.specimen_id))
    st.markdown(_("Signed by {name} on {when}.").format(name=case.signed_by, when=case.signed_at)
                if case.signed_by else _("Not signed."))
    if case.impression:
        st.markdown(_("**Impression:** {text}").format(text=case.impression))
    show_table(pd.DataFrame([{
        _("file"): im.analysis.file_name, _("suggested"): class_name(im.analysis.suggested_label),
        _("decision"): decision_label(im.review.decision) if im.review else NO_VALUE,
        _("final class"): class_name(im.final_label), _("reason"): im.review.reason if im.review else "",
    } for im in case.images]))
    case_downloads(case, f"hist_dl_{case.case_id}")
    with st.expander(_("Audit trail")):
        show_table(pd.DataFrame(store.audit_trail(case.case_id)))
