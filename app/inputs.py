"""The image source widget shared by the pages: upload(s), or one of the shipped samples."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import streamlit as st

from app.common import _, upload_box
from app.imaging import Sample, find_sample, list_samples, sample_label

NO_SAMPLE = "(none)"


@dataclass(frozen=True)
class InputImage:
    name: str
    data: bytes
    sample: Sample | None = None

    @property
    def digest(self) -> str:
        """Short content hash: a stable widget-key part for this image."""
        return hashlib.sha1(self.data).hexdigest()[:12]


def image_inputs(key: str, multiple: bool = True, default_sample: bool = False) -> list[InputImage]:
    """Uploader plus a sample picker, side by side. Returns the uploads, then the sample.

    With `multiple=False` an upload replaces the sample. With `default_sample` the first shipped
    sample is preselected, so the page shows something before any upload.
    """
    left, right = st.columns([3, 2])
    files = upload_box(
        _("Upload smear image(s)") if multiple else _("Upload a smear image"),
        key=f"{key}_upload", multiple=multiple, container=left,
        help=_("JPEG, PNG, TIFF, BMP or WebP. Images are processed in memory and never stored."),
    )
    samples = list_samples()
    options = [NO_SAMPLE, *samples]
    rel = right.selectbox(
        _("…or try a shipped sample") if multiple else _("…or use a shipped sample"), options,
        index=1 if default_sample and samples else 0, key=f"{key}_sample",
        format_func=lambda r: _("(none)") if r == NO_SAMPLE else sample_label(r),
        help=_("Real images from the test part of the split (never used for training)."),
    )
    uploads = files if isinstance(files, list) else ([files] if files else [])
    images, seen = [], set()
    for f in uploads:  # the same picture uploaded twice is diagnosed once
        item = InputImage(f.name, f.getvalue())
        if item.digest in seen:
            st.caption(_("{name} is the same image as one above; shown once.").format(name=f.name))
            continue
        seen.add(item.digest)
        images.append(item)
    sample = find_sample(None if rel == NO_SAMPLE else rel)
    if sample is not None and (multiple or not images):
        images.append(InputImage(sample.name, sample.read(), sample))
    return images
