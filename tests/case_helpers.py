"""Helpers for the case-layer tests: synthetic analysed images (no model needed) and the text of a PDF.

pypdf is not a dependency, so `pdf_text` reads fpdf2's output itself: it inflates the content
streams and maps every shown glyph code back to text through the fonts' ToUnicode maps.
"""
from __future__ import annotations

import hashlib
import io
import re
import zlib

import numpy as np
from PIL import Image

from core.case import CaseImage, ImageAnalysis

WEIGHTS_SHA = "0123456789abcdef" * 4
SETTINGS = {"views": 1, "stain": "none", "threshold": 0.7, "temperature": 1.25}


def jpeg(side_w: int = 256, side_h: int = 192, value: int = 150) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((side_h, side_w, 3), value, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def make_image(file_name: str = "a.jpg", status: str = "ok", label: str | None = "Pre-B",
               confidence: float | None = 0.93, image_bytes: bytes | None = None) -> CaseImage:
    """A case item as `analyse_image` would build it, without running a model."""
    diagnosis = {"file": file_name, "status": status, "label": label, "confidence": confidence,
                 "probabilities": None, "message": "" if status == "ok" else "A reason for the status."}
    analysis = ImageAnalysis(
        file_name=file_name, image_sha256=hashlib.sha256(file_name.encode()).hexdigest(), diagnosis=diagnosis,
        model="mobilenetv2-baseline", model_display="MobileNetV2", weights={"mobilenetv2-baseline": WEIGHTS_SHA},
        settings=dict(SETTINGS), analysed_at="2025-01-02T03:04:05+00:00",
    )
    return CaseImage(analysis, image_bytes=image_bytes, thumbnail=jpeg(),
                     cam_thumbnail=jpeg(value=90) if label else None)


def _stream(body: bytes) -> bytes:
    # /Length bounds the data: compressed bytes may themselves end in CR or LF, so the
    # end-of-line before "endstream" cannot be told apart from data by a pattern alone.
    start = re.search(rb"stream\r?\n", body).end()
    raw = body[start:start + int(re.search(rb"/Length\s+(\d+)(?!\s+\d+\s+R)", body).group(1))]
    return zlib.decompress(raw) if b"/FlateDecode" in body else raw


def _unescape(s: bytes) -> bytes:
    out, i = bytearray(), 0
    while i < len(s):
        if s[i] != 0x5C:
            out.append(s[i])
            i += 1
            continue
        j = i + 1
        while j < min(i + 4, len(s)) and s[j] in b"01234567":
            j += 1
        if j > i + 1:
            out.append(int(s[i + 1:j], 8) & 0xFF)
            i = j
        else:
            out.append({ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}.get(s[i + 1], s[i + 1]))
            i += 2
    return bytes(out)


def pdf_text(data: bytes) -> list[str]:
    """Each page's text, one line per text object (glyphs without a Unicode mapping are dropped)."""
    objects = {int(m.group(1)): m.group(2) for m in re.finditer(rb"(\d+) 0 obj(.*?)endobj", data, re.S)}

    def cmap(ref: int) -> dict[int, str]:
        out = {}
        for block in re.findall(rb"beginbfchar(.*?)endbfchar", _stream(objects[ref]), re.S):
            for src, dst in re.findall(rb"<([0-9A-Fa-f]+)>\s*<([0-9A-Fa-f]+)>", block):
                out[int(src, 16)] = bytes.fromhex(dst.decode()).decode("utf-16-be")
        return out

    pages = []
    for body in (b for _, b in sorted(objects.items()) if re.search(rb"/Type\s*/Page\b", b)):
        res = re.search(rb"/Resources\s+(\d+) 0 R", body)
        fdict = re.search(rb"/Font\s*<<(.*?)>>", objects[int(res.group(1))] if res else body, re.S).group(1)
        fonts = {}
        for name, ref in re.findall(rb"/(\w+)\s+(\d+) 0 R", fdict):
            tu = re.search(rb"/ToUnicode\s+(\d+) 0 R", objects[int(ref)])
            fonts[name] = cmap(int(tu.group(1))) if tu else {}
        content = _stream(objects[int(re.search(rb"/Contents\s+(\d+) 0 R", body).group(1))])
        lines, line, font, saved = [], [], {}, []
        # The font is graphics state: it survives ET and is restored by Q.
        for m in re.finditer(rb"(?<![\w/])(q|Q|BT|ET)(?!\w)|/(\w+)\s+[\d.]+\s+Tf|\(((?:\\.|[^\\)])*)\)\s*Tj", content,
                             re.S):
            op, font_name, shown = m.group(1), m.group(2), m.group(3)
            if op == b"q":
                saved.append(font)
            elif op == b"Q":
                font = saved.pop() if saved else {}
            elif op == b"ET" and line:
                lines.append("".join(line))
                line = []
            elif font_name:
                font = fonts.get(font_name, {})
            elif shown is not None:
                raw = _unescape(shown)
                line.append("".join(font.get(int.from_bytes(raw[k:k + 2], "big"), "")
                                    for k in range(0, len(raw) - 1, 2)))
        pages.append("\n".join(lines))
    return pages


def flat(text: str) -> str:
    """Whitespace (including line wraps) collapsed to single spaces."""
    return " ".join(text.split())
