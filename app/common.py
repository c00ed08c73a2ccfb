"""Page set-up, the research-use notice, and the guard that keeps tracebacks away from users."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import streamlit as st

from core.i18n import N_, Language, message_of, render, translate, translator  # noqa: F401 - N_ for the pages
from core.errors import LeukoScopeError
from core.imageio import IMAGE_SUFFIXES

log = logging.getLogger("leukoscope.app")

APP_NAME = "LeukoScope"
LANG_KEY = "lang"  # st.session_state key and URL query parameter (?lang=bn survives a reload)


def current_language() -> Language:
    """The language chosen in the sidebar (or by ?lang= in the URL); English by default."""
    value = st.session_state.get(LANG_KEY) or st.query_params.get(LANG_KEY) or Language.ENGLISH.value
    try:
        return Language(value)
    except ValueError:
        return Language.ENGLISH


def _(text: str) -> str:
    """The text in the user's language (gettext; English is the source). A `core.i18n.Text` is
    rebuilt from its translated template and arguments."""
    return render(text, translator(current_language()))


def language_picker() -> Language:
    """English / বাংলা switch in the sidebar; remembered for the session and in the URL."""
    langs = list(Language)
    if LANG_KEY not in st.session_state:
        st.session_state[LANG_KEY] = current_language().value
    st.sidebar.radio("Language / ভাষা", [x.value for x in langs], key=LANG_KEY, horizontal=True,
                     format_func=lambda v: Language(v).native_name)
    st.query_params[LANG_KEY] = st.session_state[LANG_KEY]
    return current_language()


def disclaimer() -> str:
    return _("Research decision aid, not a diagnostic device. Every result must be checked by a "
             "hematologist; the models were trained on one public dataset (one hospital, one stain) "
             "split at image level, without patient IDs.")


IMAGE_TYPES = [suffix.lstrip(".") for suffix in IMAGE_SUFFIXES]  # for st.file_uploader
#: What a table cell shows for a missing value (instead of the word "None").
NO_VALUE = "—"


def _css_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def upload_box(label: str, *, key: str, types: list[str] = IMAGE_TYPES, multiple: bool = True,
               help: str | None = None, container=None):
    """`st.file_uploader`, with the box's own words in the user's language.

    Streamlit writes its box's button ("Upload") and limit line itself, in English, and the limit
    it states is the server's per-upload one (a .zip may be large), not the image limit; it has
    no parameter for either (streamlit/streamlit#13500). A style block restates both in place.
    """
    from core.imageio import MAX_BYTES

    names = {"jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF", "webp": "WebP"}
    images = ", ".join(dict.fromkeys(names.get(t, t.upper()) for t in types if t != "zip"))
    hint = _("Images up to {size} MB each · {types}").format(size=MAX_BYTES // 2**20, types=images)
    if "zip" in types:
        hint += " · " + _("or a .zip of them")
    box = '[data-testid="stFileUploaderDropzone"]'
    st.html(f"""<style>
{box} [data-testid="stBaseButton-secondary"] [data-testid="stMarkdownContainer"] p {{ font-size: 0 !important; }}
{box} [data-testid="stBaseButton-secondary"] [data-testid="stMarkdownContainer"] p::after {{
  content: {_css_string(_("Upload"))}; font-size: 1rem; }}
[data-testid="stFileUploaderDropzoneInstructions"] span {{ font-size: 0 !important; }}
[data-testid="stFileUploaderDropzoneInstructions"] span::after {{ content: {_css_string(hint)}; font-size: 0.875rem; }}
</style>""")
    return (container or st).file_uploader(label, type=types, accept_multiple_files=multiple, key=key, help=help)


def input_hints() -> None:
    """Streamlit's own hint under a text field being edited ("Press Enter to apply", "... to submit
    form", "Press Ctrl+Enter ..." for a text area) is English and has no parameter; a style block
    restates it in the user's language, for each kind of field, on every page."""
    hint = '[data-testid="InputInstructions"] span:first-child'
    words = {
        '[data-testid="stTextInput"]': _("Press Enter to apply"),
        '[data-testid="stForm"] [data-testid="stTextInput"]': _("Press Enter to submit the form"),
        '[data-testid="stTextArea"]': _("Press Ctrl+Enter (⌘+Enter on a Mac) to apply"),
        '[data-testid="stForm"] [data-testid="stTextArea"]':
            _("Press Ctrl+Enter (⌘+Enter on a Mac) to submit the form"),
    }
    rules = "\n".join(f"{field} {hint}::after {{ content: {_css_string(text)}; font-size: 0.75rem; }}"
                      for field, text in words.items())
    st.html(f"<style>\n{hint} {{ font-size: 0 !important; }}\n{rules}\n</style>")


#: Headers for the data columns the Benchmark's tables carry under their file names (the keys of the
#: result files); `show_table` shows them in the user's language unless a page labels a column itself.
COLUMN_LABELS = {
    "model": N_("model"), "display": N_("name"), "provenance": N_("provenance"), "family": N_("family"),
    "mode": N_("mode"), "split": N_("split"), "images": N_("images"), "n_images": N_("number of images"),
    "views": N_("views"), "accuracy": N_("accuracy %"), "macro_f1": N_("macro F1 %"),
    "ece_before": N_("ECE before"), "ece_after": N_("ECE after"), "temperature": N_("temperature"),
    "threshold": N_("threshold"), "uncertain_pct": N_("uncertain %"), "grayscale_accuracy": N_("grayscale %"),
    "colour_jitter_accuracy": N_("colour jitter %"), "protocol": N_("protocol"), "trained_on": N_("trained on"),
    "weights": N_("weights"), "device": N_("device"), "evaluated": N_("evaluated"), "command": N_("command"),
    "file": N_("file"), "class": N_("class"), "class_name": N_("class name"), "precision": N_("precision %"),
    "recall": N_("recall %"), "f1": N_("F1 %"), "specificity": N_("specificity %"), "support": N_("images of the class"),
    "source": N_("source"), "recipe": N_("recipe"), "scheme": N_("scheme"),
    "balanced_accuracy": N_("balanced accuracy %"), "ci_low": N_("95% CI low"), "ci_high": N_("95% CI high"),
    "git_commit": N_("commit"), "finished": N_("finished"), "quick": N_("quick"),
    "chosen": N_("chosen"), "members": N_("members"), "n_errors": N_("errors"),
    "neutral_background_accuracy": N_("neutral background %"), "log_loss": N_("log loss"),
    "benign_recall": N_("Benign recall %"), "size_mib": N_("weights MiB"),
    # Per-class recall of the session-aware table (core.labels.CLASS_FOLDERS).
    "recall_Benign": N_("Benign recall %"), "recall_Early": N_("Early Pre-B recall %"),
    "recall_Pre": N_("Pre-B recall %"), "recall_Pro": N_("Pro-B recall %"),
    # The shortcut audit's tables (core.audit).
    "features": N_("features"), "what": N_("what"), "copy": N_("copy"), "random": N_("random"),
}


def show_table(data, *, container=None, column_config: dict | None = None, **kwargs):
    """A table as every page shows one: no index column, full width, a dash for a missing value,
    and the headers of known data columns (`COLUMN_LABELS`) in the user's language."""
    config = dict(column_config or {})
    for column in getattr(data, "columns", []):
        label = COLUMN_LABELS.get(column) if isinstance(column, str) else None
        given = config.get(column)
        if label is None:
            continue
        if given is None:
            config[column] = _(label)
        elif isinstance(given, dict) and not given.get("label"):  # a column type without its own label
            config[column] = {**given, "label": _(label)}
    return (container or st).dataframe(data, hide_index=True, width="stretch", placeholder=NO_VALUE,
                                       column_config=config or None, **kwargs)


def app_icon():
    """The favicon: a stained cell drawn here and served by the app itself (a material-icon or
    emoji favicon would be fetched from a font CDN, and the app makes no external requests)."""
    import cv2
    import numpy as np

    from PIL import Image

    img = np.zeros((64, 64, 4), np.uint8)
    cv2.circle(img, (32, 32), 29, (196, 160, 230, 255), -1, cv2.LINE_AA)
    cv2.circle(img, (30, 34), 17, (98, 40, 150, 255), -1, cv2.LINE_AA)
    return Image.fromarray(img, "RGBA")


def setup_page(title: str | None = None, layout: str = "wide") -> None:
    """Icon, layout and (when given) title of the page that runs; set by streamlit_app.py only:
    first without a title, before st.navigation, then with the chosen page's title."""
    page_title = f"{title} · {APP_NAME}" if title else APP_NAME
    try:
        st.set_page_config(page_title=page_title, page_icon=app_icon(), layout=layout)
    except Exception:  # noqa: BLE001 - a favicon problem must never cost the page
        log.exception("set_page_config with the app icon failed")
        st.set_page_config(page_title=page_title, layout=layout)


def plain_message(exc: BaseException, doing: str) -> str:
    """A message for users: the library's own plain message where it has one, else a generic line."""
    from core.inference import ModelUnavailable

    if isinstance(exc, (LeukoScopeError, ModelUnavailable)):  # the library's own one sentence
        return translate(message_of(exc), current_language())
    if isinstance(exc, MemoryError):
        return _("Out of memory while {doing}. Try fewer or smaller images.").format(doing=doing)
    return _("Something went wrong while {doing} ({error}). The details are in the server log; the rest of "
             "the app keeps working.").format(doing=doing, error=type(exc).__name__)


@contextmanager
def guarded(doing: str = "showing this page") -> Iterator[None]:
    """Run a block; any exception becomes an `st.error` with a plain message (logged in full).

    Streamlit's own control flow (st.stop, st.rerun, page switches) derives from BaseException
    and passes through untouched.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - the point is that nothing escapes to the user
        log.exception("error while %s", doing)
        st.error(plain_message(exc, doing))


def research_notice() -> None:
    st.caption(f":material/warning: {disclaimer()}")


def status_label(status) -> str:
    """A status word in the user's language (the glossary in the README)."""
    from core.status import WORDS, Status

    return _(WORDS[Status(status)])


def status_message(status, message: str) -> str:
    """The record's one-sentence message in the user's language: the library composes it as a
    `core.i18n.Text`, which is rebuilt from translated parts. Text that lost its parts (read back
    from an older file) is looked up whole; if the catalog lacks it, the status's translated
    headline comes first, with the English detail after it."""
    from core.i18n import Language, Text
    from core.status import HEADLINES, Status

    lang = current_language()
    if lang is Language.ENGLISH or not message or isinstance(message, Text):
        return translate(message, lang)
    if _(message) != message:
        return _(message)
    headline = _(HEADLINES[Status(status)]) if HEADLINES[Status(status)] else ""
    return _("{headline} (details: {message})").format(headline=headline, message=message) if headline else message
