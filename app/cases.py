"""The case under review and the opt-in case history, as the pages use them.

The case lives in `st.session_state` (in memory, like every upload) until the reviewer signs
it; only then, and only if the user switched the history on, is it written to the SQLite file
in the folder the user chose (default: the platform's user-data folder, never the project).
"""
from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from app.common import _

CASE_KEY = "case"  # the open core.case.Case
HISTORY_ON_KEY = "history_on"
HISTORY_DIR_KEY = "history_dir"
KEEP_IMAGES_KEY = "history_keep_images"
HISTORY_ENV = "LEUKOSCOPE_HISTORY"  # a default history folder for this machine (an install may set it)
DB_NAME = "leukoscope-cases.sqlite"


def default_folder() -> str:
    from core.history import default_history_dir

    return os.environ.get(HISTORY_ENV) or str(default_history_dir())


def history_settings(container=st.sidebar) -> tuple[bool, Path, bool]:
    """(history on?, folder, keep images?) from the sidebar; off by default."""
    with container.expander(_("Case history on this computer"), expanded=bool(st.session_state.get(HISTORY_ON_KEY))):
        on = st.checkbox(_("Save signed cases to a history file"), key=HISTORY_ON_KEY,
                         help=_("Off by default: nothing is written anywhere. On: each signed case goes into a "
                                "SQLite file in the folder below, with an audit trail."))
        if HISTORY_DIR_KEY not in st.session_state:
            st.session_state[HISTORY_DIR_KEY] = default_folder()
        folder = st.text_input(_("History folder"), key=HISTORY_DIR_KEY)
        keep = st.checkbox(_("Keep images"), key=KEEP_IMAGES_KEY,
                           help=_("Store the uploaded images in the history too (otherwise only thumbnails, "
                                  "results and decisions)."))
    return on, Path(folder).expanduser(), keep


def history_store(folder: Path):
    """The case store in `folder` (created on first use)."""
    from core.history import CaseStore

    return CaseStore(folder / DB_NAME)


def class_choices() -> list[str]:
    from core.labels import CLASS_FOLDERS

    return list(CLASS_FOLDERS)


def class_name(folder: str | None) -> str:
    from core.labels import DISPLAY_NAMES

    return DISPLAY_NAMES.get(folder, "—") if folder else "—"


def decision_label(decision) -> str:
    from core.case import Decision

    return {Decision.CONFIRMED: _("confirmed"), Decision.RECLASSIFIED: _("reclassified"),
            Decision.UNUSABLE: _("unusable")}[Decision(decision)]


def addenda_section(case, key: str, store=None) -> None:
    """A signed case's addenda, and a form to add one: written to `store` (the history) when the
    case is saved there, else to the case in this session (its downloads then include it)."""
    from core.case import CaseError, display_time
    from core.history import HistoryError

    from app.common import plain_message

    st.subheader(_("Addenda"))
    st.caption(_("A signed case never changes. A correction or a later finding is added as an addendum, with "
                 "your name and the time, and printed with the report."))
    for addendum in case.addenda:
        st.markdown(_("**Addendum by {name}, {when}:** {text}").format(
            name=addendum.by, when=display_time(addendum.at), text=addendum.text))
    with st.form(f"{key}_addendum", clear_on_submit=True):
        text = st.text_area(_("Addendum"), key=f"{key}_addendum_text")
        who = st.text_input(_("Your name"), key=f"{key}_addendum_by")
        if st.form_submit_button(_("Add the addendum"), key=f"{key}_addendum_add"):
            try:
                if store is not None:
                    store.add_addendum(case, text, who)
                else:
                    case.add_addendum(text, who)
            except (CaseError, HistoryError) as exc:
                st.error(plain_message(exc, _("adding the addendum")))
            else:
                st.rerun()


def case_downloads(case, key: str) -> None:
    """PDF report (in the chosen language), JSON and CSV of a case."""
    from core.report import render_pdf

    from app.common import current_language

    cols = st.columns(3)
    with st.spinner(_("Writing the report…")):
        pdf = render_pdf(case, lang=current_language().value)
    stem = f"leukoscope-{safe_name(case.specimen_id)}"
    cols[0].download_button(_("Download the report (PDF)"), pdf, file_name=f"{stem}.pdf", mime="application/pdf",
                            key=f"{key}_pdf", on_click="ignore")
    cols[1].download_button(_("Download the case (JSON)"), case.to_json(keep_images=False),
                            file_name=f"{stem}.json", mime="application/json", key=f"{key}_json", on_click="ignore")
    cols[2].download_button(_("Download the case (CSV)"), case.to_csv(), file_name=f"{stem}.csv", mime="text/csv",
                            key=f"{key}_csv", on_click="ignore")


def safe_name(text: str) -> str:
    """A file-name-safe version of a specimen ID."""
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.strip())
    return keep.strip("-.") or "case"
