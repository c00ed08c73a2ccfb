"""The ALL image dataset on disk: layout checks, content hashes and split manifests.

A split manifest is a JSON file listing every image (relative path, class, SHA-256,
part: train / val / test). Training, evaluation and the app's benchmark all read
the same manifest, so the test images are the same everywhere.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from core.cli import data_options
from core.errors import LeukoScopeError
from core.imageio import IMAGE_SUFFIXES
from core.labels import CLASS_FOLDERS
from models.convert import file_sha256

DATA_ENV = "LEUKOSCOPE_DATA"
# Smear images from another laboratory (development only, never a training class), e.g. the PBC subset.
OTHER_LAB_ENV = "LEUKOSCOPE_OTHER_LAB"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = PROJECT_ROOT / "benchmarks" / "split_manifest.json"
MANIFEST_VERSION = 1
PARTS = ("train", "val", "test")
#: Where the microscope software burnt its scale bar into this dataset's images: the bottom-right
#: corner from these fractions of the height and width (rows 196-224, columns 168-224 at 224 px).
SCALE_BAR_FROM = (0.875, 0.75)


def scale_bar_corner(shape: tuple[int, ...]) -> tuple[slice, slice]:
    """Rows and columns of the scale-bar corner (`SCALE_BAR_FROM`) in an image of this shape."""
    h, w = shape[:2]
    return slice(round(SCALE_BAR_FROM[0] * h), h), slice(round(SCALE_BAR_FROM[1] * w), w)


class DatasetError(LeukoScopeError, ValueError):
    """The dataset folder is not usable; the message names the path and the problem."""


@dataclass(frozen=True)
class ImageRecord:
    file: str  # relative to the dataset root, POSIX separators: "Original/Benign/x.jpg"
    label: str  # class folder name
    sha256: str


@dataclass
class DatasetIndex:
    root: Path
    records: list[ImageRecord]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def counts(self) -> dict[str, int]:
        return {c: sum(r.label == c for r in self.records) for c in CLASS_FOLDERS}


def resolve_data_dir(arg: str | os.PathLike | None) -> Path:
    """The dataset root from a CLI argument, else from $LEUKOSCOPE_DATA."""
    value = arg or os.environ.get(DATA_ENV)
    if not value:
        raise DatasetError(f"No dataset given: pass --data DIR or set {DATA_ENV}=DIR.")
    root = Path(value).expanduser()
    if not root.is_dir():
        raise DatasetError(f"Dataset folder not found: {root}")
    return root


def scan_dataset(root: str | os.PathLike, subset: str = "Original") -> DatasetIndex:
    """Index `root/<subset>/<class>/*` with a content hash per file.

    Raises `DatasetError` naming the path when the layout is wrong or a class folder
    is empty. Files that are not images by suffix, or cannot be read, are listed in
    `skipped` with a reason; they are never dropped silently.
    """
    root = Path(root)
    base = root / subset
    if not base.is_dir():
        raise DatasetError(
            f"Expected the dataset layout {subset}/<class>/ under {root}, but {base} does not exist."
        )
    missing = [str(base / c) for c in CLASS_FOLDERS if not (base / c).is_dir()]
    if missing:
        raise DatasetError(f"Class folder missing: {', '.join(missing)} (expected {', '.join(CLASS_FOLDERS)}).")
    records: list[ImageRecord] = []
    skipped: list[tuple[str, str]] = []
    for label in CLASS_FOLDERS:
        folder = base / label
        n_before = len(records)
        for path in sorted(folder.iterdir()):
            rel = path.relative_to(root).as_posix()
            if not path.is_file():
                continue
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((rel, "not an image file suffix"))
                continue
            try:
                if path.stat().st_size == 0:
                    skipped.append((rel, "empty file"))
                    continue
                records.append(ImageRecord(rel, label, file_sha256(path)))
            except OSError as exc:
                skipped.append((rel, f"unreadable: {exc.strerror or exc}"))
        if len(records) == n_before:
            raise DatasetError(f"Class folder is empty: {folder}")
    return DatasetIndex(root, records, skipped)


def duplicate_groups(records: list[ImageRecord]) -> dict[str, list[ImageRecord]]:
    """Byte-identical files grouped by hash (only groups with more than one file)."""
    groups: dict[str, list[ImageRecord]] = {}
    for r in records:
        groups.setdefault(r.sha256, []).append(r)
    return {h: g for h, g in groups.items() if len(g) > 1}


def _unique_by_hash(records: list[ImageRecord]) -> tuple[list[str], list[str]]:
    label_of: dict[str, str] = {}
    for r in records:
        prev = label_of.setdefault(r.sha256, r.label)
        if prev != r.label:
            raise DatasetError(f"The same image content is filed under two classes ({prev}, {r.label}): {r.file}")
    hashes = sorted(label_of)
    return hashes, [label_of[h] for h in hashes]


def make_split(
    records: list[ImageRecord], test_size: float = 0.3, val_size: float = 0.15, seed: int = 0
) -> dict[str, str]:
    """Stratified, seeded split by content hash: {sha256: "train" | "val" | "test"}.

    `test_size` is the fraction of all unique images (the paper's 70:30);
    `val_size` the fraction of the training part kept for early stopping and calibration.
    Copies of one image share a hash and therefore always land in the same part.
    """
    hashes, labels = _unique_by_hash(records)
    train_h, test_h, train_y, _ = train_test_split(
        hashes, labels, test_size=test_size, stratify=labels, random_state=seed
    )
    fit_h, val_h = train_test_split(train_h, test_size=val_size, stratify=train_y, random_state=seed)
    part = {h: "train" for h in fit_h}
    part.update({h: "val" for h in val_h})
    part.update({h: "test" for h in test_h})
    return part


def kfold_parts(records: list[ImageRecord], k: int = 5, seed: int = 0) -> list[dict[str, str]]:
    """Stratified k-fold grouped by hash: k dicts {sha256: "train" | "test"}."""
    hashes, labels = _unique_by_hash(records)
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    out = []
    for train_idx, test_idx in folds.split(np.zeros(len(hashes)), labels, groups=hashes):
        part = {hashes[i]: "train" for i in train_idx}
        part.update({hashes[i]: "test" for i in test_idx})
        out.append(part)
    return out


def build_manifest(index: DatasetIndex, part_of_hash: dict[str, str], **meta) -> dict:
    items = [
        {"file": r.file, "class": r.label, "sha256": r.sha256, "part": part_of_hash[r.sha256]}
        for r in index.records
    ]
    return {"version": MANIFEST_VERSION, **meta, "counts": part_counts(items), "items": items}


def part_counts(items: list[dict]) -> dict[str, dict[str, int]]:
    """Images per part and class of a manifest's items."""
    return {p: {c: sum(1 for it in items if it["part"] == p and it["class"] == c) for c in CLASS_FOLDERS}
            for p in PARTS}


def manifest_hash(manifest: dict) -> str:
    """A short fingerprint of what is in which part (not of the metadata)."""
    canon = json.dumps(sorted((i["sha256"], i["file"], i["part"]) for i in manifest["items"]))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def save_manifest(manifest: dict, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=1) + "\n")


def load_manifest(path: str | os.PathLike | None = None) -> dict:
    path = Path(path) if path else DEFAULT_MANIFEST
    if not path.is_file():
        raise DatasetError(f"Split manifest not found: {path}. Create one with `python -m core.dataset split --data DIR --out FILE`.")
    manifest = json.loads(path.read_text())
    if manifest.get("version") != MANIFEST_VERSION or "items" not in manifest:
        raise DatasetError(f"{path} is not a LeukoScope split manifest (version {MANIFEST_VERSION}).")
    return manifest


def manifest_part(
    manifest: dict, root: str | os.PathLike, part: str, check_hashes: bool = False
) -> tuple[list[Path], np.ndarray]:
    """Paths and integer labels (index into CLASS_FOLDERS) of one part, resolved under `root`.

    Raises `DatasetError` when manifest files are missing under `root`: a manifest
    belongs to one dataset copy; make a new one for another download.
    """
    if part not in PARTS:
        raise DatasetError(f"Unknown part {part!r}: use one of {', '.join(PARTS)}.")
    root = Path(root)
    items = [it for it in manifest["items"] if it["part"] == part]
    missing = [it["file"] for it in items if not (root / it["file"]).is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(items)} {part} images of the manifest are not under {root} "
            f"(first: {missing[0]}). Make a manifest for this copy: python -m core.dataset split --data {root} --out FILE"
        )
    if check_hashes:
        bad = [it["file"] for it in items if file_sha256(root / it["file"]) != it["sha256"]]
        if bad:
            raise DatasetError(f"{len(bad)} files under {root} differ from the manifest (first: {bad[0]}).")
    paths = [root / it["file"] for it in items]
    labels = np.array([CLASS_FOLDERS.index(it["class"]) for it in items], dtype=np.int64)
    return paths, labels


def copy_parts(manifest: dict, root: str | os.PathLike, out: str | os.PathLike, parts: list[str],
               image_size: int | None = None, jpeg_quality: int = 90) -> tuple[int, int]:
    """Copy the files of `parts` under `out` in the same layout; returns (files, bytes).

    Byte-identical and hash-checked, so the same manifest describes the copy: the way to
    train on another machine (a lent GPU) without re-encoding the images. With `image_size`,
    each image is instead resized as the training loader does (`resize_square`) and saved as a
    JPEG of `jpeg_quality`, and the copy gets its own manifest, `out/split_manifest.json`: the
    same files in the same parts, with the new files' hashes and where they came from. For a
    machine that cannot receive the full-size images (a lent GPU takes 64 MiB with the code);
    results on such a copy say so (their manifest hash differs from the original's).
    """
    if Path(out).resolve() == Path(root).resolve():
        raise DatasetError("--out must differ from the dataset folder.")
    if image_size is not None and not (16 <= image_size <= 1024 and 50 <= jpeg_quality <= 100):
        raise DatasetError("--image-size must be 16-1024 px and --jpeg-quality 50-100.")
    # Every part is checked before anything is copied: a bad part name or file leaves no half copy.
    paths = [p for part in parts for p in manifest_part(manifest, root, part, check_hashes=True)[0]]
    size = 0
    new_hash: dict[str, str] = {}
    if image_size is not None:
        import cv2

        from core.imageio import read_image, resize_square
    for src in paths:
        rel = src.relative_to(root)
        dst = Path(out) / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if image_size is None:
            shutil.copyfile(src, dst)
        else:
            small = cv2.cvtColor(resize_square(read_image(src), image_size), cv2.COLOR_RGB2BGR)
            dst.write_bytes(cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])[1].tobytes())
            new_hash[rel.as_posix()] = file_sha256(dst)
        size += dst.stat().st_size
    if image_size is not None:
        items = [{**it, "sha256": new_hash[it["file"]], "source_sha256": it["sha256"]}
                 for it in manifest["items"] if it["file"] in new_hash]
        derived = {k: v for k, v in manifest.items() if k not in ("items", "counts")}
        derived["derived_from"] = {
            "manifest_hash": manifest_hash(manifest), "parts": list(parts), "image_size": image_size,
            "jpeg_quality": jpeg_quality,
            "how": "core.imageio.resize_square (area-averaged), then OpenCV JPEG at this quality"}
        derived["counts"] = part_counts(items)
        derived["items"] = items
        save_manifest(derived, Path(out) / "split_manifest.json")
    return len(paths), size


def folder_images(root: str | os.PathLike, subset: str = "Original") -> tuple[list[Path], np.ndarray]:
    """Every image of a folder in the dataset's layout, with integer labels (for --split all)."""
    index = scan_dataset(root, subset)
    paths = [Path(root) / r.file for r in index.records]
    labels = np.array([CLASS_FOLDERS.index(r.label) for r in index.records], dtype=np.int64)
    return paths, labels


def image_files(root: str | os.PathLike) -> list[Path]:
    """Every image file under `root`, any layout (e.g. another lab's smears), sorted; hidden files skipped."""
    base = Path(root)
    if not base.is_dir():
        raise DatasetError(f"Image folder not found: {base}")
    return sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_SUFFIXES)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.dataset", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("split", help="write a stratified, hash-grouped split manifest",
                       parents=[data_options(manifest=False)])
    p.add_argument("--out", required=True,
                   help="manifest file to write (the committed benchmarks/split_manifest.json is refused "
                        "unless --overwrite: every shipped figure refers to it)")
    p.add_argument("--overwrite", action="store_true", help="allow replacing an existing manifest")
    p.add_argument("--test-size", type=float, default=0.3)
    p.add_argument("--val-size", type=float, default=0.15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=int, default=0, help="also write k stratified folds (k-fold CV)")
    sub.add_parser("summary", help="counts, duplicates and skipped files", parents=[data_options(manifest=False)])
    c = sub.add_parser("copy", help="copy the files of some manifest parts, byte for byte (to train elsewhere)",
                       parents=[data_options()])
    c.add_argument("--out", required=True, help="new dataset root (same layout)")
    c.add_argument("--parts", default="train,val", help="comma-separated: train, val, test")
    c.add_argument("--image-size", type=int,
                   help="resize to this many px and re-encode as JPEG (with OUT/split_manifest.json for the copy)")
    c.add_argument("--jpeg-quality", type=int, default=90, help="with --image-size (default 90)")
    args = parser.parse_args(argv)
    if args.cmd == "copy":
        try:
            n, size = copy_parts(load_manifest(args.manifest), resolve_data_dir(args.data), args.out,
                                 [x.strip() for x in args.parts.split(",") if x.strip()],
                                 image_size=args.image_size, jpeg_quality=args.jpeg_quality)
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"copied {n} files ({size / 1e6:.1f} MB) to {args.out}"
              + (f"; its manifest: {Path(args.out) / 'split_manifest.json'}" if args.image_size else ""))
        return 0
    try:
        root = resolve_data_dir(args.data)
        index = scan_dataset(root)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dups = duplicate_groups(index.records)
    if args.cmd == "summary":
        print(json.dumps({
            "root": str(root), "counts": index.counts(), "n_images": len(index.records),
            "duplicate_groups": [[r.file for r in g] for g in dups.values()],
            "skipped": index.skipped,
        }, indent=1))
        return 0
    meta = dict(seed=args.seed, test_size=args.test_size, val_size=args.val_size,
                grouping="sha256 (byte-identical duplicates share a part)",
                level="image-level: the public release has no patient identifiers",
                dataset_name=root.name, n_duplicate_groups=len(dups), skipped=index.skipped)
    if Path(args.out).exists() and not args.overwrite:
        print(f"error: {args.out} exists; pass --overwrite to replace it (the shipped results refer to "
              "benchmarks/split_manifest.json).", file=sys.stderr)
        return 2
    manifest = build_manifest(index, make_split(index.records, args.test_size, args.val_size, args.seed), **meta)
    save_manifest(manifest, args.out)
    print(f"wrote {args.out}: {manifest['counts']} (hash {manifest_hash(manifest)})")
    for i, part in enumerate(kfold_parts(index.records, args.folds, args.seed) if args.folds > 1 else []):
        out = Path(args.out).with_name(f"{Path(args.out).stem}.fold{i}.json")
        save_manifest(build_manifest(index, part, fold=i, k=args.folds, **meta), out)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
