"""core.report: the case PDF (English and Bangla) and its CLI."""
import pytest

from case_helpers import WEIGHTS_SHA, flat, make_image, pdf_text
from conftest import SAMPLES
from core.case import Case, Decision
from core.report import main as report_main
from core.report import render_pdf
from models.registry import SHIPPED_WEIGHTS_DIR

RUO = "For Research Use Only. Not for use in diagnostic procedures."
SCOPE = ("Trained on peripheral blood smear images of one hospital (Taleqani Hospital, Tehran); results on other "
         "labs' smears are unvalidated. Confirm every subtype by flow cytometry.")


def _signed_case(n: int = 6) -> Case:
    case = Case("SP-42", patient_ref="MRN 1234")
    labels = ["Pre-B", "Pro-B", None, "Benign", "Early Pre-B", "Pre-B"]
    for i in range(n):
        label = labels[i % len(labels)]
        case.add(make_image(f"img{i}.jpg", status="ok" if label else "out_of_scope", label=label,
                            confidence=0.97 if label else None))
    for i in range(n):
        if i == 1:
            case.decide(i, Decision.RECLASSIFIED, "Pre", reason="nucleoli visible")
        elif i == 2:
            case.decide(i, Decision.UNUSABLE, reason="thick area")
        else:
            case.decide(i, Decision.CONFIRMED)
    case.impression = "Consistent with Pre-B ALL; confirm by flow cytometry."
    case.sign("Dr. Hasan")
    return case


def test_report_shows_the_case_and_the_research_use_statement_on_every_page():
    pdf = render_pdf(_signed_case())
    assert pdf.startswith(b"%PDF")
    pages = [flat(p) for p in pdf_text(pdf)]
    assert len(pages) >= 2  # six image blocks do not fit one A4 page
    assert all(RUO in p and SCOPE in p for p in pages)
    text = " ".join(pages)
    for expected in ("Specimen: SP-42", "Patient reference: MRN 1234", "Reviewer: Dr. Hasan", "Signed: 20",
                     "Suggested class: Pro-B (97.0% confidence)", "Decision: reclassified", "Final class: Pre-B",
                     "Reason: nucleoli visible", "Decision: unusable", "Model status: out of scope",
                     "Final classes: Benign 1, Early Pre-B 1, Pre-B 3, Pro-B 0",
                     "Agreement with the model: 80% of 5 reviewed usable images.",
                     "Consistent with Pre-B ALL; confirm by flow cytometry.",
                     "Model: MobileNetV2 (registry name mobilenetv2-baseline)",
                     f"Weights SHA-256: mobilenetv2-baseline {WEIGHTS_SHA[:12]}"):
        assert expected in text, expected
    assert WEIGHTS_SHA not in text  # the first 12 hex digits only


def test_an_unreviewed_unsigned_report_says_so():
    case = Case("SP-1")
    case.add(make_image("a.jpg"))
    text = flat(" ".join(pdf_text(render_pdf(case, prepared_by="Lab tech"))))
    assert "Prepared by: Lab tech" in text and "Signed: not signed" in text and "Decision: not reviewed" in text
    assert "Agreement with the model: none" in text and "No impression recorded." in text


def test_every_report_text_goes_through_the_translator(monkeypatch):
    monkeypatch.setattr("core.report.translator", lambda lang: lambda s: "«" + s + "»")
    case = _signed_case(3)
    pages = pdf_text(render_pdf(case))
    untranslated = {line for page in pages for line in page.splitlines() if "«" not in line and "»" not in line}
    data = {f"{i + 1}. {im.analysis.file_name}" for i, im in enumerate(case.images)}
    data |= {im.analysis.message for im in case.images} | {case.impression}
    assert untranslated <= data  # only what the user or the model wrote stays as it is
    text = flat(" ".join(pages))
    for expected in ("«" + RUO + "»", "«" + SCOPE + "»", "«LeukoScope case report»", "«Specimen: SP-42»",
                     "«Decision: «reclassified»»", "«Case summary»", "«Impression»", "«Page 1»"):
        assert expected in text, expected


def test_a_bangla_report_renders_with_the_bengali_font():
    case = _signed_case(2)
    impression = "প্রি-বি এএলএল এর সাথে সামঞ্জস্যপূর্ণ"
    case = Case.from_dict({**case.to_dict(), "impression": impression, "signed_by": "ডা. রহিম"})
    pdf = render_pdf(case, lang="bn")
    assert pdf.startswith(b"%PDF") and b"NotoSansBengali" in pdf
    text = flat(" ".join(pdf_text(pdf)))
    # Shaped Bangla (conjuncts, vowel signs) maps back to the text typed.
    assert impression in text and "ডা. রহিম" in text
    assert "Pre-B" in text  # class names keep their international spelling


@pytest.mark.skipif(not (SHIPPED_WEIGHTS_DIR / "mobilenetv2-baseline.weights.h5").is_file(),
                    reason="no shipped mobilenetv2-baseline weights")
def test_cli_writes_a_report_for_two_images_and_a_bad_file(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LEUKOSCOPE_WEIGHTS", raising=False)  # the shipped MobileNetV2 (a tiny run takes a minute)
    images = [sorted((SAMPLES / "Original" / c).glob("*.jpg"))[0] for c in ("Pro", "Benign")]
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    out = tmp_path / "report.pdf"
    rc = report_main(["--specimen", "SP-7", "--reviewer", "Lab tech", "--model", "mobilenetv2-baseline",
                      "--out", str(out), *map(str, images), str(bad)])
    printed = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and len(printed) == 1 and str(out) in printed[0] and "3 images" in printed[0]
    text = flat(" ".join(pdf_text(out.read_bytes())))
    assert out.read_bytes().startswith(b"%PDF") and RUO in text
    assert "Prepared by: Lab tech" in text and "Signed: not signed" in text
    assert text.count("Decision: not reviewed") == 3 and "notes.txt" in text and "Model status: error" in text
    assert all(p.name in text for p in images)


def test_cli_refuses_an_unwritable_output_or_missing_weights(tmp_path, monkeypatch, capsys):
    image = str(sorted((SAMPLES / "Original" / "Pre").glob("*.jpg"))[0])
    args = ["--specimen", "SP-7", "--reviewer", "Lab tech"]
    assert report_main(args + ["--out", str(tmp_path / "missing" / "r.pdf"), image]) == 2
    assert "cannot write the report" in capsys.readouterr().err
    assert report_main(args + ["--out", str(tmp_path), image]) == 2  # a folder, not a file
    capsys.readouterr()
    monkeypatch.setenv("LEUKOSCOPE_WEIGHTS", str(tmp_path))
    assert report_main(args + ["--model", "vgg19-baseline", "--out", str(tmp_path / "r.pdf"), image]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: No weights for vgg19-baseline") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.pdf").exists()


def test_pypdf_reads_the_specimen_and_the_research_use_sentence():
    """A well-kept reader (pypdf) agrees with the ToUnicode check above on the Latin text."""
    import io

    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(render_pdf(_signed_case())))
    text = flat(" ".join(page.extract_text() for page in reader.pages))
    assert "SP-42" in text and RUO in text
    bn = flat(" ".join(p.extract_text() for p in PdfReader(io.BytesIO(render_pdf(_signed_case(), lang="bn"))).pages))
    assert "SP-42" in bn and sum("\u0980" <= ch <= "\u09ff" for ch in bn) > 200  # Bengali script throughout


def test_addenda_are_printed_after_the_impression():
    case = _signed_case(n=1)
    case.add_addendum("Flow cytometry confirms CD10+ precursor B.", "Dr. Rahman", at="2025-01-31T09:15:00+00:00")
    text = flat(" ".join(pdf_text(render_pdf(case))))
    assert "Addenda (after signing)" in text and "Addendum by Dr. Rahman," in text
    assert "Flow cytometry confirms CD10+ precursor B." in text
