"""Evaluate a trained model or ensemble: `python -m core.evaluate --data DIR --model NAME --split test --out F.json`.

`--split test` is the split manifest's test part (never used for training, early
stopping or calibration); `--split val`, its validation part, is where candidates are
compared and chosen before the test part is looked at; `--split all` is every image of a folder in the dataset's
layout (an independent image set). With `--calibrate`, the temperature and the
"uncertain" threshold are fitted on the manifest's validation part and written
beside the weights.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import keras
import numpy as np

from core.augment import colour_jitter, to_grayscale
from core.cli import data_options
from core.dataset import (DatasetError, file_sha256, folder_images, load_manifest, manifest_hash,
                          manifest_part, resolve_data_dir)
from core.imageio import ImageError, read_image, resize_square
from core.inference import (VIEWS, ModelUnavailable, Predictor, _meta_path, apply_temperature, choose_threshold,
                            fit_temperature, load_predictor, predictor_meta_path)
from core.labels import CLASS_FOLDERS, DISPLAY_NAMES
from core.metrics import classification_metrics, expected_calibration_error, reliability_curve
from core.paper import Protocol
from core.provenance import device_name, git_commit

RESULTS_DIR = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def read_images(paths: list[Path]) -> tuple[list[np.ndarray], np.ndarray, list[dict]]:
    images, ok, errors = [], np.zeros(len(paths), bool), []
    for i, p in enumerate(paths):
        try:
            images.append(read_image(p))
            ok[i] = True
        except ImageError as exc:
            errors.append({"file": str(p), "error": str(exc)})
    return images, ok, errors


def stack_images(images: list[np.ndarray], side: int) -> np.ndarray:
    """(N, H, W, 3) uint8 of RGB images: as they are when all share one shape (so they equal the
    plain path exactly), else each resized to `side` x `side`."""
    if len({im.shape for im in images}) == 1:
        return np.stack(images)
    return np.stack([resize_square(im, side) for im in images])


def predictor_from_run(run_dir: Path, views: int = 1) -> Predictor:
    run = json.loads((run_dir / "run.json").read_text())
    return load_predictor(run["model"], weights_path=run_dir / f"{run['model']}.weights.h5", views=views)


def evaluate(predictor: Predictor, images: list[np.ndarray], labels: np.ndarray,
             val: tuple[list[np.ndarray], np.ndarray] | None = None, robustness: bool = False,
             calibrated: bool = True) -> dict:
    """Metrics of `predictor` on RGB images with integer labels; see module docstring.

    Metrics are of the raw (temperature 1) probabilities; the per-image probabilities
    returned are calibrated unless `calibrated` is False (the validation part itself)."""
    t0 = time.perf_counter()
    members = predictor.predict_members(images)
    seconds = time.perf_counter() - t0
    raw = predictor.combine(members, temperature=1.0)
    result = classification_metrics(labels, raw)
    result["predict_seconds"] = seconds
    calib = {"ece_before": result["ece"], "temperature_in_use": predictor.temperature,
             "reliability_before": reliability_curve(raw, labels)}
    if val is not None:
        val_raw = predictor.combine(predictor.predict_members(val[0]), temperature=1.0)
        t = fit_temperature(val_raw, val[1])
        cal = apply_temperature(raw, t)
        calib.update(
            fitted_on="validation part of the manifest", n_val=int(len(val[1])), temperature=t,
            ece_after=expected_calibration_error(cal, labels),
            threshold=choose_threshold(apply_temperature(val_raw, t), val[1]),
            val_accuracy=float((val_raw.argmax(1) == val[1]).mean()),
            reliability_after=reliability_curve(cal, labels),
        )
        conf = cal.max(axis=1)
        accepted = conf >= calib["threshold"]
        calib["test_uncertain_fraction"] = float(1 - accepted.mean())
        calib["test_accuracy_when_confident"] = float(
            (cal.argmax(1) == labels)[accepted].mean()) if accepted.any() else None
        probs = cal
    else:
        probs = apply_temperature(raw, predictor.temperature) if calibrated else raw
    result["calibration"] = calib
    if len(members) > 1:
        result["members"] = {n: classification_metrics(labels, p)["accuracy"] for n, p in members.items()}
    if robustness:
        # Same-size images equal the plain path exactly; mixed sizes meet at the largest model input.
        arr = stack_images(images, max(m.image_size for m in predictor.members))
        result["robustness"] = {
            "grayscale_accuracy": float((predictor.predict_proba(list(to_grayscale(arr))).argmax(1)
                                         == labels).mean()),
            "colour_jitter_accuracy": float((predictor.predict_proba(list(colour_jitter(arr, seed=0)))
                                             .argmax(1) == labels).mean()),
            "colour_jitter": "hue +-15 (OpenCV units), saturation +-30%, brightness/contrast +-10%, seed 0",
        }
    result["_probs"], result["_raw"] = probs, raw
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter, parents=[data_options()])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a run directory written by core.train")
    src.add_argument("--model", help="registry name (or 'default'), weights looked up in the weights dirs")
    src.add_argument("--members", nargs="+", metavar="EVAL_JSON",
                     help="with --ensemble NAME: soft-vote these members' evaluation files (their saved "
                          "per-image probabilities) instead of loading weights, e.g. DEX from runs trained elsewhere")
    p.add_argument("--ensemble", help="registry name of the ensemble that --members make up (e.g. dex)")
    p.add_argument("--split", choices=["test", "val", "all"], default="test")
    p.add_argument("--out", help="output JSON (default: benchmarks/results/<model>.<split>.json)")
    p.add_argument("--calibrate", action="store_true",
                   help="fit temperature + threshold on the validation part and save them beside the weights")
    p.add_argument("--robustness", action="store_true", help="also grayscale and colour-jittered accuracy")
    p.add_argument("--views", type=int, choices=VIEWS, default=1,
                   help="8: average each image over its rotations/reflections (test-time augmentation)")
    p.add_argument("--gate", action="store_true",
                   help="also run the app's whole path (smear check, white cells, in-scope score, threshold) and "
                        "report which images it withholds and why; the accuracy above stays that of every image")
    args = p.parse_args(argv)
    command = " ".join(["python", "-m", "core.evaluate", *(argv if argv is not None else sys.argv[1:])])
    if args.members:
        return _combine_main(args, command)
    keras.utils.set_random_seed(0)
    try:
        root = resolve_data_dir(args.data)
        predictor = (predictor_from_run(Path(args.run), args.views) if args.run
                     else load_predictor(args.model, views=args.views))
        manifest = None
        if args.split in ("test", "val"):
            manifest = load_manifest(args.manifest)
            paths, labels = manifest_part(manifest, root, args.split)
        else:
            paths, labels = folder_images(root)
        images, ok, errors = read_images(paths)
        labels, paths = labels[ok], [pp for pp, k in zip(paths, ok) if k]
        val = None
        if args.split == "test":
            vpaths, vlabels = manifest_part(manifest, root, "val")
            vimages, vok, _ = read_images(vpaths)
            val = (vimages, vlabels[vok])
    except (DatasetError, ModelUnavailable, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = evaluate(predictor, images, labels, val=val, robustness=args.robustness,
                      calibrated=args.split != "val")
    probs, raw = result.pop("_probs"), result.pop("_raw")
    saves_calibration = args.calibrate and predictor.views == 1 and "temperature" in result["calibration"]
    if saves_calibration:
        # From here on the predictor is the one the app will load: the gate says what it would do.
        predictor.temperature = result["calibration"]["temperature"]
        predictor.threshold = result["calibration"]["threshold"]
    if args.gate:
        result["gate"] = gate_report(predictor, images, labels, paths, root)
    record = {
        "model": predictor.name, "display": predictor.display, "split": args.split,
        "split_description": (f"{args.split} part of the split manifest (image-level split; no patient IDs)"
                              if manifest else f"every image under {root}"),
        **result,
        "training": {m.name: training_summary(m.weights_path) for m in predictor.members},
        "weights": {m.name: _display_path(m.weights_path) for m in predictor.members},
        "weights_sha256": {m.name: file_sha256(m.weights_path) for m in predictor.members},
        "image_size": {m.name: m.image_size for m in predictor.members}, "views": predictor.views,
        "manifest_hash": manifest_hash(manifest) if manifest else None,
        # a resized, re-encoded copy (core.dataset copy --image-size): the same images, not the same bytes
        **({"manifest_derived_from": manifest["derived_from"]} if manifest and "derived_from" in manifest else {}),
        "data": str(root), "skipped": errors,
        "command": command,
        "git_commit": git_commit(), "device": device_name(), "keras_backend": keras.backend.backend(),
        "evaluated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "predictions": [
            {"file": str(Path(pp).relative_to(root)) if Path(pp).is_relative_to(root) else str(pp),
             "true": CLASS_FOLDERS[int(t)], "predicted": CLASS_FOLDERS[int(pr.argmax())],
             "probabilities": [round(float(v), 6) for v in pr],
             # temperature 1: what soft voting of members averages (core.inference.Predictor.combine)
             "probabilities_uncalibrated": [round(float(v), 6) for v in pr_raw]}
            for pp, t, pr, pr_raw in zip(paths, labels, probs, raw)
        ],
    }
    views = f".views{predictor.views}" if predictor.views > 1 else ""
    out = Path(args.out) if args.out else RESULTS_DIR / f"{predictor.name}{views}.{args.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    if args.calibrate and predictor.views > 1:
        print("note: --calibrate is ignored with --views: the shipped calibration is for one view", file=sys.stderr)
    elif saves_calibration:
        save_calibration(predictor, result["calibration"])
    pc = result["per_class"]
    print(json.dumps({"model": predictor.name, "split": args.split, "n_images": result["n_images"],
                      "accuracy": round(result["accuracy"], 4),
                      "benign_recall": round(pc["Benign"]["recall"], 4),
                      "ece_before": round(result["calibration"]["ece_before"], 4),
                      "ece_after": result["calibration"].get("ece_after"),
                      "robustness": result.get("robustness"), "out": str(out)}))
    return 0


def combine_evaluations(name: str, members: list[dict]) -> dict:
    """The evaluation record of registry ensemble `name` from its members' evaluation records:
    the mean of their uncalibrated per-image probabilities (soft voting, equal weights, as
    `Predictor.combine`), so an ensemble trained on another machine is scored without its
    weights coming back. Raises ValueError unless the records are exactly the ensemble's members,
    scored on the same images of the same split of the same manifest."""
    from models.registry import get_spec

    spec = get_spec(name)
    if not spec.is_ensemble:
        raise ValueError(f"{name} is not an ensemble in models/registry.py.")
    found = sorted(r.get("model", "?") for r in members)
    if found != sorted(spec.members):
        raise ValueError(f"{name} is {', '.join(spec.members)}; got {', '.join(found)}.")
    first = members[0]
    for r in members[1:]:
        for key in ("split", "manifest_hash", "views"):
            if r.get(key) != first.get(key):
                raise ValueError(f"{r['model']} and {first['model']} differ in {key}: "
                                 f"{r.get(key)!r} vs {first.get(key)!r}.")
    rows = [{p["file"]: p for p in r["predictions"]} for r in members]
    files = sorted(rows[0])
    if any(sorted(rw) != files for rw in rows[1:]):
        raise ValueError("The members were scored on different images.")
    if any("probabilities_uncalibrated" not in rw[f] for rw in rows for f in files):
        raise ValueError("A member's file has no uncalibrated probabilities: evaluate it again with this version.")
    labels = np.array([CLASS_FOLDERS.index(rows[0][f]["true"]) for f in files])
    if any(rw[f]["true"] != rows[0][f]["true"] for rw in rows[1:] for f in files):
        raise ValueError("The members disagree on the true classes.")
    per_member = {r["model"]: np.array([rw[f]["probabilities_uncalibrated"] for f in files], dtype=np.float64)
                  for r, rw in zip(members, rows)}
    probs = np.mean([p / p.sum(axis=1, keepdims=True) for p in per_member.values()], axis=0)
    result = classification_metrics(labels, probs)

    def merged(key: str) -> dict:  # the members' per-member fields, side by side
        return {k: v for r in members for k, v in (r.get(key) or {}).items()}

    return {
        "model": spec.name, "display": spec.display, "split": first["split"],
        "split_description": first.get("split_description"), **result,
        "calibration": {"ece_before": result["ece"], "temperature_in_use": 1.0,
                        "note": "soft voting of the members' saved probabilities; not calibrated"},
        "members": {n: classification_metrics(labels, p)["accuracy"] for n, p in per_member.items()},
        "training": merged("training"), "weights": merged("weights"), "weights_sha256": merged("weights_sha256"),
        "image_size": merged("image_size"), "views": first.get("views", 1),
        "manifest_hash": first.get("manifest_hash"), "data": first.get("data"),
        **({"manifest_derived_from": first["manifest_derived_from"]} if "manifest_derived_from" in first else {}),
        "combined_from": {r["model"]: {"device": r.get("device"), "keras_backend": r.get("keras_backend"),
                                       "evaluated": r.get("evaluated"), "command": r.get("command")}
                          for r in members},
        "predictions": [{"file": f, "true": CLASS_FOLDERS[int(t)], "predicted": CLASS_FOLDERS[int(pr.argmax())],
                         "probabilities": [round(float(v), 6) for v in pr],
                         "probabilities_uncalibrated": [round(float(v), 6) for v in pr]}
                        for f, t, pr in zip(files, labels, probs)],
    }


def _combine_main(args: argparse.Namespace, command: str) -> int:
    if not args.ensemble:
        print("error: --members needs --ensemble NAME (e.g. dex).", file=sys.stderr)
        return 2
    try:
        records = [json.loads(Path(f).read_text()) for f in args.members]
        record = combine_evaluations(args.ensemble, records)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    record.update(command=command, git_commit=git_commit(), device=device_name(),
                  evaluated=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    out = Path(args.out) if args.out else RESULTS_DIR / f"{record['model']}.{record['split']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({"model": record["model"], "split": record["split"], "n_images": record["n_images"],
                      "accuracy": round(record["accuracy"], 4), "members": record["members"], "out": str(out)}))
    return 0


def gate_report(predictor: Predictor, images: list[np.ndarray], labels: np.ndarray, paths: list, root: Path) -> dict:
    """What the app would do with each image (core.predict.diagnose): counts per status, every
    withheld image with its reason, and the accuracy of the answers it gives."""
    from core.predict import diagnose
    from core.status import Status

    names = [str(Path(pp).relative_to(root)) if Path(pp).is_relative_to(root) else str(pp) for pp in paths]
    records = diagnose(predictor, list(zip(names, images)))
    status = np.array([r.status.value for r in records])
    given = np.array([r.status.gives_subtype for r in records])
    ok = status == Status.OK.value
    predicted = np.array([CLASS_FOLDERS.index(next(c for c in CLASS_FOLDERS if DISPLAY_NAMES[c] == r.label))
                          if r.label else -1 for r in records])
    return {
        "temperature": predictor.temperature, "threshold": predictor.threshold,  # what decided ok / uncertain
        "counts": {s.value: int((status == s.value).sum()) for s in Status},
        "withheld_fraction": float(1 - given.mean()) if len(given) else None,
        "accuracy_of_subtypes_given": float((predicted == labels)[given].mean()) if given.any() else None,
        "accuracy_of_ok": float((predicted == labels)[ok].mean()) if ok.any() else None,
        "withheld": [{"file": r.file, "true": CLASS_FOLDERS[int(t)], "status": r.status.value, "message": r.message,
                      "scope_ratio": r.scope_ratio, "smear_score": r.smear_score}
                     for r, t in zip(records, labels) if not r.status.gives_subtype],
    }


#: run.json fields copied into an evaluation, so a result names how its weights were trained.
_TRAINING_FIELDS = ("command", "device", "keras_backend", "git_commit", "deviations_from_paper", "best_epoch",
                    "epochs_run_this_session", "seconds_per_epoch", "total_seconds", "n_train", "finished")


def training_summary(weights_path: Path) -> dict:
    """How a member's weights were trained: the run.json beside them (a core.train run folder),
    else the meta.json the shipped weights carry; `protocol` is "paper" only when nothing deviated."""
    weights_path = Path(weights_path)
    run_file = weights_path.with_name("run.json")
    source = json.loads(run_file.read_text()) if run_file.is_file() else {}
    if not source and _meta_path(weights_path).is_file():
        meta = json.loads(_meta_path(weights_path).read_text())
        source = {"command": meta.get("run"), "deviations_from_paper": meta.get("deviations_from_paper")}
    out = {k: source[k] for k in _TRAINING_FIELDS if source.get(k) is not None}
    deviations = source.get("deviations_from_paper")
    out["protocol"] = (Protocol.UNKNOWN if deviations is None else Protocol.OWN if deviations else Protocol.PAPER).value
    return out


def _display_path(path: Path) -> str:
    """Project files relative to the project (results are committed and read elsewhere)."""
    path = Path(path).resolve()
    root = RESULTS_DIR.parents[1]
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def save_calibration(predictor: Predictor, calib: dict) -> Path:
    """Write temperature and threshold into the model's meta JSON (beside its weights)."""
    path = predictor_meta_path(predictor)
    meta = json.loads(path.read_text()) if path.is_file() else {"model": predictor.name}
    meta.update(temperature=calib["temperature"], threshold=calib["threshold"],
                calibration="temperature scaling and threshold fitted on the manifest's validation part")
    path.write_text(json.dumps(meta, indent=1) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
