"""The case report as a PDF (fpdf2), in English or Bangla.

    python -m core.report --specimen ID --reviewer NAME [--lang bn] [--model NAME] --out report.pdf FILES...

The CLI analyses the files and prints them unreviewed and unsigned (there is no review step
on the command line; the name is printed as "prepared by"). The app renders reviewed and
signed cases with the same `render_pdf`.

Fonts ship in static/fonts (Noto Sans, Noto Sans Bengali; SIL Open Font License): Noto
Sans is the main font and Noto Sans Bengali its fallback, with HarfBuzz text shaping on, since
Bangla conjuncts and vowel signs need shaping to render. Every text the report shows goes
through core.i18n's translator; class names keep their international spelling.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path
from typing import Callable

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from PIL import Image

from core import __version__
from core.case import Case, CaseImage, Decision, display_time, now_utc
from core.cli import model_option
from core.i18n import Language, render, translator
from core.labels import CLASS_FOLDERS, DISPLAY_NAMES
from core.status import Status

FONTS = Path(__file__).resolve().parents[1] / "static" / "fonts"  # one copy: the PDF embeds them, the app serves them
FONT = "NotoSans"
FONT_BENGALI = "NotoSansBengali"
THUMB_MM = 40.0  # longer side of each printed thumbnail
FOOTER_MM = 24.0  # bottom margin kept free for the footer's research-use and scope statements
HASH_CHARS = 12


class _ReportPDF(FPDF):
    """A4 portrait; every page ends with the research-use and scope statements."""

    def __init__(self, gettext: Callable[[str], str]):
        super().__init__(orientation="P", unit="mm", format="A4")
        self._ = gettext
        self.add_font(FONT, "", FONTS / "NotoSans-Regular.ttf")
        self.add_font(FONT, "B", FONTS / "NotoSans-Bold.ttf")
        self.add_font(FONT_BENGALI, "", FONTS / "NotoSansBengali-Regular.ttf")
        self.add_font(FONT_BENGALI, "B", FONTS / "NotoSansBengali-Bold.ttf")
        self.set_fallback_fonts([FONT_BENGALI])
        self.set_text_shaping(True)
        self.set_auto_page_break(True, margin=FOOTER_MM)
        self.set_margins(15, 15, 15)

    def footer(self) -> None:
        _ = self._
        self.set_y(-FOOTER_MM + 4)
        self.set_font(FONT, "B", 7.5)
        self.set_text_color(60)
        self.multi_cell(0, 3.4, _("For Research Use Only. Not for use in diagnostic procedures."),
                        align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(FONT, "", 7)
        self.multi_cell(0, 3.2, _("Trained on peripheral blood smear images of one hospital (Taleqani Hospital, "
                                  "Tehran); results on other labs' smears are unvalidated. Confirm every subtype "
                                  "by flow cytometry."), align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.cell(0, 3.2, _("Page {page}").format(page=self.page_no()), align="C")
        self.set_text_color(0)


def _class(folder: str | None) -> str:
    return DISPLAY_NAMES[folder] if folder else "—"


def _thumb_size(jpeg: bytes | None) -> tuple[float, float]:
    """Printed (width, height) in mm of a thumbnail, its longer side THUMB_MM."""
    if not jpeg:
        return THUMB_MM, THUMB_MM * 0.75
    with Image.open(io.BytesIO(jpeg)) as im:
        w, h = im.size
    scale = THUMB_MM / max(w, h)
    return w * scale, h * scale


def render_pdf(case: Case, lang: Language | str = Language.ENGLISH, *, prepared_by: str | None = None) -> bytes:
    """The case report as PDF bytes. `prepared_by` names who prepared an unsigned report."""
    _ = translator(lang)
    pdf = _ReportPDF(_)
    pdf.set_lang(Language(lang).value)
    pdf.set_title(_("LeukoScope case report"))
    pdf.set_creator(f"LeukoScope {__version__}")
    pdf.add_page()
    width = pdf.epw

    def line(text: str, size: float = 9.5, style: str = "", h: float = 5.0) -> None:
        pdf.set_font(FONT, style, size)
        pdf.multi_cell(width, h, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def heading(text: str) -> None:
        pdf.ln(3)
        line(text, 12, "B", 7)

    line(_("LeukoScope case report"), 17, "B", 10)
    line(_("Specimen: {specimen}").format(specimen=case.specimen_id), 11, "B", 6)
    if case.patient_ref:
        line(_("Patient reference: {ref}").format(ref=case.patient_ref))
    line(_("Case ID: {case_id}").format(case_id=case.case_id))
    line(_("Created: {date}").format(date=display_time(case.created_at)))
    if case.signed_by:
        line(_("Reviewer: {name}").format(name=case.signed_by))
        line(_("Signed: {date}").format(date=display_time(case.signed_at)))
    else:
        if prepared_by:
            line(_("Prepared by: {name}").format(name=prepared_by))
        line(_("Signed: not signed"), style="B")

    heading(_("Images"))
    if not case.images:
        line(_("No images in this case."))
    for i, image in enumerate(case.images):
        _image_block(pdf, _, i, image)

    heading(_("Case summary"))
    s = case.summary()
    line(_("Images: {n}; not reviewed: {undecided}; unusable: {unusable}; confirmed: {confirmed}; "
           "reclassified: {reclassified}").format(n=s["images"], undecided=s["undecided"], unusable=s["unusable"],
                                                  confirmed=s["confirmed"], reclassified=s["reclassified"]))
    counts = ", ".join(f"{DISPLAY_NAMES[c]} {s['per_class'][c]}" for c in CLASS_FOLDERS)
    line(_("Final classes: {counts}").format(counts=counts))
    usable = s["confirmed"] + s["reclassified"]
    if s["agreement"] is None:
        line(_("Agreement with the model: none of the images is reviewed and usable yet."))
    else:
        line(_("Agreement with the model: {share} of {n} reviewed usable images.").format(
            share=f"{s['agreement']:.0%}", n=usable))

    heading(_("Impression"))
    line(case.impression.strip() or _("No impression recorded."))
    if case.addenda:
        heading(_("Addenda (after signing)"))
        for addendum in case.addenda:
            line(_("Addendum by {name}, {date}:").format(name=addendum.by, date=display_time(addendum.at)), style="B")
            line(addendum.text)

    heading(_("Model"))
    seen: set[tuple] = set()
    for image in case.images:
        a = image.analysis
        key = (a.model, tuple(sorted(a.weights.items())), tuple(sorted(a.settings.items())), a.app_version)
        if key in seen:
            continue
        seen.add(key)
        line(_("Model: {display} (registry name {name})").format(display=a.model_display, name=a.model))
        hashes = ", ".join(f"{member} {sha[:HASH_CHARS]}" for member, sha in a.weights.items())
        line(_("Weights SHA-256: {hashes}").format(hashes=hashes))
        st = a.settings
        line(_("Settings: {views} view(s), stain normalisation {stain}, threshold {threshold}, temperature "
               "{temperature}").format(views=st.get("views", ""), stain=st.get("stain", ""),
                                       threshold=f"{float(st.get('threshold', 0)):.3f}",
                                       temperature=f"{float(st.get('temperature', 1)):.3f}"))
        line(_("Analysed with LeukoScope {version}").format(version=a.app_version))
    if not seen:
        line(_("No image was analysed."))
    line(_("Report generated {date} by LeukoScope {version}.").format(
        date=display_time(now_utc()), version=__version__), size=8)
    return bytes(pdf.output())


def _image_block(pdf: _ReportPDF, _: Callable[[str], str], index: int, image: CaseImage) -> None:
    """One image: thumbnail and Grad-CAM side by side, the model's and the reviewer's answers beside them."""
    a, review = image.analysis, image.review
    status_text = {
        Status.OK: _("confident"),
        Status.UNCERTAIN: _("uncertain, refer for review"),
        Status.OUT_OF_SCOPE: _("out of scope, no subtype"),
        Status.REJECTED: _("rejected, not a blood smear"),
        Status.ERROR: _("error, the file could not be used"),
    }
    decision_text = {
        Decision.CONFIRMED: _("confirmed"),
        Decision.RECLASSIFIED: _("reclassified"),
        Decision.UNUSABLE: _("unusable"),
    }
    tw, th = _thumb_size(image.thumbnail)
    block_h = max(th + 5, 36)
    if pdf.get_y() + block_h > pdf.page_break_trigger:
        pdf.add_page()
    x0, y0 = pdf.l_margin, pdf.get_y()
    pdf.set_font(FONT, "", 7)
    for k, (jpeg, caption, missing) in enumerate((
        (image.thumbnail, _("Image"), _("no image")),
        (image.cam_thumbnail, _("Grad-CAM"), _("no Grad-CAM")),
    )):
        x = x0 + k * (THUMB_MM + 3)
        if jpeg:
            pdf.image(io.BytesIO(jpeg), x=x, y=y0, w=tw, h=th)
        else:
            pdf.set_draw_color(180)
            pdf.rect(x, y0, tw, th)
            pdf.set_xy(x, y0 + th / 2 - 2)
            pdf.cell(tw, 4, missing, align="C")
        pdf.set_xy(x, y0 + th + 0.5)
        pdf.cell(tw, 3.5, caption, align="C")

    text_x = x0 + 2 * (THUMB_MM + 3) + 2
    text_w = pdf.l_margin + pdf.epw - text_x
    pdf.set_xy(text_x, y0)

    def field(text: str, style: str = "", size: float = 9.0) -> None:
        pdf.set_font(FONT, style, size)
        pdf.set_x(text_x)
        pdf.multi_cell(text_w, 4.6, text, new_x=XPos.LEFT, new_y=YPos.NEXT)

    field(f"{index + 1}. {a.file_name}", "B")
    field(_("Model status: {status}").format(status=status_text[a.status]))
    suggested = a.suggested_label
    if suggested:
        field(_("Suggested class: {label} ({confidence} confidence)").format(
            label=_class(suggested), confidence=f"{a.confidence:.1%}"))
    else:
        field(_("Suggested class: none"))
    if a.message:
        field(render(a.message, _), size=8)
    if review is None:
        field(_("Decision: not reviewed"), "B")
    else:
        field(_("Decision: {decision}").format(decision=decision_text[review.decision]), "B")
        if review.final_label:
            field(_("Final class: {label}").format(label=_class(review.final_label)), "B")
        if review.reason:
            field(_("Reason: {reason}").format(reason=review.reason))
    pdf.set_xy(x0, max(pdf.get_y(), y0 + block_h) + 3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, parents=[model_option()])
    p.add_argument("files", nargs="+", help="image files of one specimen")
    p.add_argument("--specimen", required=True, help="specimen ID printed on the report")
    p.add_argument("--reviewer", required=True, help="who prepares the report (printed as 'prepared by')")
    p.add_argument("--patient", default="", help="optional patient reference")
    p.add_argument("--lang", choices=[lang.value for lang in Language], default=Language.ENGLISH.value)
    p.add_argument("--no-heatmap", action="store_true", help="skip the Grad-CAM thumbnails (faster)")
    p.add_argument("--out", required=True, help="the PDF file to write")
    args = p.parse_args(argv)

    from core.case import CaseError, analyse_image
    from core.inference import ModelUnavailable, load_predictor
    from core.predict import read_inputs

    out = Path(args.out)
    if out.is_dir() or not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        print(f"error: cannot write the report to {out}; choose a file in an existing, writable folder.",
              file=sys.stderr)
        return 2
    try:
        case = Case(args.specimen, patient_ref=args.patient)
    except CaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        predictor = load_predictor(args.model)
    except (ModelUnavailable, KeyError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    for name, data in read_inputs(args.files):
        case.add(analyse_image(predictor, Path(name).name, data, heatmap=not args.no_heatmap))
    pdf = render_pdf(case, args.lang, prepared_by=args.reviewer.strip() or None)
    try:
        out.write_bytes(pdf)
    except OSError as exc:
        print(f"error: cannot write the report to {out} ({exc.strerror or exc}).", file=sys.stderr)
        return 2
    errors = sum(1 for im in case.images if im.analysis.status is Status.ERROR)
    subtyped = sum(1 for im in case.images if im.analysis.suggested_label)
    print(f"wrote {out}: {len(case.images)} images ({subtyped} with a suggested class, {errors} could not be "
          "read), not reviewed, not signed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
