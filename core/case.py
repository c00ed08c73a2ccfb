"""A hematologist's case: one specimen's images, the model's analysis of each, the reviewer's
decision on each, and a sign-off that freezes it all.

`analyse_image` is the one way an image becomes a case item: it records what the model said
(the `core.predict.Diagnosis` record), which model and weights said it (SHA-256 of every
weights file), with which settings, when, and under which app version, so a signed case can be
traced back to the exact network years later. The reviewer then confirms the suggested class,
reclassifies the image (with a reason) or marks it unusable; `Case.sign` refuses until every
image is decided, and a signed case refuses every further change (`CaseFrozen`).

Labels: a `Review.final_label` is a `core.labels.CLASS_FOLDERS` value ("Pre"); files and the
report show the display name ("Pre-B").
"""
from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone, tzinfo
from enum import Enum
from typing import Any

import cv2
import numpy as np
from PIL import Image

from core import __version__
from core.errors import LeukoScopeError
from core.i18n import N_, Text
from core.imageio import ImageError, decode_image
from core.inference import Predictor
from core.labels import CLASS_FOLDERS, DISPLAY_NAMES
from core.predict import HOLD_SIDE, diagnose
from core.provenance import weights_sha256
from core.stain import StainMethod
from core.status import Status

THUMBNAIL_SIDE = 256  # px, the longer side of the thumbnails a case keeps and the report prints
FORMAT = "leukoscope-case"
FORMAT_VERSION = 2  # 2: signed cases carry addenda
_FOLDER_OF_DISPLAY = {display: folder for folder, display in DISPLAY_NAMES.items()}


class Decision(str, Enum):
    CONFIRMED = "confirmed"  # the reviewer agrees with the model's suggested class
    RECLASSIFIED = "reclassified"  # the reviewer chose another class, and says why
    UNUSABLE = "unusable"  # the image cannot be classified (blurred, wrong field, not a blast...)

    def __str__(self) -> str:
        return self.value


class CaseStatus(str, Enum):
    OPEN = "open"
    SIGNED = "signed"  # frozen: every later change is refused

    def __str__(self) -> str:
        return self.value


class CaseError(LeukoScopeError, ValueError):
    """A change a case refuses; the message is one sentence shown to the reviewer as is."""


class CaseFrozen(CaseError):
    """The case is signed, so it cannot change any more."""


class InvalidDecision(CaseError):
    """A decision that does not fit the image (e.g. a reclassification without a reason)."""


class NotReadyToSign(CaseError):
    """Signing was asked for before every image was decided, or without a reviewer name."""


def now_utc() -> str:
    """The current time as ISO-8601 UTC, to the second (e.g. 2025-01-31T09:15:02+00:00)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def display_time(iso: str | None, tz: tzinfo | None = None) -> str:
    """A stored ISO-8601 time as a reader sees it: in the machine's time zone (or `tz`), with the
    offset, e.g. "2025-01-31 15:15 (UTC+06:00)": the same digits in every language, and never
    ambiguous when a report travels. Empty for no time; text that is not a time comes back as is."""
    if not iso:
        return ""
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    local = (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(tz)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M} (UTC{offset[:3]}:{offset[3:]})"


def label_folder(label: str) -> str:
    """The CLASS_FOLDERS value of a class given by folder ("Pre") or display name ("Pre-B")."""
    if label in CLASS_FOLDERS:
        return label
    if label in _FOLDER_OF_DISPLAY:
        return _FOLDER_OF_DISPLAY[label]
    names = ", ".join(DISPLAY_NAMES[c] for c in CLASS_FOLDERS)
    raise InvalidDecision(f"{label!r} is not one of the classes {names}.")


@dataclass
class ImageAnalysis:
    """What the model said about one image, and everything needed to trace it back."""

    file_name: str
    image_sha256: str  # of the uploaded bytes ("" when there were none to hash)
    diagnosis: dict[str, Any]  # core.predict.Diagnosis.to_dict()
    model: str  # registry name, e.g. "lite1-mobilenetv2"
    model_display: str
    weights: dict[str, str]  # member name -> SHA-256 of its weights file
    settings: dict[str, Any]  # views, stain, threshold, temperature
    analysed_at: str  # ISO-8601 UTC
    app_version: str = __version__

    @property
    def status(self) -> Status:
        return Status(self.diagnosis["status"])

    @property
    def suggested_label(self) -> str | None:
        """The model's class as a CLASS_FOLDERS value, or None when it gave no subtype."""
        label = self.diagnosis.get("label")
        return _FOLDER_OF_DISPLAY.get(label) if label and self.status.gives_subtype else None

    @property
    def confidence(self) -> float | None:
        return self.diagnosis.get("confidence") if self.suggested_label else None

    @property
    def message(self) -> str:
        return self.diagnosis.get("message") or ""


@dataclass(frozen=True)
class Addendum:
    """A note added to a signed case (a correction or later finding), as a signed report is
    amended in a laboratory: the signed case stays as it was; the addendum is shown with it."""

    text: str
    by: str
    at: str  # ISO-8601 UTC

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "by": self.by, "at": self.at}


@dataclass
class Review:
    """The reviewer's decision on one image; who decided is recorded once, when the case is signed."""

    decision: Decision
    final_label: str | None  # a CLASS_FOLDERS value; None when unusable
    reason: str = ""
    decided_at: str = field(default_factory=now_utc)

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision.value, "final_label": self.final_label, "reason": self.reason,
                "decided_at": self.decided_at}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Review":
        return cls(Decision(d["decision"]), d.get("final_label"), d.get("reason") or "", d.get("decided_at") or "")


@dataclass
class CaseImage:
    analysis: ImageAnalysis
    review: Review | None = None  # None until the reviewer decides
    image_bytes: bytes | None = None  # the upload itself, only when the user keeps images
    thumbnail: bytes | None = None  # JPEG, at most THUMBNAIL_SIDE px a side
    cam_thumbnail: bytes | None = None  # JPEG of the Grad-CAM overlay, same size; None without a subtype

    @property
    def final_label(self) -> str | None:
        return self.review.final_label if self.review else None

    def to_dict(self, keep_images: bool = True) -> dict[str, Any]:
        """JSON-ready; the upload's bytes (base64) only when kept and `keep_images`."""
        d = {"analysis": _analysis_to_dict(self.analysis), "review": self.review.to_dict() if self.review else None,
             "thumbnail": _b64(self.thumbnail), "cam_thumbnail": _b64(self.cam_thumbnail)}
        if keep_images and self.image_bytes is not None:
            d["image"] = _b64(self.image_bytes)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CaseImage":
        return cls(_analysis_from_dict(d["analysis"]), Review.from_dict(d["review"]) if d.get("review") else None,
                   _unb64(d.get("image")), _unb64(d.get("thumbnail")), _unb64(d.get("cam_thumbnail")))


def _analysis_to_dict(analysis: ImageAnalysis) -> dict[str, Any]:
    # The message is a core.i18n.Text: its parts are saved too, so a reopened case still shows it
    # in the reader's language.
    d = asdict(analysis)
    message = analysis.diagnosis.get("message")
    if isinstance(message, Text):
        d["diagnosis"]["message_parts"] = message.to_parts()
    return d


def _analysis_from_dict(d: dict[str, Any]) -> ImageAnalysis:
    diagnosis = dict(d["diagnosis"])
    parts = diagnosis.pop("message_parts", None)
    if parts:
        diagnosis["message"] = Text.from_parts(parts)
    return ImageAnalysis(**{**d, "diagnosis": diagnosis})


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


CSV_COLUMNS = ("specimen", "file", "image_sha256", "status", "suggested_label", "confidence", "decision",
               "final_label", "reason", "model", "weights_sha256", "analysed_at", "app_version")


@dataclass
class Case:
    """One specimen under review. Change it through `add`, `decide` and attribute assignment
    while open; once `sign`ed, every change raises `CaseFrozen`."""

    specimen_id: str
    patient_ref: str = ""  # typed by the user; the app never derives it from the images
    case_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = field(default_factory=now_utc)
    images: list[CaseImage] = field(default_factory=list)
    impression: str = ""  # the reviewer's case-level text
    signed_by: str | None = None
    signed_at: str | None = None
    addenda: list[Addendum] = field(default_factory=list)  # only after signing (add_addendum)
    # Last, so that __init__ assigns every other field before a signed status freezes the case.
    status: CaseStatus = CaseStatus.OPEN

    def __post_init__(self) -> None:
        specimen = (self.specimen_id or "").strip()
        if not specimen:
            raise CaseError(Text(N_("A case needs a specimen ID.")))
        object.__setattr__(self, "specimen_id", specimen)
        object.__setattr__(self, "patient_ref", (self.patient_ref or "").strip())
        object.__setattr__(self, "status", CaseStatus(self.status))

    def __setattr__(self, name: str, value: Any) -> None:
        self._check_open()
        super().__setattr__(name, value)

    def _check_open(self) -> None:
        # Before __init__ assigns it, `status` is the class default (OPEN).
        if getattr(self, "status", CaseStatus.OPEN) is CaseStatus.SIGNED:
            raise CaseFrozen(Text(N_("This case was signed by {name} on {when} and can no longer be changed; add "
                                "an addendum, or open a new case."), name=self.signed_by, when=display_time(self.signed_at)))

    # -- building and reviewing ------------------------------------------------------------
    def add(self, image: CaseImage) -> int:
        """Append an analysed image; returns its index."""
        self._check_open()
        self.images.append(image)
        return len(self.images) - 1

    def _image(self, index: int) -> CaseImage:
        if not 0 <= index < len(self.images):
            raise CaseError(Text(N_("There is no image number {number} in this case of {count} images."),
                                 number=str(index + 1), count=str(len(self.images))))
        return self.images[index]

    def decide(self, index: int, decision: Decision | str, final_label: str | None = None,
               reason: str = "") -> Review:
        """Record the reviewer's decision on image `index` (replacing an earlier one while open).

        confirmed: the final class is the model's suggestion (impossible without one);
        reclassified: `final_label` (folder or display name) must differ from the suggestion,
        and `reason` is required; unusable: no final class.
        """
        self._check_open()
        image = self._image(index)
        try:
            decision = Decision(decision)
        except ValueError:
            choices = ", ".join(d.value for d in Decision)
            raise InvalidDecision(f"{decision!r} is not a decision; choose one of {choices}.") from None
        reason = (reason or "").strip()
        suggested = image.analysis.suggested_label
        name = image.analysis.file_name
        if decision is Decision.CONFIRMED:
            if suggested is None:
                raise InvalidDecision(Text(N_("The model suggested no class for {name}, so there is nothing to "
                                                 "confirm; reclassify it or mark it unusable."), name=name))
            if final_label is not None and label_folder(final_label) != suggested:
                raise InvalidDecision(Text(N_("Confirming keeps the suggested class; to choose another class, "
                                                 "reclassify.")))
            final = suggested
        elif decision is Decision.RECLASSIFIED:
            if not final_label:
                raise InvalidDecision(Text(N_("Choose the class you reclassify {name} as."), name=name))
            final = label_folder(final_label)
            if final == suggested:
                raise InvalidDecision(Text(N_("{label} is the model's own suggestion for {name}; confirm it instead "
                                                 "of reclassifying."), label=DISPLAY_NAMES[final], name=name))
            if not reason:
                raise InvalidDecision(Text(N_("Give a reason for reclassifying {name}."), name=name))
        else:
            if final_label:
                raise InvalidDecision(Text(N_("An unusable image has no final class; leave the class empty.")))
            final = None
        image.review = Review(decision, final, reason)
        return image.review

    def undecided(self) -> list[int]:
        """Indexes of the images without a decision yet."""
        return [i for i, im in enumerate(self.images) if im.review is None]

    @property
    def can_sign(self) -> bool:
        return self.status is CaseStatus.OPEN and bool(self.images) and not self.undecided()

    def sign(self, reviewer_name: str) -> None:
        """Sign the case as `reviewer_name`, which freezes it."""
        self._check_open()
        name = (reviewer_name or "").strip()
        if not name:
            raise NotReadyToSign(Text(N_("Enter the reviewer's name to sign the case.")))
        if not self.images:
            raise NotReadyToSign(Text(N_("A case needs at least one image before it can be signed.")))
        missing = self.undecided()
        if missing:
            numbers = ", ".join(str(i + 1) for i in missing)
            raise NotReadyToSign(Text(N_("Decide every image before signing; images {numbers} have no decision yet.")
                                      if len(missing) > 1 else
                                      N_("Decide every image before signing; image {numbers} has no decision yet."),
                                      numbers=numbers))
        self.signed_by, self.signed_at = name, now_utc()
        self.status = CaseStatus.SIGNED  # last: from here on _check_open refuses

    def add_addendum(self, text: str, by: str, at: str | None = None) -> Addendum:
        """Append an addendum to a signed case (an open case is changed directly instead)."""
        if self.status is not CaseStatus.SIGNED:
            raise CaseError(Text(N_("An addendum is added to a signed case; while the case is open, change it "
                                    "directly.")))
        text, by = (text or "").strip(), (by or "").strip()
        if not text:
            raise CaseError(Text(N_("Write the addendum's text.")))
        if not by:
            raise CaseError(Text(N_("Enter your name to add the addendum.")))
        addendum = Addendum(text, by, at or now_utc())
        self.addenda.append(addendum)  # the list, not an attribute: a signed case still refuses assignments
        return addendum

    # -- results -----------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Counts for the case: images per final class, unusable, undecided, confirmed and
        reclassified, and the agreement (share of the usable reviewed images whose final class is
        the model's suggestion; None before any)."""
        reviews = [(im.analysis.suggested_label, im.review) for im in self.images if im.review]
        usable = [(s, r) for s, r in reviews if r.decision is not Decision.UNUSABLE]
        agreeing = sum(1 for s, r in usable if r.final_label == s)
        return {
            "images": len(self.images),
            "per_class": {c: sum(1 for _, r in usable if r.final_label == c) for c in CLASS_FOLDERS},
            "unusable": len(reviews) - len(usable),
            "undecided": len(self.images) - len(reviews),
            "confirmed": sum(1 for _, r in reviews if r.decision is Decision.CONFIRMED),
            "reclassified": sum(1 for _, r in reviews if r.decision is Decision.RECLASSIFIED),
            "agreement": agreeing / len(usable) if usable else None,
        }

    # -- files -------------------------------------------------------------------------------
    def to_dict(self, keep_images: bool = True) -> dict[str, Any]:
        """JSON-ready; uploads' bytes (base64) only for images that kept them, and only if `keep_images`."""
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "case_id": self.case_id, "specimen_id": self.specimen_id, "patient_ref": self.patient_ref,
            "created_at": self.created_at, "status": self.status.value, "impression": self.impression,
            "signed_by": self.signed_by, "signed_at": self.signed_at,
            "images": [im.to_dict(keep_images) for im in self.images],
            "addenda": [a.to_dict() for a in self.addenda],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Case":
        if d.get("format") != FORMAT:
            raise CaseError(Text(N_("This file is not a LeukoScope case.")))
        if int(d.get("format_version", 0)) > FORMAT_VERSION:
            raise CaseError(Text(N_("This case was written by a newer LeukoScope; update the app to open it.")))
        return cls(
            specimen_id=d["specimen_id"], patient_ref=d.get("patient_ref") or "", case_id=d["case_id"],
            created_at=d["created_at"], images=[CaseImage.from_dict(im) for im in d.get("images", [])],
            impression=d.get("impression") or "", signed_by=d.get("signed_by"), signed_at=d.get("signed_at"),
            addenda=[Addendum(**a) for a in d.get("addenda", [])],
            status=CaseStatus(d.get("status", CaseStatus.OPEN.value)),
        )

    def to_json(self, keep_images: bool = True) -> str:
        return json.dumps(self.to_dict(keep_images), indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Case":
        return cls.from_dict(json.loads(text))

    def to_csv(self) -> str:
        """One row per image (columns CSV_COLUMNS); classes by display name."""
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(CSV_COLUMNS)
        for im in self.images:
            a, r = im.analysis, im.review
            suggested = a.suggested_label
            w.writerow([
                self.specimen_id, a.file_name, a.image_sha256, a.status.value,
                DISPLAY_NAMES[suggested] if suggested else "",
                "" if a.confidence is None else f"{a.confidence:.4f}",
                r.decision.value if r else "",
                DISPLAY_NAMES[r.final_label] if r and r.final_label else "",
                r.reason if r else "", a.model, ";".join(f"{m}={h}" for m, h in a.weights.items()),
                a.analysed_at, a.app_version,
            ])
        return buf.getvalue()


# -- analysis --------------------------------------------------------------------------------
def _fit(rgb: np.ndarray, side: int) -> np.ndarray:
    """`rgb` shrunk (never enlarged) so that its longer side is at most `side`."""
    scale = side / max(rgb.shape[:2])
    if scale >= 1.0:
        return rgb
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def predictor_settings(predictor: Predictor) -> dict[str, Any]:
    """The settings that change what a predictor outputs, as recorded with every analysis."""
    return {"views": int(predictor.views), "stain": StainMethod(predictor.stain).value,
            "threshold": float(predictor.threshold), "temperature": float(predictor.temperature)}


def analyse_image(predictor: Predictor, file_name: str, data: bytes | ImageError, *, heatmap: bool = True,
                  keep_image: bool = False) -> CaseImage:
    """Analyse one uploaded file into a case item; never raises for a bad file (it becomes an
    `error` item). With a subtype and `heatmap`, also the Grad-CAM of the suggested class by the
    first member. `keep_image` keeps the upload's bytes in the item (for a history that stores them)."""
    raw = data if isinstance(data, (bytes, bytearray)) else b""
    rgb: np.ndarray | None = None
    item: bytes | np.ndarray | ImageError = data
    if not isinstance(data, ImageError):
        try:
            rgb = decode_image(bytes(data))
            item = rgb  # decoded once, for the diagnosis and the thumbnails
        except ImageError as exc:
            item = exc
        except Exception:  # noqa: BLE001 - diagnose words a decoder failure the same way for every caller
            item = bytes(data)
    record = diagnose(predictor, [(file_name, item)])[0]
    analysis = ImageAnalysis(
        file_name=file_name, image_sha256=hashlib.sha256(raw).hexdigest() if raw else "",
        diagnosis=record.to_dict(), model=predictor.name, model_display=predictor.display,
        weights={m.name: weights_sha256(m.weights_path) for m in predictor.members},
        settings=predictor_settings(predictor), analysed_at=now_utc(),
    )
    case_image = CaseImage(analysis, image_bytes=bytes(raw) if keep_image and raw else None)
    if rgb is None:
        return case_image
    thumb = _fit(rgb, THUMBNAIL_SIDE)
    case_image.thumbnail = _jpeg(thumb)
    suggested = analysis.suggested_label
    if heatmap and suggested is not None:
        case_image.cam_thumbnail = _cam_thumbnail(predictor, _fit(rgb, HOLD_SIDE), thumb,
                                                  CLASS_FOLDERS.index(suggested))
    return case_image


def _cam_thumbnail(predictor: Predictor, rgb: np.ndarray, thumb: np.ndarray, class_index: int) -> bytes | None:
    """JPEG of the first member's Grad-CAM for `class_index` over the thumbnail, or None where
    Grad-CAM cannot run (another Keras backend)."""
    from core.explain import ExplainUnavailable, class_activation_map, overlay_heatmap

    member = predictor.members[0]
    seen = predictor.model_inputs([rgb])[0]  # what the network saw (stain-normalised when that is on)
    try:
        heat = class_activation_map(member.model, seen, member.image_size, class_index)
    except ExplainUnavailable:
        return None
    heat = cv2.resize(heat, (thumb.shape[1], thumb.shape[0]), interpolation=cv2.INTER_LINEAR)
    return _jpeg(overlay_heatmap(thumb, heat))
