"""Measure `core.cells.find_white_cells` on the dataset and another lab's images; write its data file.

Tooling only: the app never imports this module.

    python -m core.cells_fit fit --data DIR [--other-lab DIR] [--manifest M] [--out core/data/white_cells.json]
    python -m core.cells_fit evaluate --data DIR [--other-lab DIR] [--parts train,val,test] [--limit N] [--out F]

``fit`` runs the finder on the manifest's train and val parts (never test) and writes
`core/data/white_cells.json`: the parameters `find_white_cells` reads at run time (those
already in the file, else the defaults of `core.cells.CellParams`; the red-cell diameter
assumed when none can be measured is set to the median measured here), the training hospital's
white-cell and red-cell diameters in pixels (p1, p5, median, p95, p99: the reference for a
magnification check), the share of images with at least one white cell, and, when
``--other-lab`` (or $LEUKOSCOPE_OTHER_LAB) is given, the same figures per sub-folder of that
lab (reported, never used to set anything), with the command, data and date.

``evaluate`` prints the same measurements as one JSON object (also written to ``--out``), for
any manifest parts; ``--limit N`` takes a seeded random subsample of N images per part.
The other lab's images are expected as ``DIR/<cell type>/*.jpg`` (sub-folder = group); a
folder named ``platelet`` holds fields without a white cell, so there the share *without*
cells is what should be high.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from core.cells import PARAMS_PATH, CellParams, find_white_cells, load_params
from core.cli import data_options, sample_options

QUANTILES = {"p1": 1, "p5": 5, "median": 50, "p95": 95, "p99": 99}
FIT_PARTS = ("train", "val")
NO_WHITE_CELL_GROUPS = ("platelet",)  # other-lab folders whose fields hold no white cell


def _quantiles(values: Sequence[float]) -> dict[str, float] | None:
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    return {k: round(float(np.percentile(v, q)), 1) for k, q in QUANTILES.items()}


def measure(paths: Sequence[Path], params: CellParams | None = None) -> list[dict]:
    """One row per image: white cells, diameters of the whole (not border-cut) cells, ruler."""
    from core.imageio import ImageError, read_image

    rows = []
    for path in paths:
        try:
            rgb = read_image(path)
        except ImageError as exc:
            rows.append({"file": str(path), "error": str(exc)})
            continue
        res = find_white_cells(rgb, params)
        rows.append({
            "file": str(path),
            "size": [int(rgb.shape[1]), int(rgb.shape[0])],
            "count": res.count,
            "whole_diameters": [c.diameter_px for c in res.cells if not c.touches_border],
            "median_diameter": res.median_diameter_px,
            "rbc_diameter": res.rbc_diameter_px,
            "small": res.n_small,
        })
    return rows


def summarise(rows: Sequence[dict]) -> dict[str, object]:
    """Detection rate and diameter distributions of `measure` rows (JSON-ready)."""
    ok = [r for r in rows if "error" not in r]
    counts = np.array([r["count"] for r in ok], dtype=np.int64)
    cells = [d for r in ok for d in r["whole_diameters"]]
    per_image = [r["median_diameter"] for r in ok if r["median_diameter"] is not None]
    rbc = [r["rbc_diameter"] for r in ok if r["rbc_diameter"] is not None]
    return {
        "n_images": len(ok),
        "unreadable": [r["file"] for r in rows if "error" in r],
        "with_white_cell": round(float((counts >= 1).mean()), 4) if len(ok) else None,
        "n_without_white_cell": int((counts == 0).sum()),
        "without_white_cell": [Path(r["file"]).name for r in ok if r["count"] == 0][:50],
        "white_cells_per_image": _quantiles(counts.tolist()),
        "white_cell_diameter_px": _quantiles(cells),
        "n_cells_measured": len(cells),
        "image_median_diameter_px": _quantiles(per_image),
        "rbc_diameter_px": _quantiles(rbc),
        "rbc_measured": round(len(rbc) / len(ok), 4) if ok else None,
    }


def _subsample(paths: list[Path], limit: int | None, seed: int) -> list[Path]:
    if limit is None or limit >= len(paths):
        return paths
    idx = np.sort(np.random.default_rng(seed).choice(len(paths), limit, replace=False))
    return [paths[i] for i in idx]


def other_lab_groups(root: str | Path) -> dict[str, list[Path]]:
    """The other lab's images by sub-folder (the first path component under ``root``)."""
    from core.dataset import image_files

    root = Path(root)
    groups: dict[str, list[Path]] = {}
    for p in image_files(root):
        rel = p.relative_to(root)
        groups.setdefault(rel.parts[0] if len(rel.parts) > 1 else ".", []).append(p)
    return dict(sorted(groups.items()))


def other_lab_report(root: str | Path, params: CellParams | None = None, limit: int | None = None,
                     seed: int = 0) -> dict[str, object]:
    """Per sub-folder summaries of another lab's images, and the figures over its cell folders
    (every folder but the platelet ones) and over its platelet folders."""
    out: dict[str, object] = {"folder": str(root), "groups": {}}
    cell_rows, platelet_rows = [], []
    for name, paths in other_lab_groups(root).items():
        rows = measure(_subsample(paths, limit, seed), params)
        out["groups"][name] = summarise(rows)
        (platelet_rows if name in NO_WHITE_CELL_GROUPS else cell_rows).extend(rows)
    cells, platelets = summarise(cell_rows), summarise(platelet_rows)
    out["cell_folders"] = {k: cells[k] for k in ("n_images", "with_white_cell", "n_without_white_cell",
                                                 "without_white_cell", "white_cell_diameter_px", "rbc_diameter_px")}
    out["platelet_folders"] = {k: platelets[k] for k in ("n_images", "with_white_cell", "n_without_white_cell")}
    out["note"] = ("Platelet folders hold fields without a white cell: a white cell found there is a false "
                   "find (a large platelet or a clump of platelets).")
    return out


def _command(argv: Sequence[str] | None) -> str:
    return " ".join(["python", "-m", "core.cells_fit", *(argv if argv is not None else sys.argv[1:])])


def fit(root: Path, manifest_path: str | None, other_lab: str | None, out: Path,
        argv: Sequence[str] | None = None, limit: int | None = None, seed: int = 0) -> dict[str, object]:
    """Measure the train/val parts (and the other lab), write the data file, return it."""
    from core.dataset import load_manifest, manifest_hash, manifest_part

    t0 = time.perf_counter()
    params = load_params(out if Path(out).is_file() else None)
    manifest = load_manifest(manifest_path)
    paths: list[Path] = []
    for part in FIT_PARTS:
        paths += manifest_part(manifest, root, part)[0]
    paths = _subsample(paths, limit, seed)
    train = summarise(measure(paths, params))
    # Where no red cell can be measured, find_white_cells assumes the training hospital's scale.
    if train["rbc_diameter_px"]:
        params = replace(params, default_rbc_diameter_px=float(train["rbc_diameter_px"]["median"]))
    doc: dict[str, object] = {
        "about": "Constants read by core.cells.find_white_cells, and the training hospital's white-cell "
                 "and red-cell diameters in pixels measured with them. Written by core.cells_fit fit.",
        "command": _command(argv),
        "date": time.strftime("%Y-%m-%d"),
        "data": {"folder": str(root), "manifest_hash": manifest_hash(manifest), "parts": list(FIT_PARTS),
                 "limit": limit},
        "params": asdict(params),
        "training_hospital": train,
    }
    if other_lab:
        doc["other_lab"] = other_lab_report(other_lab, params)
    doc["seconds"] = round(time.perf_counter() - t0, 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return doc


def evaluate(root: Path | None, manifest_path: str | None, parts: Sequence[str], other_lab: str | None,
             limit: int | None = None, seed: int = 0, argv: Sequence[str] | None = None) -> dict[str, object]:
    from core.dataset import load_manifest, manifest_hash, manifest_part

    t0 = time.perf_counter()
    params = load_params()
    result: dict[str, object] = {"command": _command(argv), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                 "params": asdict(params), "limit": limit, "seed": seed}
    if root is not None:
        manifest = load_manifest(manifest_path)
        result["data"] = {"folder": str(root), "manifest_hash": manifest_hash(manifest)}
        for part in parts:
            paths = _subsample(manifest_part(manifest, root, part)[0], limit, seed)
            result[f"dataset_{part}"] = summarise(measure(paths, params))
    if other_lab:
        result["other_lab"] = other_lab_report(other_lab, params, limit, seed)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    from core.dataset import OTHER_LAB_ENV, PARTS, DatasetError, resolve_data_dir

    parser = argparse.ArgumentParser(prog="python -m core.cells_fit",
                                     description="Measure the white-cell finder; write its data file.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("fit", "evaluate"):
        p = sub.add_parser(name, parents=[data_options(other_lab=True), sample_options(
            limit_help="a seeded random subsample of N images (per part / folder)")])
        if name == "fit":
            p.add_argument("--out", type=Path, default=PARAMS_PATH, help=f"data file (default: {PARAMS_PATH})")
        else:
            p.add_argument("--parts", default="train,val,test", help="comma-separated manifest parts")
            p.add_argument("--out", type=Path, help="also write the JSON here")
            p.add_argument("--no-data", action="store_true", help="only the other lab's images")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        print("error: --limit must be >= 1", file=sys.stderr)
        return 2
    other = args.other_lab or os.environ.get(OTHER_LAB_ENV) or None
    try:
        if other and not Path(other).is_dir():
            raise DatasetError(f"Other-lab folder not found: {other}")
        if args.command == "fit":
            result = fit(resolve_data_dir(args.data), args.manifest, other, args.out, argv, args.limit, args.seed)
        else:
            parts = [x.strip() for x in args.parts.split(",") if x.strip()]
            bad = [x for x in parts if x not in PARTS]
            if bad:
                raise DatasetError(f"Unknown part {bad[0]!r}: use {', '.join(PARTS)}.")
            root = None if args.no_data else resolve_data_dir(args.data)
            if root is None and not other:
                raise DatasetError(f"Nothing to measure: give --other-lab DIR or set {OTHER_LAB_ENV}.")
            result = evaluate(root, args.manifest, parts, other, args.limit, args.seed, argv)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
