"""LeukoScope: `streamlit run streamlit_app.py`. The front door and the page navigation."""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

# `streamlit run` puts this file's folder on sys.path, so app/ and core/ import as packages.
from app.common import _, disclaimer, guarded, input_hints, language_picker, setup_page, show_table


def home() -> None:
    from core.dataset import DATA_ENV
    from core.labels import CLASS_NAMES, DATASET_CITATION, PAPER_CITATION
    from models.registry import REGISTRY, WEIGHTS_ENV, default_model_name, how_to_get, is_available, weights_dirs

    from app.models import device, gpu_visible

    st.title(":material/biotech: LeukoScope")
    st.markdown(_(
        "A workbench for **B-cell acute lymphoblastic leukemia (B-ALL)** on peripheral blood smear (PBS) "
        "images. Hematologists upload smear images and get one of four classes — {classes} — "
        "with what they need to check it: class probabilities, an *uncertain* flag below a validated "
        "confidence threshold, a refusal for pictures that are not smears, HSV cell segmentation and "
        "Grad-CAM heat maps, then review, sign and file the case. Researchers compare the CNNs of the paper "
        "below on the same images and against the paper's published numbers."
    ).format(classes=", ".join(CLASS_NAMES)))
    st.warning(f"**{disclaimer()}**")

    with guarded(_("listing the models")):
        default = default_model_name()
        yes, no = _("yes"), _("no")
        rows = []
        for name, spec in REGISTRY.items():
            ok = is_available(name)
            rows.append({
                _("model"): name, _("name"): spec.display, _("family"): spec.family, _("mode"): spec.mode,
                _("in paper"): yes if spec.in_paper else (
                    _("member only") if spec.family in ("densenet121", "efficientnetb7") else no),
                _("available here"): yes if ok else no,
                _("how to get it"): "" if ok else how_to_get(name),
                _("note"): (_("default") + " · " if name == default else "") + _(spec.note),
            })
        zoo = pd.DataFrame(rows)
        n_ok = int((zoo[_("available here")] == yes).sum())
        st.subheader(_("Model zoo — {n_ok} of {n} available on this machine").format(n_ok=n_ok, n=len(zoo)))
        show_table(zoo, height=420,
                   column_config={_("how to get it"): st.column_config.TextColumn(width="large")})
        dirs = ", ".join(f"`{d}`" for d in weights_dirs())
        st.caption(_("Weights are looked up in {dirs} (first match wins; set ${env} to add a folder). "
                     "Modes: baseline = trained from scratch; tl = ImageNet backbone; ensemble = soft "
                     "voting of members.").format(dirs=dirs, env=WEIGHTS_ENV))

    left, right = st.columns(2)
    with left, guarded(_("checking this machine")):
        st.subheader(_("This machine"))
        data = os.environ.get(DATA_ENV)
        st.markdown(_("- **Dataset** (${env}): `{data}`").format(env=DATA_ENV, data=data) if data
                    else _("- **Dataset** (${env}): not set").format(env=DATA_ENV))
        dev = device()
        st.markdown(_("- **GPU visible:** yes — {device}").format(device=dev) if gpu_visible()
                    else _("- **GPU visible:** no — running on {device}").format(device=dev))
        st.markdown(_("- **Uploads** are processed in memory and never written to disk unless you save a case "
                      "to the history folder you choose; no telemetry, no external requests."))
    with right:
        st.subheader(_("Data and evaluation"))
        st.markdown(_(
            "- One public dataset (3,256 images from 89 patients, Taleqani Hospital, Tehran).\n"
            "- The train/validation/test split is **at image level**: the dataset has **no patient IDs**, "
            "so images of one patient can fall on both sides and the test accuracy may be optimistic "
            "for new patients.\n"
            "- See **Benchmark** for the split, the number of images and the weights behind every accuracy, "
            "and for the session-aware figures a new patient would see."
        ))
    st.subheader(_("Citations"))
    st.markdown(_("**Paper.** {citation}").format(citation=PAPER_CITATION))
    st.markdown(_("**Dataset.** {citation}").format(citation=DATASET_CITATION))


# Streamlit runs this file on every rerun: the navigation (with the language switch), then the
# chosen page. The pages live in app_pages/, not pages/: a pages/ folder makes Streamlit serve a
# deep link such as /Case in a new session from that folder without running this file, so the
# menu, the language and the warm-up were missing there. The page configuration is set here, for
# whichever page runs; the pages themselves do not set it. The icon goes first: st.navigation would
# otherwise make the page's material icon the favicon, which the browser fetches from a font CDN.
setup_page()
language_picker()
input_hints()
pages = [
    st.Page(home, title=_("Home"), icon=":material/home:", url_path="home", default=True),
    st.Page("app_pages/1_Diagnose.py", title=_("Diagnose"), icon=":material/bloodtype:", url_path="Diagnose"),
    st.Page("app_pages/6_Case.py", title=_("Case review"), icon=":material/assignment_turned_in:", url_path="Case"),
    st.Page("app_pages/7_History.py", title=_("Case history"), icon=":material/history:", url_path="History"),
    st.Page("app_pages/5_Batch.py", title=_("Batch"), icon=":material/folder_zip:", url_path="Batch"),
    st.Page("app_pages/2_Segmentation.py", title=_("Segmentation"), icon=":material/blur_on:", url_path="Segmentation"),
    st.Page("app_pages/3_Compare_models.py", title=_("Compare models"), icon=":material/compare:",
            url_path="Compare_models"),
    st.Page("app_pages/4_Benchmark.py", title=_("Benchmark"), icon=":material/leaderboard:", url_path="Benchmark"),
]
page = st.navigation(pages)
setup_page(page.title)
with guarded(_("preparing the default model")):
    from app.models import start_warm_up

    start_warm_up()  # a background thread: the page below is drawn at once, the model is ready sooner
page.run()
