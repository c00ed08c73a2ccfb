"""Diagnose smear images: `python -m core.predict --model default FILE... [--json | --csv OUT]`.

One record per file with a status (core.status.Status): `ok`, `uncertain` (confidence
below the model's validated threshold: refer for manual review), `out_of_scope` (a smear,
but unlike any image the model was validated on: no subtype given, with the reason),
`rejected` (does not look like a peripheral blood smear: no diagnosis given) or `error`
(the file cannot be used). The app's Diagnose, Compare and Batch pages call `diagnose`
too, so they show the same statuses.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import cv2
import numpy as np

from core.cli import model_option
from core.i18n import N_, Text, message_of
from core.imageio import MAX_BYTES, ImageError, decode_image
from core.inference import VIEWS, ModelUnavailable, Predictor, load_predictor
from core.labels import CLASS_FOLDERS, DISPLAY_NAMES
from core.cells import WhiteCells, find_white_cells, training_reference
from core.smear_check import check_smear
from core.stain import DEFAULT_ON as STAIN_DEFAULT_ON, StainMethod
from core.status import Status, explain

CHUNK = 32  # images held at once (each at most HOLD_SIDE px a side): ~100 MB for any number of files
HOLD_SIDE = 1024


@dataclass
class Diagnosis:
    file: str
    status: Status
    label: str | None = None  # display name, e.g. "Pre-B"
    confidence: float | None = None
    probabilities: dict[str, float] | None = None  # display name -> probability
    message: str = ""
    seconds: float = 0.0
    members: dict[str, dict[str, float]] = field(default_factory=dict)
    smear_score: float | None = None
    scope_ratio: float | None = None  # model-feature distance / its validated threshold; > 1 out of scope
    white_cells: int | None = None  # nucleated cells found (core.cells)
    white_cell_diameter_px: float | None = None  # their median diameter, in pixels of the upload

    def to_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        return d


def _probs_dict(p: np.ndarray) -> dict[str, float]:
    return {DISPLAY_NAMES[c]: round(float(v), 6) for c, v in zip(CLASS_FOLDERS, p)}


def diagnose(predictor: Predictor,
             files: Iterable[tuple[str, bytes | np.ndarray | ImageError]]) -> list[Diagnosis]:
    """Diagnose (name, bytes | RGB uint8 array | ImageError) pairs. Never raises for a bad
    file: every file gets a record, and one bad file does not stop the others."""
    records: list[Diagnosis] = []
    pending: list[tuple[Diagnosis, np.ndarray, float]] = []

    def flush() -> None:
        if not pending:
            return
        t0 = time.perf_counter()
        images = [im for _, im, _ in pending]
        members, scope = predictor.predict_members_and_scope(images)
        probs = predictor.combine(members)
        per_image = (time.perf_counter() - t0) / len(pending)
        for i, (rec, _, t_pre) in enumerate(pending):
            p = probs[i]
            k = int(p.argmax())
            rec.label, rec.confidence = DISPLAY_NAMES[CLASS_FOLDERS[k]], float(p[k])
            rec.probabilities = _probs_dict(p)
            if predictor.is_ensemble:
                rec.members = {n: _probs_dict(mp[i]) for n, mp in members.items()}
            rec.seconds = t_pre + per_image
            if scope is not None:
                rec.scope_ratio = round(float(scope[i]), 4)
            if scope is not None and scope[i] > 1.0:
                rec.status = Status.OUT_OF_SCOPE
                rec.message = explain(Status.OUT_OF_SCOPE, Text(N_(
                    "its cells or stain look unlike the training images: an unusual cell type, stain or "
                    "magnification")))
                rec.label = rec.confidence = None  # no subtype; the raw probabilities stay for audit
            elif rec.confidence < predictor.threshold:
                rec.status = Status.UNCERTAIN
                rec.message = explain(Status.UNCERTAIN, Text(
                    N_("confidence {confidence}, below the validated {threshold}"),
                    confidence=f"{rec.confidence:.0%}", threshold=f"{predictor.threshold:.0%}"))
            else:
                rec.status, rec.message = Status.OK, ""
        pending.clear()

    for name, data in files:
        t0 = time.perf_counter()
        rec = Diagnosis(file=name, status=Status.ERROR)
        records.append(rec)
        try:
            if isinstance(data, ImageError):
                raise data
            rgb = data if isinstance(data, np.ndarray) else decode_image(data)
        except ImageError as exc:
            rec.message = message_of(exc)
            continue
        except Exception as exc:  # a decoder bug must not cost the rest of a batch
            rec.message = Text(N_("Could not read the image ({error})."), error=type(exc).__name__)
            continue
        check = check_smear(rgb)
        rec.smear_score = round(float(check.score), 4)
        if not check.is_smear:
            rec.status = Status.REJECTED
            rec.message = explain(Status.REJECTED, check.clause)
            rec.seconds = time.perf_counter() - t0
            continue
        cells = find_white_cells(rgb)
        rec.white_cells = cells.count
        rec.white_cell_diameter_px = round(cells.median_diameter_px, 1) if cells.median_diameter_px else None
        reason = scale_reason(cells, rgb.shape)
        if reason:
            rec.status, rec.message = Status.OUT_OF_SCOPE, explain(Status.OUT_OF_SCOPE, reason)
            rec.seconds = time.perf_counter() - t0
            continue
        if max(rgb.shape[:2]) > HOLD_SIDE:  # networks take 132-160 px; keep memory bounded for big scans
            scale = HOLD_SIDE / max(rgb.shape[:2])
            rgb = cv2.resize(rgb, (round(rgb.shape[1] * scale), round(rgb.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
        pending.append((rec, rgb, time.perf_counter() - t0))
        if len(pending) >= CHUNK:
            flush()
    flush()
    return records


# The red cells' diameter relative to the field, as the training images show it (core/data/
# white_cells.json: p1 14.3 px, p99 25.8 px of 224 px fields), widened by this factor either way.
SCALE_MARGIN = 1.3


def scale_reason(cells: WhiteCells, shape: tuple[int, ...]) -> str:
    """Why a smear is outside the training images' scope before the model sees it, or "":
    no white cell at all, or red cells much larger or smaller relative to the field than in
    the training images (another magnification or a cropped/tiled field: the model sees the
    whole field resized, so the size that matters is relative to it)."""
    if cells.count == 0:
        return Text(N_("no white cell is in view, only red cells or platelets"))
    ref = training_reference().get("rbc_diameter_px") or {}
    side = max(shape[:2])
    if not (cells.rbc_diameter_px and ref.get("p1") and ref.get("p99") and side):
        return ""
    relative = cells.rbc_diameter_px / side
    train_side = 224.0  # every training image is a 224 px field
    low, high = ref["p1"] / train_side / SCALE_MARGIN, ref["p99"] / train_side * SCALE_MARGIN
    if low <= relative <= high:
        return ""
    factor = relative / (ref["median"] / train_side)
    if factor > 1:
        return Text(N_("its cells look about {factor} times larger relative to the field than in the training "
                       "images, as at another magnification or zoom"), factor=f"{factor:.1f}")
    return Text(N_("its cells look about {factor} times smaller relative to the field than in the training "
                   "images, as at another magnification or zoom"), factor=f"{1 / factor:.1f}")


def provenance(predictor: Predictor) -> dict[str, str]:
    """What produced a set of records: model, SHA-256 of each weights file, app version, time (UTC)."""
    from core import __version__
    from core.provenance import weights_sha256

    return {"model": predictor.name,
            "weights_sha256": ";".join(f"{m.name}={weights_sha256(m.weights_path)}" for m in predictor.members),
            "app_version": __version__, "analysed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def records_to_csv(records: list[Diagnosis], meta: dict[str, str] | None = None) -> str:
    """CSV text: file, status, label, confidence, message, seconds, one column per class, then
    the `meta` columns (e.g. `provenance(predictor)`) repeated on every row."""
    buf = io.StringIO()
    names = [DISPLAY_NAMES[c] for c in CLASS_FOLDERS]
    meta = meta or {}
    w = csv.writer(buf)
    w.writerow(["file", "status", "label", "confidence", "message", "seconds", *names, *meta])
    for r in records:
        probs = [r.probabilities.get(n, "") if r.probabilities else "" for n in names]
        conf = "" if r.confidence is None else f"{r.confidence:.4f}"
        w.writerow([r.file, r.status.value, r.label or "", conf, r.message, f"{r.seconds:.3f}", *probs, *meta.values()])
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, parents=[model_option()])
    p.add_argument("files", nargs="+", help="image files")
    p.add_argument("--views", type=int, choices=VIEWS, default=1,
                   help="8: average over each image's rotations/reflections (8x slower)")
    p.add_argument("--stain", choices=[m.value for m in StainMethod],
                   default=(StainMethod.REINHARD if STAIN_DEFAULT_ON else StainMethod.NONE).value,
                   help="reinhard: match each image's colours to the training images before the network")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print a JSON list of records")
    out.add_argument("--csv", metavar="OUT", help="write the records as CSV to OUT")
    args = p.parse_args(argv)
    try:
        predictor = load_predictor(args.model, views=args.views, stain=args.stain)
    except (ModelUnavailable, KeyError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    records = diagnose(predictor, read_inputs(args.files))
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=1))
    elif args.csv:
        Path(args.csv).write_text(records_to_csv(records, provenance(predictor)))
        print(f"wrote {len(records)} records to {args.csv}")
    else:
        for r in records:
            what = f"{r.label} ({r.confidence:.1%})" if r.label else ""
            print(f"{r.file}\t{r.status}\t{what}\t{r.message}")
    return 0 if len(records) == len(args.files) else 1


def read_inputs(paths: list[str]) -> Iterable[tuple[str, bytes | ImageError]]:
    """File bytes one at a time (so memory stays bounded); a missing, unreadable or
    oversized file yields an `ImageError` that `diagnose` turns into an error record."""
    for p in paths:
        path = Path(p)
        try:
            if not path.is_file():
                yield p, ImageError(Text(N_("No such file.")))
            elif path.stat().st_size > MAX_BYTES:
                yield p, ImageError(Text(N_("The file is larger than {limit} MB."), limit=str(MAX_BYTES // 2**20)))
            else:
                yield p, path.read_bytes()
        except OSError as exc:
            yield p, ImageError(Text(N_("Cannot read the file: {error}."), error=str(exc.strerror or exc)))


if __name__ == "__main__":
    sys.exit(main())
