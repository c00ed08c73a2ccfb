"""Page set-up, the research-use notice, and the guard that keeps tracebacks away from users."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

import streamlit as st

from core.imageio import ImageError

log = logging.getLogger("leukoscope.app")

APP_NAME = "LeukoScope"
DISCLAIMER = (
    "Research decision aid, not a diagnostic device. Every result must be checked by a "
    "hematologist; the models were trained on one public dataset (one hospital, one stain) "
    "split at image level, without patient IDs."
)
IMAGE_TYPES = ["jpg", "jpeg", "png", "tif", "tiff", "bmp"]


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


def setup_page(title: str, layout: str = "wide") -> None:
    """Title, icon and layout of a page (safe to call again under st.navigation)."""
    try:
        st.set_page_config(page_title=f"{title} · {APP_NAME}", page_icon=app_icon(), layout=layout)
    except Exception:  # noqa: BLE001 - a favicon problem must never cost the page
        log.exception("set_page_config with the app icon failed")
        st.set_page_config(page_title=f"{title} · {APP_NAME}", layout=layout)


def plain_message(exc: BaseException, doing: str) -> str:
    """A message for users: the library's own plain message where it has one, else a generic line."""
    from core.inference import ModelUnavailable

    if isinstance(exc, (ImageError, ModelUnavailable)):
        return str(exc)
    if isinstance(exc, MemoryError):
        return f"Out of memory while {doing}. Try fewer or smaller images."
    return (f"Something went wrong while {doing} ({type(exc).__name__}). "
            "The details are in the server log; the rest of the app keeps working.")


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
    st.caption(f":material/warning: {DISCLAIMER}")
