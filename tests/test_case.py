"""core.case: analysing images into a case, the reviewer's decisions, signing, summary and files."""
import csv
import hashlib
import io
import json
from datetime import datetime, timedelta

import pytest
from PIL import Image

from case_helpers import WEIGHTS_SHA, make_image
from conftest import SAMPLES
from core import __version__
from core.case import (CSV_COLUMNS, Case, CaseError, CaseFrozen, CaseImage, CaseStatus, Decision, InvalidDecision,
                       NotReadyToSign, analyse_image)
from core.status import Status
from models.convert import file_sha256
from models.registry import SHIPPED_WEIGHTS_DIR

SHIPPED = SHIPPED_WEIGHTS_DIR / "mobilenetv2-baseline.weights.h5"


@pytest.fixture(scope="module")
def predictor():
    # The shipped MobileNetV2 loads in seconds; training the tiny run would cost a minute here.
    if not SHIPPED.is_file():
        pytest.skip("no shipped mobilenetv2-baseline weights")
    from core.inference import load_predictor

    return load_predictor("mobilenetv2-baseline", weights_path=SHIPPED)


@pytest.fixture(scope="module")
def analysed(predictor):
    """Two real smears and one file that is not an image: at most 2 model calls in this module."""
    pre = sorted((SAMPLES / "Original" / "Pre").glob("*.jpg"))[0]
    benign = sorted((SAMPLES / "Original" / "Benign").glob("*.jpg"))[0]
    return {"pre": (pre, analyse_image(predictor, pre.name, pre.read_bytes(), keep_image=True)),
            "benign": (benign, analyse_image(predictor, benign.name, benign.read_bytes(), heatmap=False)),
            "bad": analyse_image(predictor, "notes.txt", b"not an image at all")}


def test_analyse_image_records_model_weights_settings_and_thumbnails(analysed, predictor):
    path, item = analysed["pre"]
    a = item.analysis
    assert a.file_name == path.name and a.image_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert a.status.gives_subtype and a.suggested_label in ("Benign", "Early", "Pre", "Pro")
    assert a.diagnosis["file"] == path.name and a.diagnosis["status"] == a.status.value
    assert a.model == "mobilenetv2-baseline" and a.model_display == predictor.display
    assert a.weights == {"mobilenetv2-baseline": file_sha256(SHIPPED)}
    assert a.settings == {"views": 1, "stain": "none", "threshold": predictor.threshold,
                          "temperature": predictor.temperature}
    analysed_at = datetime.fromisoformat(a.analysed_at)
    assert analysed_at.utcoffset() == timedelta(0) and a.app_version == __version__ == "0.5.0"
    assert item.image_bytes == path.read_bytes()  # keep_image=True
    thumb, cam = Image.open(io.BytesIO(item.thumbnail)), Image.open(io.BytesIO(item.cam_thumbnail))
    assert thumb.format == cam.format == "JPEG" and max(thumb.size) <= 256 and cam.size == thumb.size


def test_a_bad_file_becomes_an_error_item_that_can_only_be_reclassified_or_unusable(analysed):
    bad = analysed["bad"]
    assert bad.analysis.status is Status.ERROR and bad.analysis.message
    assert bad.thumbnail is None and bad.cam_thumbnail is None and bad.analysis.suggested_label is None
    case = Case("S-1")
    case.add(bad)
    with pytest.raises(InvalidDecision, match="nothing to confirm"):
        case.decide(0, Decision.CONFIRMED)
    case.decide(0, Decision.UNUSABLE)
    assert case.images[0].review.final_label is None


def test_without_heatmap_there_is_no_grad_cam_and_no_upload_kept(analysed):
    _, item = analysed["benign"]
    assert item.analysis.suggested_label and item.thumbnail and item.cam_thumbnail is None
    assert item.image_bytes is None  # the default keeps no upload


def test_decisions_are_validated():
    case = Case("S-1")
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        case.add(make_image(name, label="Pre-B"))
    review = case.decide(0, "confirmed")
    assert review.decision is Decision.CONFIRMED and review.final_label == "Pre" and review.decided_at
    with pytest.raises(InvalidDecision, match="reason"):
        case.decide(1, Decision.RECLASSIFIED, "Pro")
    with pytest.raises(InvalidDecision, match="reason"):
        case.decide(1, Decision.RECLASSIFIED, "Pro", reason="   ")
    with pytest.raises(InvalidDecision, match="confirm it instead"):
        case.decide(1, Decision.RECLASSIFIED, "Pre-B", reason="same class")
    with pytest.raises(InvalidDecision, match="not one of the classes"):
        case.decide(1, Decision.RECLASSIFIED, "T-cell", reason="looks like T")
    with pytest.raises(InvalidDecision, match="Choose the class"):
        case.decide(1, Decision.RECLASSIFIED, reason="no class given")
    with pytest.raises(InvalidDecision, match="to choose another class, reclassify"):
        case.decide(1, Decision.CONFIRMED, "Pro")
    with pytest.raises(InvalidDecision, match="no final class"):
        case.decide(1, Decision.UNUSABLE, "Pro")
    with pytest.raises(InvalidDecision, match="not a decision"):
        case.decide(1, "maybe")
    with pytest.raises(CaseError, match="no image number 4"):
        case.decide(3, Decision.UNUSABLE)
    review = case.decide(1, Decision.RECLASSIFIED, "Pro-B", reason=" lobulated nuclei ")  # display names too
    assert review.final_label == "Pro" and review.reason == "lobulated nuclei"
    assert case.undecided() == [2]
    assert all(isinstance(e, ValueError) for e in (CaseError(), CaseFrozen(), InvalidDecision(), NotReadyToSign()))


def test_specimen_id_is_required_and_stripped():
    with pytest.raises(CaseError, match="specimen ID"):
        Case("   ")
    case = Case("  S-7 ", patient_ref="  MRN 12 ")
    assert case.specimen_id == "S-7" and case.patient_ref == "MRN 12"
    assert len(case.case_id) == 32 and case.status is CaseStatus.OPEN and case.signed_by is None


def test_signing_is_refused_until_every_image_is_decided_then_freezes_the_case():
    case = Case("S-1")
    with pytest.raises(NotReadyToSign, match="at least one image"):
        case.sign("Dr A")
    case.add(make_image("a.jpg"))
    case.add(make_image("b.jpg", status="out_of_scope", label=None, confidence=None))
    case.decide(0, Decision.CONFIRMED)
    assert not case.can_sign and case.undecided() == [1]
    with pytest.raises(NotReadyToSign, match="image 2 has no decision"):
        case.sign("Dr A")
    case.decide(1, Decision.UNUSABLE, reason="smudged")
    assert case.can_sign
    with pytest.raises(NotReadyToSign, match="name"):
        case.sign("  ")
    case.impression = "Consistent with Pre-B ALL."
    case.sign(" Dr A ")
    assert case.status is CaseStatus.SIGNED and case.signed_by == "Dr A" and case.signed_at and not case.can_sign
    with pytest.raises(CaseFrozen, match="signed by Dr A"):
        case.decide(0, Decision.UNUSABLE)
    with pytest.raises(CaseFrozen):
        case.add(make_image("c.jpg"))
    with pytest.raises(CaseFrozen):
        case.impression = "changed"
    with pytest.raises(CaseFrozen):
        case.sign("Dr B")
    assert case.impression == "Consistent with Pre-B ALL." and len(case.images) == 2


def test_summary_counts_and_agreement():
    case = Case("S-1")
    suggestions = ["Pre-B", "Pre-B", "Pro-B", "Benign", None, "Pre-B"]
    for i, label in enumerate(suggestions):
        case.add(make_image(f"{i}.jpg", status="ok" if label else "out_of_scope", label=label))
    assert case.summary()["agreement"] is None
    case.decide(0, Decision.CONFIRMED)
    case.decide(1, Decision.CONFIRMED)
    case.decide(2, Decision.RECLASSIFIED, "Pre", reason="nucleoli")
    case.decide(3, Decision.UNUSABLE, reason="blurred")
    case.decide(4, Decision.RECLASSIFIED, "Early", reason="model gave none")  # no suggestion: a disagreement
    s = case.summary()
    assert s["images"] == 6 and s["undecided"] == 1 and s["unusable"] == 1
    assert s["confirmed"] == 2 and s["reclassified"] == 2
    assert s["per_class"] == {"Benign": 0, "Early": 1, "Pre": 3, "Pro": 0}
    assert s["agreement"] == pytest.approx(2 / 4)


def _reviewed_case(image_bytes: bytes | None = None) -> Case:
    case = Case("S-9", patient_ref="ref 1")
    case.add(make_image("a.jpg", image_bytes=image_bytes))
    case.add(make_image("b.jpg", label="Pro-B", confidence=0.71, status="uncertain"))
    case.add(make_image("c.jpg", status="error", label=None, confidence=None))
    case.decide(0, Decision.CONFIRMED)
    case.decide(1, Decision.RECLASSIFIED, "Early", reason="fine chromatin, \"scant\" cytoplasm, কোষ")
    case.decide(2, Decision.UNUSABLE)
    case.impression = "Pre-B; এক"
    return case


def test_json_round_trip_keeps_everything_and_image_bytes_only_when_kept():
    case = _reviewed_case(image_bytes=b"\xff\xd8raw upload")
    again = Case.from_json(case.to_json())
    assert again == case and again.images[0].image_bytes == b"\xff\xd8raw upload"
    assert again.images[0].thumbnail == case.images[0].thumbnail
    d = case.to_dict(keep_images=False)
    assert "image" not in d["images"][0] and d["images"][0]["thumbnail"]
    assert "image" not in case.to_dict()["images"][1]  # never kept
    assert Case.from_dict(d).images[0].image_bytes is None
    json.loads(case.to_json())  # plain JSON
    case.sign("Dr A")
    signed = Case.from_json(case.to_json())
    assert signed == case and signed.status is CaseStatus.SIGNED
    with pytest.raises(CaseFrozen):
        signed.decide(0, Decision.UNUSABLE)
    with pytest.raises(CaseError, match="not a LeukoScope case"):
        Case.from_dict({"specimen_id": "x"})


def test_csv_has_one_row_per_image_with_the_trace_columns():
    case = _reviewed_case()
    rows = list(csv.DictReader(io.StringIO(case.to_csv())))
    assert tuple(rows[0]) == CSV_COLUMNS == (
        "specimen", "file", "image_sha256", "status", "suggested_label", "confidence", "decision", "final_label",
        "reason", "model", "weights_sha256", "analysed_at", "app_version")
    assert [r["file"] for r in rows] == ["a.jpg", "b.jpg", "c.jpg"]
    a, b, c = rows
    assert (a["suggested_label"], a["decision"], a["final_label"], a["confidence"]) == ("Pre-B", "confirmed", "Pre-B",
                                                                                          "0.9300")
    assert (b["status"], b["final_label"], b["reason"]) == ("uncertain", "Early Pre-B",
                                                             "fine chromatin, \"scant\" cytoplasm, কোষ")
    assert (c["status"], c["suggested_label"], c["decision"], c["final_label"]) == ("error", "", "unusable", "")
    assert all(r["specimen"] == "S-9" and r["weights_sha256"] == f"mobilenetv2-baseline={WEIGHTS_SHA}"
               and r["app_version"] == __version__ and r["model"] == "mobilenetv2-baseline" for r in rows)


def test_case_image_round_trips_alone():
    item = make_image("x.jpg")
    assert CaseImage.from_dict(item.to_dict()) == item


def test_times_are_shown_in_local_time_with_their_offset():
    from datetime import timedelta, timezone

    from core.case import display_time

    dhaka = timezone(timedelta(hours=6))
    assert display_time("2025-01-31T09:15:02+00:00", dhaka) == "2025-01-31 15:15 (UTC+06:00)"
    assert display_time("2025-01-31T09:15:02", timezone.utc) == "2025-01-31 09:15 (UTC+00:00)"  # naive = UTC
    assert display_time(None) == "" and display_time("not a time") == "not a time"


def test_an_addendum_goes_to_a_signed_case_only_and_survives_json():
    from case_helpers import make_image

    from core.case import Case, CaseError, CaseFrozen, Decision

    case = Case("S-9")
    case.add(make_image())
    with pytest.raises(CaseError, match="signed case"):
        case.add_addendum("late finding", "Dr A")  # an open case is changed directly
    case.decide(0, Decision.CONFIRMED)
    case.sign("Dr A")
    with pytest.raises(CaseError, match="text"):
        case.add_addendum("   ", "Dr A")
    with pytest.raises(CaseError, match="name"):
        case.add_addendum("flow cytometry: CD10+", " ")
    added = case.add_addendum("flow cytometry: CD10+", "Dr B")
    assert (added.text, added.by) == ("flow cytometry: CD10+", "Dr B") and added.at
    with pytest.raises(CaseFrozen):
        case.impression = "rewritten"  # the signed case itself still cannot change
    assert Case.from_json(case.to_json()).addenda == [added]
