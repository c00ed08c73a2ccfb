"""Session-aware cross-validation: the accuracy a new patient would see.

    python -m core.crossval --data DIR --scheme contiguous --folds 5 --embargo 37 \
        --recipe tl-two-stage --out benchmarks/results/cv/contiguous-e37-tl-two-stage.json

The images were captured in sessions: neighbouring file numbers of a class share
background, illumination and scale bar, so a random image-level split puts neighbours of
every test image into training and flatters. `--scheme contiguous` cuts each class, in
capture order (the number in the file name), into `--folds` contiguous blocks; each block
is once the test part, and with `--embargo N` the N image numbers on each side of it are
left out of that fold's training and validation. `--scheme random` is the flattering
image-level twin on the same machinery. Byte-identical copies always stay together.

Each fold trains one model with a named recipe and predicts its test block; the pooled
out-of-fold predictions give balanced accuracy, macro-F1, per-class recall and the
confusion matrix, with a 95% bootstrap interval that resamples capture blocks (runs of
`--block` consecutive numbers of a class), not images, since neighbours are not
independent. Recipes:
- `tl-two-stage`, `tl-session-robust`, `tl-scale-robust` and `paper`: `core.train` with that recipe (the shipped default's
  recipe on EfficientNet-Lite0, and the paper's protocol from scratch on MobileNetV2 unless
  `--model` says otherwise), one subprocess per fold, resumable;
- `frozen-probe`: ImageNet EfficientNet-Lite features, frozen, with a logistic-regression
  head (scikit-learn, C chosen on the fold's validation part): minutes on a CPU. `--probe-input`
  says what the features are taken of: the image as captured, its neutral copy (slide and scale
  bar grey), or the white cells alone (crops of the neutral copy around the largest nuclei,
  features averaged; `cells-reinhard` stain-normalises the field first).

Finished folds are kept under `--work`; run again with `--resume` to continue. With `--resume`
and another `--views 8` / `--test-copy neutral`, a trained recipe's fold models predict their test
blocks again (8 flips and turns averaged; slide and scale bar painted grey), without retraining.
"""
from __future__ import annotations

import argparse
import enum
import json
import math
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from core.cli import data_options, model_option, sample_options
from core.dataset import (PROJECT_ROOT, DatasetError, ImageRecord, build_manifest, resolve_data_dir,
                          save_manifest, scan_dataset)
from core.labels import CLASS_FOLDERS, N_CLASSES
from core.metrics import balanced_accuracy, classification_metrics

VAL_FRACTION = 0.15
FOLD_PARTS = ("train", "val", "test", "embargo")


class Scheme(str, enum.Enum):
    RANDOM = "random"
    CONTIGUOUS = "contiguous"


class TestCopy(str, enum.Enum):
    """What a fold's model is shown of its test images."""
    AS_CAPTURED = "as-captured"
    NEUTRAL = "neutral"  # slide between the cells and scale-bar corner painted one grey (`core.audit.neutralise`)


class ProbeInput(str, enum.Enum):
    """What the frozen probe's features are taken of."""
    IMAGE = "image"  # the whole field as captured
    NEUTRAL = "neutral"  # the whole field, slide and scale bar grey (`core.audit.neutralise`)
    CELLS = "cells"  # the largest white cells of the neutral copy, cropped; features averaged
    # the same after Reinhard stain normalisation of the field (`core.stain`): are sessions' stains the gap?
    CELLS_REINHARD = "cells-reinhard"
    # up to PROBE_CELLS_POOLED cells, their features' mean and maximum side by side: a multiple-instance
    # pooling (the anchor pools cells by attention), so one blast among normal cells can still count
    CELLS_MEANMAX = "cells-meanmax"


#: cells cropped per image for `ProbeInput.CELLS`, and each crop's width in nucleus diameters
PROBE_CELLS, PROBE_CELL_CONTEXT = 3, 2.0
#: cells cropped per image for `ProbeInput.CELLS_MEANMAX`
PROBE_CELLS_POOLED = 6
_CELL_INPUTS = (ProbeInput.CELLS, ProbeInput.CELLS_REINHARD, ProbeInput.CELLS_MEANMAX)


def oof_name(views: int, copy: TestCopy) -> str:
    """The file a fold's out-of-fold predictions are kept in; other test-time settings predict
    again with the same fold model into a file of their own."""
    if views == 1 and copy is TestCopy.AS_CAPTURED:
        return "oof.json"
    return f"oof-views{views}-{copy.value}.json"


#: the recipe of the shipped default's fine-tuned Lite0 member: the one cross-validation reports first
DEFAULT_RECIPE = "tl-two-stage"
#: recipe -> the registry model it trains by default (the shipped default's family for
#: transfer learning; the paper's cheapest network for its own protocol).
DEFAULT_MODEL = {"tl-two-stage": "efficientnet_lite0-tl", "tl-session-robust": "efficientnet_lite0-tl",
                 "tl-scale-robust": "efficientnet_lite0-tl",
                 "paper": "mobilenetv2-baseline",
                 "frozen-probe": "efficientnet_lite0-tl"}
ANCHOR = {
    "balanced_accuracy": 0.968, "ci95": [0.955, 0.978],
    "what": "frozen DinoBloom-S with attention pooling, 5 contiguous session-aware folds per class, "
            "embargo 37 image numbers, all 3,256 public images",
    "source": "public audit, repository shrirudragoud/leukemia-detection-and-Segmentation, docs/results/",
}


def capture_number(file: str) -> int:
    """The capture-order number in a dataset file name: 'WBC-Malignant-Pre-042.jpg' -> 42."""
    m = re.search(r"(\d+)(?=\.[A-Za-z0-9]+$)", Path(file).name)
    if m is None:
        raise DatasetError(f"No capture number in the file name {file!r} (expected e.g. WBC-Benign-001.jpg).")
    return int(m.group(1))


def _unique_images(records: list[ImageRecord]) -> dict[str, list[tuple[int, str]]]:
    """Per class, (capture number, sha256) of each distinct image in capture order; a set of
    byte-identical copies counts once, at its lowest number."""
    first: dict[str, tuple[int, str]] = {}
    for r in records:
        n = capture_number(r.file)
        if r.sha256 not in first or n < first[r.sha256][0]:
            first[r.sha256] = (n, r.label)
    out: dict[str, list[tuple[int, str]]] = {c: [] for c in CLASS_FOLDERS}
    for h, (n, label) in first.items():
        out[label].append((n, h))
    return {c: sorted(v) for c, v in out.items()}


def make_folds(records: list[ImageRecord], k: int = 5, scheme: Scheme = Scheme.CONTIGUOUS, embargo: int = 0,
               seed: int = 0, val_fraction: float = VAL_FRACTION) -> list[dict[str, str]]:
    """k dicts {sha256: 'train' | 'val' | 'test' | 'embargo'}; every image is 'test' in exactly one.

    Contiguous: each class in capture order is cut into k blocks of near-equal size; fold i
    tests block i, puts images numbered within `embargo` of the block's first and last
    number in 'embargo', and takes as validation the contiguous run of `val_fraction` of the
    remaining images that follows the test block (wrapping round). Random: stratified
    shuffled folds by content hash, validation a stratified random share of the rest.
    """
    scheme = Scheme(scheme)
    if k < 2:
        raise ValueError("k must be at least 2")
    if embargo < 0:
        raise ValueError("embargo must be >= 0")
    if scheme is Scheme.RANDOM and embargo:
        raise ValueError("--embargo applies to --scheme contiguous (a random split has no blocks to guard)")
    per_class = _unique_images(records)
    folds: list[dict[str, str]] = [{} for _ in range(k)]
    rng = np.random.default_rng(seed)
    for label, items in per_class.items():
        if len(items) < k:
            raise DatasetError(f"Class {label} has {len(items)} distinct images, fewer than {k} folds.")
        numbers = np.array([n for n, _ in items])
        hashes = [h for _, h in items]
        order = np.arange(len(items)) if scheme is Scheme.CONTIGUOUS else rng.permutation(len(items))
        blocks = np.array_split(order, k)
        for i, block in enumerate(blocks):
            test = set(block.tolist())
            if scheme is Scheme.CONTIGUOUS:
                lo, hi = numbers[block].min(), numbers[block].max()
                held = {j for j in range(len(items)) if j not in test
                        and (lo - embargo <= numbers[j] <= hi + embargo)}
                rest = [j for j in range(len(items)) if j not in test and j not in held]
                # Start after the test block, wrap round: validation is one contiguous run.
                rest = [j for j in rest if numbers[j] > hi] + [j for j in rest if numbers[j] < lo]
                n_val = max(1, math.ceil(val_fraction * len(rest)))
                val = set(rest[:n_val])
            else:
                held = set()
                rest = [j for j in order.tolist() if j not in test]
                val = set(rest[: max(1, math.ceil(val_fraction * len(rest)))])
            for j in range(len(items)):
                folds[i][hashes[j]] = ("test" if j in test else "embargo" if j in held
                                       else "val" if j in val else "train")
    return folds


def describe_fold(records: list[ImageRecord], part_of_hash: dict[str, str]) -> dict:
    """Per class and part: image count and the capture-number ranges it covers (runs of files
    that follow each other in this copy; numbers missing from the copy do not break a run)."""
    out: dict = {}
    for label in CLASS_FOLDERS:
        ordered = sorted((capture_number(r.file), part_of_hash[r.sha256]) for r in records if r.label == label)
        runs: dict[str, list[list[int]]] = {}
        previous = None
        for n, part in ordered:
            if part == previous:
                runs[part][-1][1] = n
            else:
                runs.setdefault(part, []).append([n, n])
            previous = part
        out[label] = {part: {"n": sum(1 for _, q in ordered if q == part),
                             "ranges": r if len(r) <= 12 else f"{len(r)} runs (scattered)"}
                      for part, r in runs.items()}
    return out


def capture_blocks(files: list[str], labels: np.ndarray, block: int) -> np.ndarray:
    """An integer id per image: its class and the run of `block` capture numbers it falls in."""
    return np.array([int(y) * 100_000 + capture_number(f) // block for f, y in zip(files, labels)])


def block_bootstrap_ci(labels: np.ndarray, pred: np.ndarray, blocks: np.ndarray, n_boot: int = 2000,
                       seed: int = 0) -> dict:
    """95% percentile interval of balanced accuracy and macro-F1, resampling whole capture
    blocks with replacement within each class (so every class stays represented)."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(seed)
    members = {b: np.flatnonzero(blocks == b) for b in np.unique(blocks)}
    by_class = [[b for b in members if labels[members[b][0]] == c] for c in range(N_CLASSES)]
    bal, f1 = [], []
    for _ in range(n_boot):
        idx = np.concatenate([members[b] for bs in by_class if bs for b in rng.choice(bs, size=len(bs))])
        bal.append(balanced_accuracy(labels[idx], pred[idx]))
        f1.append(float(f1_score(labels[idx], pred[idx], average="macro", labels=list(range(N_CLASSES)),
                                 zero_division=0)))
    return {"balanced_accuracy": [float(np.percentile(bal, 2.5)), float(np.percentile(bal, 97.5))],
            "macro_f1": [float(np.percentile(f1, 2.5)), float(np.percentile(f1, 97.5))],
            "n_boot": n_boot, "n_blocks": len(members), "resampled": "capture blocks within each class"}


def pooled_metrics(files: list[str], labels: np.ndarray, probs: np.ndarray, block: int, seed: int = 0) -> dict:
    """Balanced accuracy, macro-F1, per-class recall, confusion matrix and block-bootstrap CI."""
    pred = probs.argmax(axis=1)
    m = classification_metrics(labels, probs)
    return {
        "n_images": int(len(labels)),
        "balanced_accuracy": balanced_accuracy(labels, pred),
        "macro_f1": m["averages"]["macro"]["f1"],
        "accuracy": m["accuracy"],
        "recall": {c: m["per_class"][c]["recall"] for c in CLASS_FOLDERS},
        "confusion_matrix": m["confusion_matrix"],
        "confusion_matrix_orientation": m["confusion_matrix_orientation"],
        "ci95": block_bootstrap_ci(labels, pred, capture_blocks(files, labels, block), seed=seed),
    }


def describe(result: dict) -> str:
    """A result's name: its recipe, with its model when that is not the recipe's default, the
    test-time settings when they are not plain (`--views`, `--test-copy`), and the frozen probe's
    input and size when given (`--probe-input`, `--image-size`)."""
    test_time, probe = result.get("test_time") or {}, result.get("probe") or {}
    extra = []
    if result.get("model") and result["recipe"] in DEFAULT_MODEL and result["model"] != DEFAULT_MODEL[result["recipe"]]:
        extra.append(result["model"])
    if test_time.get("views", 1) != 1:
        extra.append(f"{test_time['views']} views")
    if test_time.get("copy", TestCopy.AS_CAPTURED.value) != TestCopy.AS_CAPTURED.value:
        extra.append(f"{test_time['copy']} test copies")
    if probe.get("input", ProbeInput.IMAGE.value) != ProbeInput.IMAGE.value:
        what = {ProbeInput.NEUTRAL.value: "features of the neutral copy",
                ProbeInput.CELLS_REINHARD.value: "features of the cells, stain-normalised",
                ProbeInput.CELLS_MEANMAX.value: f"features of up to {PROBE_CELLS_POOLED} cells, mean and max"}
        extra.append(what.get(probe["input"], f"features of the {probe['input']}"))
    if probe.get("image_size"):
        extra.append(f"{probe['image_size']} px")
    return result["recipe"] + (f" ({', '.join(extra)})" if extra else "")


def combine(results: list[dict], sources: list[str]) -> dict:
    """Soft voting of recipes cross-validated on the same folds: the mean of their out-of-fold
    probabilities, scored like one recipe. Refuses results whose folds or images differ."""
    from core.provenance import device_name, git_commit

    if len(results) < 2:
        raise ValueError("combine needs two or more cross-validation results")
    first = results[0]
    for r, src in zip(results, sources):
        if "probabilities" not in r.get("predictions", {}):
            raise ValueError(f"{src} has no out-of-fold probabilities; rerun its command with --resume to add them")
        same = [r[k] == first[k] for k in ("scheme", "folds", "embargo", "seed", "n_images_in_copy")]
        same.append([f["parts"] for f in r["per_fold"]] == [f["parts"] for f in first["per_fold"]])
        if not all(same):
            raise ValueError(f"{src} was cross-validated on other folds than {sources[0]}")
    order = {f: i for i, f in enumerate(first["predictions"]["files"])}
    probs, labels = [], np.asarray(first["predictions"]["labels"])
    for r, src in zip(results, sources):
        pred = r["predictions"]
        if sorted(pred["files"]) != sorted(order):
            raise ValueError(f"{src} predicted other images than {sources[0]}")
        idx = np.array([order[f] for f in pred["files"]])
        aligned = np.empty((len(idx), N_CLASSES))
        aligned[idx] = np.asarray(pred["probabilities"], dtype=float)
        probs.append(aligned)
    mean = np.mean(probs, axis=0)
    files = first["predictions"]["files"]
    return {
        "command": "", "scheme": first["scheme"], "folds": first["folds"], "embargo": first["embargo"],
        "block": first["block"], "recipe": " + ".join(describe(r) for r in results),
        "model": " + ".join(r["model"] for r in results), "seed": first["seed"], "limit": first["limit"],
        "combined_from": sources, "combined_by": "soft voting: the mean of the recipes' out-of-fold probabilities",
        "data": first["data"], "n_images_in_copy": first["n_images_in_copy"], "dataset_note": first["dataset_note"],
        "pooled_out_of_fold": pooled_metrics(files, labels, mean, first["block"], first["seed"]),
        "per_fold": [{"fold": f["fold"], "parts": f["parts"]} for f in first["per_fold"]],
        "anchor": ANCHOR, "git_commit": git_commit(), "device": device_name(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "predictions": {"files": files, "labels": labels.tolist(), "pred": mean.argmax(1).tolist(),
                        "probabilities": mean.round(5).tolist()},
    }


# --- recipes ------------------------------------------------------------------------------

def _fold_manifest(index, part_of_hash: dict[str, str], fold: int, args) -> dict:
    return build_manifest(index, part_of_hash, seed=args.seed, scheme=args.scheme, fold=fold,
                          folds=args.folds, embargo=args.embargo, made_by="core.crossval")


def _read(root: Path, manifest: dict, part: str, size: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    from core.loader import load_images

    items = [it for it in manifest["items"] if it["part"] == part]
    images, ok, errors = load_images([root / it["file"] for it in items], size)
    for path, msg in errors:
        print(f"skipped {path}: {msg}", file=sys.stderr)
    kept = [it for it, good in zip(items, ok) if good]
    return ([it["file"] for it in kept], np.array([CLASS_FOLDERS.index(it["class"]) for it in kept]), images)


def run_train_recipe(fold_dir: Path, manifest_path: Path, root: Path, args) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Train one fold with `core.train` (a subprocess, so a killed fold resumes cleanly), then
    predict its test part with the saved weights: (files, labels, probabilities)."""
    from core.evaluate import predictor_from_run

    family, mode = args.model.rsplit("-", 1)
    cmd = [sys.executable, "-m", "core.train", "--data", str(root), "--recipe", args.recipe,
           "--model", family, "--mode", mode, "--manifest", str(manifest_path), "--out", str(fold_dir),
           "--seed", str(args.seed), "--verbose", "2"]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if not (fold_dir / "run.json").exists():  # with run.json the fold is trained: only predict
        resumable = (fold_dir / "checkpoint").exists() or (fold_dir / "warmup.done").exists()
        subprocess.run([*cmd, "--resume" if resumable else "--overwrite"], check=True, cwd=PROJECT_ROOT)
    predictor = predictor_from_run(fold_dir)
    predictor.views = args.views
    manifest = json.loads(manifest_path.read_text())
    copy = TestCopy(args.test_copy)
    if copy is TestCopy.NEUTRAL:
        from core.audit import SIDE, neutralise

        files, labels, images = _read(root, manifest, "test", SIDE)  # the masks are drawn at 224 px
        images = [neutralise(im) for im in images]
    else:
        files, labels, images = _read(root, manifest, "test", predictor.members[0].image_size)
    probs = predictor.combine(predictor.predict_members(list(images)), temperature=1.0)
    return files, labels, probs


def _probe_views(rgb: np.ndarray, probe_input: ProbeInput, size: int) -> list[np.ndarray]:
    """The square images (size x size uint8) whose features describe one field."""
    import cv2

    from core.imageio import resize_square

    if probe_input is ProbeInput.IMAGE:
        return [resize_square(rgb, size)]
    from core.audit import NEUTRAL, SIDE, neutralise

    if rgb.shape[:2] != (SIDE, SIDE):  # the dataset's own 224 px, where the masks are drawn
        rgb = cv2.resize(rgb, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    shown = rgb
    if probe_input is ProbeInput.CELLS_REINHARD:
        from core.stain import normalise

        shown = normalise(rgb)
    neutral = neutralise(shown)
    crops = []
    if probe_input in _CELL_INPUTS:
        from core.cells import find_white_cells

        # Cells are found on the field as captured (its slide colour is the finder's reference)
        # and cropped from the neutral copy.
        k = PROBE_CELLS_POOLED if probe_input is ProbeInput.CELLS_MEANMAX else PROBE_CELLS
        crops = find_white_cells(rgb).crops(neutral, k, PROBE_CELL_CONTEXT, fill=tuple(int(v) for v in NEUTRAL))
    # A field where no white cell is found is described by its neutral copy.
    return [resize_square(c, size) for c in (crops or [neutral])]


def pool_views(features: np.ndarray, probe_input: ProbeInput) -> np.ndarray:
    """One field's feature vector from its views' (n_views, d): their mean, or for
    `ProbeInput.CELLS_MEANMAX` their mean and maximum side by side (2 d)."""
    features = np.asarray(features)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"expected (n_views >= 1, d) features, got shape {features.shape}")
    if probe_input is ProbeInput.CELLS_MEANMAX:
        return np.concatenate([features.mean(axis=0), features.max(axis=0)])
    return features.mean(axis=0)


def _probe_features(root: Path, index, work: Path, model_name: str, image_size: int,
                    probe_input: ProbeInput = ProbeInput.IMAGE) -> dict[str, np.ndarray]:
    """Frozen ImageNet features (the head's pooled vector) of every image, pooled over its
    `_probe_views` by `pool_views`, cached in `work`."""
    suffix = "" if probe_input is ProbeInput.IMAGE else f"-{probe_input.value}"
    cache = work / f"features-{model_name}-{image_size}{suffix}.npz"
    if cache.is_file():
        data = np.load(cache)
        return dict(zip(data["files"].tolist(), data["features"]))
    import keras

    from core.imageio import ImageError, read_image
    from core.labels import N_CLASSES as NC
    from models.architectures import HEAD_POOL
    from models.registry import build

    model = build(model_name, NC, input_size=image_size)  # weights="imagenet" path of its family
    features_of = keras.Model(model.inputs, model.get_layer(HEAD_POOL).output)
    files = [r.file for r in index.records]
    feats = []
    for start in range(0, len(files), 64):
        chunk, views, owner = files[start:start + 64], [], []
        for j, f in enumerate(chunk):
            try:
                rgb = read_image(root / f)
            except ImageError as exc:
                raise DatasetError(f"unreadable image {f}: {exc}") from exc
            v = _probe_views(rgb, probe_input, image_size)
            views += v
            owner += [j] * len(v)
        out = features_of.predict(np.stack(views).astype(np.float32) / 255.0, verbose=0)
        owner = np.array(owner)
        feats.append(np.stack([pool_views(out[owner == j], probe_input) for j in range(len(chunk))]))
        print(f"features {start + len(chunk)}/{len(files)}", flush=True)
    features = np.concatenate(feats)
    work.mkdir(parents=True, exist_ok=True)
    np.savez(cache, files=np.array(files), features=features)
    return dict(zip(files, features))


def run_probe_recipe(features: dict[str, np.ndarray], manifest: dict, seed: int) -> tuple[list[str], np.ndarray, np.ndarray, dict]:
    """Standardised features -> multinomial logistic regression, balanced class weights; C is
    the value with the best balanced accuracy on the fold's validation part."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def part(name):
        items = [it for it in manifest["items"] if it["part"] == name]
        return ([it["file"] for it in items], np.stack([features[it["file"]] for it in items]),
                np.array([CLASS_FOLDERS.index(it["class"]) for it in items]))

    (_, x_tr, y_tr), (_, x_va, y_va), (f_te, x_te, y_te) = part("train"), part("val"), part("test")
    scores = {}
    for c in (0.001, 0.01, 0.1, 1.0):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced",
                                                                 random_state=seed))
        clf.fit(x_tr, y_tr)
        scores[c] = balanced_accuracy(y_va, clf.predict(x_va))
    best = max(scores, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=best, max_iter=3000, class_weight="balanced",
                                                             random_state=seed))
    clf.fit(x_tr, y_tr)
    return f_te, y_te, clf.predict_proba(x_te), {"C": best, "val_balanced_accuracy_by_C": scores}


RECIPE_CHOICES = tuple(DEFAULT_MODEL)


def run(args) -> dict:
    from core.provenance import device_name, git_commit

    copy = TestCopy(args.test_copy)
    if args.recipe == "frozen-probe" and (args.views != 1 or copy is not TestCopy.AS_CAPTURED):
        raise ValueError("--views and --test-copy apply to trained recipes; the frozen probe reads cached features")
    if args.recipe != "frozen-probe" and args.probe_input != ProbeInput.IMAGE.value:
        raise ValueError("--probe-input applies to the frozen probe only")
    root = resolve_data_dir(args.data)
    index = scan_dataset(root)
    scheme = Scheme(args.scheme)
    folds = make_folds(index.records, args.folds, scheme, args.embargo, args.seed)
    work = Path(args.work) if args.work else (
        PROJECT_ROOT / "runs" / "cv" / Path(args.out).stem)
    work.mkdir(parents=True, exist_ok=True)
    model_name = args.model or DEFAULT_MODEL[args.recipe]
    args.model = model_name
    t0 = time.perf_counter()
    features = None
    if args.recipe == "frozen-probe":
        features = _probe_features(root, index, work, model_name, args.image_size, ProbeInput(args.probe_input))
    fold_records, all_files, all_labels, all_probs = [], [], [], []
    for i, part_of_hash in enumerate(folds):
        fold_dir = work / f"fold-{i}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        done = fold_dir / oof_name(args.views, copy)
        manifest = _fold_manifest(index, part_of_hash, i, args)
        if done.is_file() and args.resume:
            oof = json.loads(done.read_text())
            if oof.get("manifest_items") != len(manifest["items"]):
                raise DatasetError(f"{done} belongs to another dataset or split; use another --work.")
        else:
            manifest_path = fold_dir / "manifest.json"
            save_manifest(manifest, manifest_path)
            t_fold = time.perf_counter()
            extra = {}
            if args.recipe == "frozen-probe":
                files, labels, probs, extra = run_probe_recipe(features, manifest, args.seed)
            else:
                files, labels, probs = run_train_recipe(fold_dir, manifest_path, root, args)
                run_json = fold_dir / "run.json"
                if run_json.is_file():
                    r = json.loads(run_json.read_text())
                    extra = {k: r.get(k) for k in ("command", "best_epoch", "seconds_per_epoch", "total_seconds",
                                                   "epochs_run_this_session", "n_train", "n_val")}
            oof = {"fold": i, "files": files, "labels": np.asarray(labels).tolist(),
                   "probs": np.asarray(probs).round(6).tolist(), "seconds": time.perf_counter() - t_fold,
                   "manifest_items": len(manifest["items"]), **extra}
            done.write_text(json.dumps(oof) + "\n")
        labels, probs = np.asarray(oof["labels"]), np.asarray(oof["probs"])
        fold_records.append({
            "fold": i, "parts": describe_fold(index.records, part_of_hash),
            "n_test": len(labels), "balanced_accuracy": balanced_accuracy(labels, probs.argmax(1)),
            **{k: v for k, v in oof.items() if k not in ("files", "labels", "probs", "fold", "manifest_items")},
        })
        all_files += oof["files"]
        all_labels.append(labels)
        all_probs.append(probs)
        print(f"fold {i}: balanced accuracy {fold_records[-1]['balanced_accuracy']:.4f} "
              f"on {len(labels)} test images", flush=True)
    labels, probs = np.concatenate(all_labels), np.concatenate(all_probs)
    import keras

    return {
        "command": " ".join(["python", "-m", "core.crossval", *args.argv]),
        "scheme": scheme.value, "folds": args.folds, "embargo": args.embargo, "block": args.block,
        "recipe": args.recipe, "model": model_name, "seed": args.seed, "limit": args.limit,
        "epochs": args.epochs or None,
        "test_time": {"views": args.views, "copy": copy.value},
        **({"probe": {"input": args.probe_input, "image_size": args.image_size}}
           if args.recipe == "frozen-probe" else {}),
        "data": str(root), "n_images_in_copy": len(index.records),
        "dataset_note": "this copy holds 2,932 of the 3,256 public images (324 kept back by the project)",
        "pooled_out_of_fold": pooled_metrics(all_files, labels, probs, args.block, args.seed),
        "per_fold": fold_records,
        "anchor": ANCHOR,
        "git_commit": git_commit(), "device": device_name(), "platform": platform.platform(),
        "keras_backend": keras.backend.backend(),
        "wall_seconds_this_call": time.perf_counter() - t0,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # Probabilities too, so recipes cross-validated on the same folds can be combined (`combine`).
        "predictions": {"files": all_files, "labels": labels.tolist(), "pred": probs.argmax(1).tolist(),
                        "probabilities": probs.round(5).tolist()},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m core.crossval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[data_options(manifest=False), sample_options(0, "train on this many images per fold (smoke tests)"),
                 model_option(None, "registry name (default: " + ", ".join(
                     f"{r}: {m}" for r, m in DEFAULT_MODEL.items()) + ")")])
    p.add_argument("--scheme", choices=[s.value for s in Scheme], default=Scheme.CONTIGUOUS.value)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--embargo", type=int, default=0, help="image numbers left out on each side of a test block")
    p.add_argument("--block", type=int, default=37, help="capture-block length for the bootstrap interval")
    p.add_argument("--recipe", choices=RECIPE_CHOICES, default=DEFAULT_RECIPE)
    p.add_argument("--image-size", type=int, default=160, help="frozen-probe input size")
    p.add_argument("--probe-input", choices=[v.value for v in ProbeInput], default=ProbeInput.IMAGE.value,
                   help="frozen probe: features of the image as captured, of its neutral copy (slide and scale "
                        "bar grey) or of its largest white cells alone (cells-reinhard: the same cells after "
                        f"Reinhard stain normalisation; cells-meanmax: up to {PROBE_CELLS_POOLED} cells, features' "
                        "mean and max)")
    p.add_argument("--epochs", type=int, default=0, help="override the recipe's epochs (0: the recipe's)")
    p.add_argument("--views", type=int, choices=(1, 8), default=1,
                   help="8: average each test image over its flips and quarter turns")
    p.add_argument("--test-copy", choices=[c.value for c in TestCopy], default=TestCopy.AS_CAPTURED.value,
                   help="neutral: show the fold models their test images with the slide and scale bar grey")
    p.add_argument("--work", help="folder for fold runs (default: runs/cv/<out name>); with --resume, "
                                  "other --views/--test-copy settings reuse its trained fold models")
    p.add_argument("--resume", action="store_true", help="keep finished folds from --work")
    p.add_argument("--combine", nargs="+", metavar="RESULT.json",
                   help="instead of training: soft-vote these results (same folds) into one")
    p.add_argument("--out", required=True)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.argv = argv
    try:
        if args.combine:
            try:
                results = [json.loads(Path(f).read_text()) for f in args.combine]
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"cannot read a result to combine: {exc}") from None
            result = combine(results, args.combine)
            result["command"] = " ".join(["python", "-m", "core.crossval", *argv])
        else:
            result = run(args)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(f"error: a fold's training failed ({exc.returncode}); rerun with --resume", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    pooled = result["pooled_out_of_fold"]
    lo, hi = pooled["ci95"]["balanced_accuracy"]
    print(f"{result['scheme']}: balanced accuracy {pooled['balanced_accuracy']:.4f} (95% CI {lo:.3f}-{hi:.3f}), "
          f"macro-F1 {pooled['macro_f1']:.4f} on {pooled['n_images']} images; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
