"""Shortcut audit: can the four classes be told apart without looking at the cells?

    python -m core.audit --data DIR [--model default] [--out benchmarks/results/cv/audit.json]

1. Simple features alone, each group with a logistic regression (scikit-learn) under the same
   contiguous session-aware folds as `core.crossval` (and the random twin): the background
   colour (pixels outside the stained cells of `core.cells`), the scale-bar corner, the mean
   colour of the stained cells, the count of stained objects, and the magnification (the
   red-cell diameter that `core.cells` measures its ruler with). A high balanced accuracy
   from the background or the scale bar means the dataset carries a shortcut a network can
   learn instead of the cell.
2. The model (`--model`, default the shipped default) on copies of the test part of the split
   manifest with the background replaced by one neutral colour, with the scale-bar corner
   masked, and with both. A model that has learned the cell keeps its accuracy there.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from core.augment import slide_mask
from core.cli import data_options, model_option, sample_options
from core.crossval import Scheme, make_folds
from core.metrics import balanced_accuracy
from core.dataset import (PROJECT_ROOT, DatasetError, load_manifest, manifest_hash, manifest_part,
                          resolve_data_dir, scale_bar_corner, scan_dataset)
from core.i18n import N_
from core.labels import CLASS_FOLDERS

SIDE = 224  # the dataset's own size; other sizes are resized to it first
SCALE_BAR = scale_bar_corner((SIDE, SIDE))  # rows and columns of the scale-bar corner at 224 px
NEUTRAL = np.array([225, 225, 225], dtype=np.uint8)  # a light grey slide, neither pink nor blue
MIN_OBJECT_PX = 20

# Marked for translation: the Benchmark page shows them in the reader's language.
FEATURE_GROUPS = (N_("background colour"), N_("scale-bar corner"), N_("cell colour"), N_("cell count"),
                  N_("red-cell size"))
ALL_GROUPS = N_("all together")


def _stained(rgb: np.ndarray) -> np.ndarray:
    from core.cells import nucleus_map

    return nucleus_map(rgb)[1]


def simple_features(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """The audit's feature groups of one RGB uint8 image (resized to 224 x 224)."""
    rgb = cv2.resize(rgb, (SIDE, SIDE), interpolation=cv2.INTER_AREA) if rgb.shape[:2] != (SIDE, SIDE) else rgb
    stained = _stained(rgb)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
    background = ~stained
    if background.sum() < 50:  # a field full of cells: the brightest pixels stand in
        background = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) >= np.percentile(rgb.mean(axis=2), 90)
    cells = stained if stained.sum() >= 50 else ~background
    corner = rgb[SCALE_BAR].astype(np.float32)
    gray_corner = corner.mean(axis=2)
    n_objects = cv2.connectedComponentsWithStats(stained.astype(np.uint8), connectivity=8)[2][1:, cv2.CC_STAT_AREA]
    return {
        "background colour": np.concatenate([np.median(rgb[background], axis=0), np.median(hsv[background], axis=0)]),
        "scale-bar corner": np.concatenate([corner.reshape(-1, 3).mean(0), corner.reshape(-1, 3).std(0),
                                            [(gray_corner < 100).mean(), ((corner[..., 0] > 150)
                                                                          & (corner[..., 1] < 100)).mean()]]),
        "cell colour": np.concatenate([np.median(rgb[cells], axis=0), np.median(hsv[cells], axis=0)]),
        "cell count": np.array([float((n_objects >= MIN_OBJECT_PX).sum()), float(stained.mean())]),
        "red-cell size": _red_cell_size(rgb),
    }


def _red_cell_size(rgb: np.ndarray) -> np.ndarray:
    """[red-cell diameter in px (0 when unmeasurable), 1 when unmeasurable]: the magnification."""
    from core.cells import find_white_cells

    diameter = find_white_cells(rgb).rbc_diameter_px
    return np.array([diameter or 0.0, float(diameter is None)])


def neutralise(rgb: np.ndarray, background: bool = True, scale_bar: bool = True) -> np.ndarray:
    """A copy of a 224 x 224 RGB image with the pixels outside the stained cells set to one
    neutral grey and/or the scale-bar corner filled with that grey."""
    out = cv2.resize(rgb, (SIDE, SIDE), interpolation=cv2.INTER_AREA) if rgb.shape[:2] != (SIDE, SIDE) else rgb.copy()
    if background:
        out[slide_mask(out)] = NEUTRAL
    if scale_bar:
        out[SCALE_BAR] = NEUTRAL
    return out


def feature_audit(root: Path, folds_by_scheme: dict[str, list[dict[str, str]]], records,
                  seed: int) -> tuple[dict, dict]:
    """Balanced accuracy of a logistic regression on each feature group (and all together),
    pooled over the out-of-fold predictions of every scheme's folds; and per class the median
    and quartiles of the measurable red-cell diameters (px), with the unmeasurable fraction."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from core.imageio import read_image

    feats: dict[str, list[np.ndarray]] = {g: [] for g in FEATURE_GROUPS}
    for i, r in enumerate(records):
        f = simple_features(read_image(root / r.file))
        for g in FEATURE_GROUPS:
            feats[g].append(f[g])
        if (i + 1) % 500 == 0:
            print(f"features {i + 1}/{len(records)}", flush=True)
    x_by_group = {g: np.stack(v) for g, v in feats.items()}
    x_by_group[ALL_GROUPS] = np.concatenate([x_by_group[g] for g in FEATURE_GROUPS], axis=1)
    y = np.array([CLASS_FOLDERS.index(r.label) for r in records])
    hashes = [r.sha256 for r in records]
    diameter, unmeasured = x_by_group["red-cell size"].T
    magnification = {}  # the red-cell diameter each class was captured at
    for i, c in enumerate(CLASS_FOLDERS):
        measured = diameter[(y == i) & (unmeasured == 0)]
        if len(measured):
            magnification[c] = {"median": float(np.median(measured)),
                                "quartiles": np.percentile(measured, [25, 75]).round(2).tolist(),
                                "unmeasured_fraction": float(unmeasured[y == i].mean())}
    out: dict = {}
    for scheme, folds in folds_by_scheme.items():
        out[scheme] = {}
        for group, x in x_by_group.items():
            pred = np.full(len(y), -1)
            for part_of_hash in folds:
                parts = np.array([part_of_hash[h] for h in hashes])
                fit = (parts == "train") | (parts == "val")
                test = parts == "test"
                clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced",
                                                                         random_state=seed))
                clf.fit(x[fit], y[fit])
                pred[test] = clf.predict(x[test])
            out[scheme][group] = {"balanced_accuracy": balanced_accuracy(y, pred), "n_images": int(len(y)),
                                  "n_features": int(x.shape[1])}
    return out, magnification


def model_audit(model: str, root: Path, manifest_path: str | None) -> dict:
    """Accuracy and balanced accuracy of `model` on the manifest's test part: as is, with a
    neutral background, with the scale bar masked, and with both (classification only, no gate)."""
    from core.imageio import read_image
    from core.inference import load_predictor

    manifest = load_manifest(manifest_path)
    paths, labels = manifest_part(manifest, root, "test")
    images = [cv2.resize(im, (SIDE, SIDE), interpolation=cv2.INTER_AREA) if im.shape[:2] != (SIDE, SIDE) else im
              for im in (read_image(p) for p in paths)]
    predictor = load_predictor(model)
    variants = {  # names marked for the Benchmark page
        N_("as captured"): images,
        N_("neutral background"): [neutralise(im, background=True, scale_bar=False) for im in images],
        N_("scale bar masked"): [neutralise(im, background=False, scale_bar=True) for im in images],
        N_("both"): [neutralise(im) for im in images],
    }
    result = {"model": predictor.name, "weights": [str(m.weights_path.name) for m in predictor.members],
              "split": "test part of the split manifest", "manifest_hash": manifest_hash(manifest),
              "n_images": int(len(labels)), "variants": {}}
    for name, ims in variants.items():
        pred = predictor.predict_proba(ims).argmax(axis=1)
        result["variants"][name] = {"accuracy": float((pred == labels).mean()),
                                    "balanced_accuracy": balanced_accuracy(labels, pred)}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m core.audit", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[data_options(), model_option(help="registry name for the masked-copy check ('none' to skip)"),
                 sample_options()])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--embargo", type=int, default=37)
    p.add_argument("--out", default=str(PROJECT_ROOT / "benchmarks" / "results" / "cv" / "audit.json"))
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    from core.provenance import run_header

    t0 = time.perf_counter()
    try:
        root = resolve_data_dir(args.data)
        index = scan_dataset(root)
        folds = {f"contiguous, embargo {args.embargo}": make_folds(index.records, args.folds, Scheme.CONTIGUOUS,
                                                                   args.embargo, args.seed),
                 "random": make_folds(index.records, args.folds, Scheme.RANDOM, 0, args.seed)}
        result = {
            "data": str(root), "n_images": len(index.records), "folds": args.folds, "embargo": args.embargo,
            "seed": args.seed,
            "features": {"background colour": "median RGB and HSV of the pixels outside the stained cells",
                         "scale-bar corner": "mean/std RGB, dark and red fractions of the bottom-right "
                                             f"{SCALE_BAR[0].stop - SCALE_BAR[0].start}x"
                                             f"{SCALE_BAR[1].stop - SCALE_BAR[1].start} px",
                         "cell colour": "median RGB and HSV of the stained pixels",
                         "cell count": f"stained objects of at least {MIN_OBJECT_PX} px, stained area fraction",
                         "red-cell size": "the red-cell diameter in px (the magnification), and whether it "
                                          "could be measured",
                         ALL_GROUPS: "every group above in one model"},
        }
        result["feature_audit"], result["red_cell_diameter_px_by_class"] = feature_audit(
            root, folds, index.records, args.seed)
        if args.model != "none":
            result["model_audit"] = model_audit(args.model, root, args.manifest)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result.update(run_header("core.audit", argv), seconds=time.perf_counter() - t0)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for scheme, groups in result["feature_audit"].items():
        print(scheme + ": " + ", ".join(f"{g} {v['balanced_accuracy']:.3f}" for g, v in groups.items()))
    if "model_audit" in result:
        print("model: " + ", ".join(f"{k} {v['accuracy']:.4f}" for k, v in result["model_audit"]["variants"].items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
