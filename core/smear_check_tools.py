"""Tooling for the smear check (`core.smear_check`): non-smear pictures, synthetic stain variants,
fitting the rule bounds into `core/data/smear_rules.json`, and the evaluation report.

The app never imports this module; `python -m core.smear_check ...` runs its command line.

    python -m core.smear_check_tools fit --data DIR [--manifest M] [--write]
    python -m core.smear_check_tools evaluate --data DIR [--other-lab DIR] [--out F] [--limit N] [--seed S]

``fit`` computes the statistics of `core.smear_check.smear_features` on the manifest's train
and val parts and on one synthetic stain variant of each (`stain_variant`: a hue shift of up
to 15 OpenCV units, saturation, contrast and gamma changes from `core.augment`,
half of them under a tinted illuminant, half of them zoomed 1.5-3x onto a white cell), and on
generated non-smears (`negative_images`, seed `FIT_NEGATIVE_SEED`). Each rule's bound starts at
the most extreme smear value and is widened by the largest ``gamma`` that still rejects
`TARGET_NEGATIVE_REJECTION` of those negatives (see `fit_rules`). ``--write`` stores the rules
with the command, data and date in `core/data/smear_rules.json`; without it the result is only
printed. The other lab's images and the test part are never used here.

``evaluate`` reports, as one JSON object (also written to ``--out``): the share of another
lab's smears accepted (``--other-lab DIR`` or $LEUKOSCOPE_OTHER_LAB; every image there is a
real smear, per sub-folder too), of generated and scikit-image non-smears rejected (seed
`EVAL_NEGATIVE_SEED`, another draw than the fit's), of the test part rejected, and of
grayscale copies and synthetic stain variants (another seed than the fit's) of the test images
rejected; ``--parts`` adds train/val. ``--limit N`` evaluates a seeded random subsample of N
images per part and folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from core.cli import data_options, sample_options
from core.smear_check import (GRAYSCALE_RULE, RULES_PATH, TRANSFORMS, Rule, check_smear, load_rules,
                              smear_features)

__all__ = [
    "NEGATIVE_KINDS",
    "RULE_SPECS",
    "negative_images",
    "stain_variant",
    "fit_rules",
    "evaluate",
    "main",
]

# --------------------------------------------------------------------------------------------
# Negatives: pictures that are not blood smears
# --------------------------------------------------------------------------------------------

# scikit-image sample images shipped inside the package (no download). Names that need the
# optional `pooch` download are skipped when they fail to load.
_SKIMAGE_NAMES = (
    "astronaut", "coffee", "chelsea", "camera", "rocket", "coins", "moon", "page", "text",
    "horse", "hubble_deep_field", "immunohistochemistry", "retina", "brick", "grass", "gravel",
    "cell", "colorwheel", "logo", "clock", "binary_blobs", "checkerboard", "microaneurysms",
    "shepp_logan_phantom", "stereo_motorcycle", "lfw_subset",
)
# Kinds reported by `evaluate`: the part of a negative's name before ":".
NEGATIVE_KINDS = (
    "photo", "photo_crop", "photo_resized", "histology", "blank", "noise", "screenshot",
    "document", "gradient", "radiograph", "blobs",
)


def _to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    arr = np.asarray(img)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / (hi - lo or 1.0) * 255).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 4:  # composite on white, as core.imageio does
        a = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (arr[..., :3] * a + 255.0 * (1 - a)).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def _skimage_photos() -> list[tuple[str, np.ndarray]]:
    try:
        import skimage.data as skd
    except ImportError:  # pragma: no cover - scikit-image is a project dependency
        return []
    out = []
    for name in _SKIMAGE_NAMES:
        fn = getattr(skd, name, None)
        if fn is None:
            continue
        try:
            img = fn(rng=0) if name == "binary_blobs" else fn()  # generated: fix its seed
        except Exception:  # needs a download (pooch) or a data file that is not bundled
            continue
        if name == "stereo_motorcycle":
            img = img[0]
        elif name == "lfw_subset":
            img = cv2.resize(img[0], (224, 224), interpolation=cv2.INTER_CUBIC)
        out.append((name, _to_rgb_uint8(img)))
    return out


def _text_lines(img: np.ndarray, rng: np.random.Generator, color, x0: int, y0: int,
                x1: int, y1: int, scale: float = 0.45) -> None:
    words = ["Patient", "Report", "blood", "count", "WBC", "10^9/L", "Result", "normal", "page",
             "Date:", "2024", "file", "Edit", "View", "Help", "OK", "Cancel", "total", "sample"]
    y = y0 + 14
    while y < y1:
        line = " ".join(rng.choice(words, size=int(rng.integers(2, 7))))
        cv2.putText(img, line, (x0, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
        y += int(rng.integers(14, 22))


def _screenshot(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    img = np.empty((size, size, 3), np.uint8)
    img[...] = rng.choice([[240, 240, 240], [255, 255, 255], [30, 30, 35], [230, 235, 245]])
    bar = tuple(int(c) for c in rng.integers(0, 256, 3))
    img[:22] = bar
    for _ in range(int(rng.integers(2, 6))):
        x, y = int(rng.integers(0, size - 40)), int(rng.integers(24, size - 30))
        w, h = int(rng.integers(30, 120)), int(rng.integers(15, 80))
        cv2.rectangle(img, (x, y), (x + w, y + h), tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    text = (20, 20, 20) if img[-1, -1].mean() > 128 else (230, 230, 230)
    _text_lines(img, rng, text, 6, 24, size - 6, size - 6, 0.4)
    cv2.putText(img, "LeukoScope", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def _document(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    img = np.full((size, size, 3), 255, np.uint8)
    _text_lines(img, rng, (0, 0, 0), 8, 0, size - 8, size - 8, float(rng.uniform(0.35, 0.55)))
    if rng.random() < 0.5:  # a scanned page: paper tint and scanner noise
        tint = rng.uniform(0.9, 1.0, 3)
        img = np.clip(img * tint + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    return img


def _radiograph(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    img = np.zeros((size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for _ in range(int(rng.integers(3, 8))):  # bright, overlapping "bones"/"organs"
        cx, cy = rng.uniform(0, size, 2)
        ax, ay = rng.uniform(15, 70, 2)
        img += rng.uniform(0.3, 1.0) * np.exp(-(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2))
    img += rng.normal(0, 0.03, img.shape).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), float(rng.uniform(2, 6)))
    img = (img - img.min()) / (img.max() - img.min() + 1e-6)
    return _to_rgb_uint8((img * 255).astype(np.uint8))


def _gradient(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    t = np.linspace(0, 1, size, dtype=np.float32)
    kind = int(rng.integers(0, 3))
    if kind == 0:
        f = np.tile(t, (size, 1))
    elif kind == 1:
        yy, xx = np.mgrid[0:size, 0:size] / size
        f = np.clip(np.hypot(xx - 0.5, yy - 0.5) / 0.71, 0, 1).astype(np.float32)
    else:
        f = (np.tile(t, (size, 1)) + np.tile(t[:, None], (1, size))) / 2
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    img = c0[None, None, :] * (1 - f[..., None]) + c1[None, None, :] * f[..., None]
    return img.round().astype(np.uint8)


def _blobs(rng: np.random.Generator, size: int = 224) -> np.ndarray:
    img = np.empty((size, size, 3), np.uint8)
    img[...] = rng.integers(0, 256, 3)
    for _ in range(int(rng.integers(5, 30))):
        c = (int(rng.integers(0, size)), int(rng.integers(0, size)))
        cv2.circle(img, c, int(rng.integers(5, 40)), tuple(int(x) for x in rng.integers(0, 256, 3)), -1)
    return cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, 3)))


def _jpeg(rgb: np.ndarray, quality: int = 80) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _generated(rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    s = 224
    out: list[tuple[str, np.ndarray]] = [
        ("blank:white", np.full((s, s, 3), 255, np.uint8)),
        ("blank:black", np.zeros((s, s, 3), np.uint8)),
        ("blank:gray", np.full((s, s, 3), 128, np.uint8)),
        ("blank:pink_slide", np.clip(np.array([238, 215, 225]) + rng.normal(0, 3, (s, s, 3)), 0, 255).astype(np.uint8)),
        ("blank:blue_slide", np.clip(np.array([225, 230, 245]) + rng.normal(0, 3, (s, s, 3)), 0, 255).astype(np.uint8)),
        ("noise:uniform_rgb", rng.integers(0, 256, (s, s, 3), dtype=np.uint8)),
        ("noise:uniform_gray", _to_rgb_uint8(rng.integers(0, 256, (s, s), dtype=np.uint8))),
        ("noise:gaussian_rgb", np.clip(rng.normal(128, 40, (s, s, 3)), 0, 255).astype(np.uint8)),
        ("noise:gaussian_gray", _to_rgb_uint8(np.clip(rng.normal(128, 40, (s, s)), 0, 255).astype(np.uint8))),
        ("noise:salt_pepper", _to_rgb_uint8((rng.random((s, s)) < 0.5).astype(np.uint8) * 255)),
        ("noise:smooth_color", cv2.GaussianBlur(rng.integers(0, 256, (s, s, 3), dtype=np.uint8), (0, 0), 4)),
    ]
    # Odd-numbered screenshots and documents are saved as JPEG, as an upload would be.
    out += [(f"screenshot:{i}", _jpeg(_screenshot(rng)) if i % 2 else _screenshot(rng)) for i in range(4)]
    out += [(f"document:{i}", _jpeg(_document(rng)) if i % 2 else _document(rng)) for i in range(4)]
    out += [(f"gradient:{i}", _gradient(rng)) for i in range(4)]
    out += [(f"radiograph:{i}", _radiograph(rng)) for i in range(4)]
    out += [(f"blobs:{i}", _blobs(rng)) for i in range(5)]
    return out


def negative_images(seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Non-smear pictures as ``(name, rgb)`` pairs; ``name`` is ``"<kind>:<detail>"``.

    Kinds (see NEGATIVE_KINDS): scikit-image's bundled sample images as they are ("photo";
    "histology" for `immunohistochemistry`, a stained tissue section, which is *not* a blood
    smear), a random crop of each resized to 224x224 ("photo_crop") and each squashed to
    224x224 ("photo_resized"); generated blank images, noise, screenshots, documents,
    gradients, grayscale radiograph-like images and random colour blobs. Deterministic for a
    seed; the seed changes the generated images and the crops, not the sample photos.
    """
    rng = np.random.default_rng(seed)
    out: list[tuple[str, np.ndarray]] = []
    for name, img in _skimage_photos():
        kind = "histology" if name == "immunohistochemistry" else "photo"
        out.append((f"{kind}:{name}", img))
        h, w = img.shape[:2]
        ch, cw = max(8, int(h * rng.uniform(0.3, 0.6))), max(8, int(w * rng.uniform(0.3, 0.6)))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = cv2.resize(img[y:y + ch, x:x + cw], (224, 224), interpolation=cv2.INTER_AREA)
        out.append((f"{'histology' if kind == 'histology' else 'photo_crop'}:{name}_crop", crop))
        squash = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
        out.append((f"{'histology' if kind == 'histology' else 'photo_resized'}:{name}_224", squash))
    out += _generated(rng)
    return out



# --------------------------------------------------------------------------------------------
# Synthetic positives: a training smear as another lab might stain and photograph it
# --------------------------------------------------------------------------------------------


def stain_variant(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A synthetic stain/camera variant of a smear image (same size, uint8 RGB).

    Flips/rotations by 90 degrees, a hue shift of up to +-15 OpenCV units (30 degrees), saturation
    x0.6-1.4, contrast and gamma changes (`core.augment`); with probability 1/2 a
    tinted illuminant (the background becomes a pale colour of random hue, saturation up to 0.25,
    as the peach or bluish backgrounds of other labs); with probability 1/2 a 1.5-3x zoom centred
    on a white cell (`core.cells`), as a higher-magnification single-cell image.
    """
    from core.augment import AugmentConfig, augment
    from core.cells import find_white_cells

    h, w = rgb.shape[:2]
    out = rgb
    if rng.random() < 0.5:
        cells = find_white_cells(rgb).cells
        z = rng.uniform(1.5, 3.0)
        ch, cw = max(8, int(h / z)), max(8, int(w / z))
        if cells:
            cx, cy = cells[int(rng.integers(len(cells)))].centroid
        else:
            cx, cy = w / 2, h / 2
        y = int(np.clip(round(cy - ch / 2), 0, h - ch))
        x = int(np.clip(round(cx - cw / 2), 0, w - cw))
        out = cv2.resize(out[y:y + ch, x:x + cw], (w, h), interpolation=cv2.INTER_CUBIC)
    # No additive brightness: on the palest slides it washes the stain out to pure white, which
    # no camera set up for a smear would give; exposure changes come from gamma and contrast.
    cfg = AugmentConfig(flip=True, rot90=True, rotate_deg=0.0, scale=(1.0, 1.0), brightness=0.0, contrast=0.1,
                        saturation=0.4, gamma=0.15, elastic_p=0.0, hue_shift=15.0)
    out = augment(np.ascontiguousarray(out), cfg, rng)
    if rng.random() < 0.5:
        hsv = np.uint8([[[int(rng.integers(0, 180)), int(rng.uniform(0, 0.25) * 255), 255]]])
        tint = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0
        out = np.clip(out.astype(np.float32) * tint, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------------------------
# Fitting
# --------------------------------------------------------------------------------------------

# (name, feature, side, transform): the rules `fit_rules` fits. Names are identifiers, turned
# into plain words by core.smear_check.rejection_sentence. Every statistic is a fraction in
# 0..1 except blob_count.
RULE_SPECS: tuple[tuple[str, str, str, str], ...] = (
    (GRAYSCALE_RULE, "sat_p99", "min", "logit"),
    ("vivid", "sat_mean", "max", "logit"),
    ("tinted_background", "bg_sat", "max", "logit"),
    ("unstained", "stained_frac", "min", "logit"),
    ("no_purple_stain", "purple_frac", "min", "logit"),
    ("stain_everywhere", "purple_frac", "max", "logit"),
    ("brown", "brown_frac", "max", "logit"),
    ("green", "green_frac", "max", "logit"),
    ("dark_background", "bright_p75", "min", "logit"),
    ("dark_pixels", "dark_frac", "max", "logit"),
    ("too_smooth", "hf_energy", "min", "logit"),
    ("noise", "hf_energy", "max", "logit"),
    ("sharp_edges", "sharp_frac", "max", "logit"),
    ("pure_white_black", "extreme_frac", "max", "logit"),
    ("many_specks", "blob_count", "max", "log"),
    ("one_huge_stained_region", "blob_max_frac", "max", "logit"),
    ("stained_regions_cover_most", "blob_coverage", "max", "logit"),
)

FIT_PARTS = ("train", "val")
FIT_NEGATIVE_SEED = 1  # `evaluate` uses seed 0: the generated negatives and crops differ
EVAL_NEGATIVE_SEED = 0
FIT_VARIANT_SEED = 7  # synthetic stain variants of the fit images
EVAL_VARIANT_SEED = 8  # ... and of the test images in `evaluate`
TARGET_NEGATIVE_REJECTION = 0.98  # on the fit negatives; the evaluation target is 0.95
GAMMAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
TARGETS = {"other_lab_acceptance_min": 0.97, "negative_rejection_min": 0.95, "test_rejection_max": 0.01}


def _bound(values: np.ndarray, side: str, transform: str, gamma: float) -> float:
    fwd, inv = TRANSFORMS[transform]
    edge = float(values.min() if side == "min" else values.max())
    return float(inv(fwd(edge) - gamma if side == "min" else fwd(edge) + gamma))


def _make_rules(smear_feats: Sequence[dict[str, float]], gamma: float) -> tuple[Rule, ...]:
    rules = []
    for name, feature, side, transform in RULE_SPECS:
        x = np.array([f[feature] for f in smear_feats], dtype=np.float64)
        bound = _bound(x, side, transform, gamma)
        rules.append(Rule(name, feature, side, round(bound, 6), round(float(np.median(x)), 6), transform))
    return tuple(rules)


def _rejected(feats: Sequence[dict[str, float]], rules: Sequence[Rule]) -> np.ndarray:
    return np.array([not all(r.holds(f[r.feature]) for r in rules) for f in feats], dtype=bool)


def fit_rules(
    smear_feats: Sequence[dict[str, float]],
    negative_feats: Sequence[dict[str, float]],
    target: float = TARGET_NEGATIVE_REJECTION,
    gammas: Sequence[float] = GAMMAS,
) -> tuple[tuple[Rule, ...], dict[str, object]]:
    """Choose every rule's bound from smear statistics, and one widening from the negatives.

    For each rule in RULE_SPECS the bound starts at the most extreme value seen on the smear
    images (so none of them is rejected) and is pushed outwards by ``gamma`` on the rule's
    transformed scale (logit for fractions, log for counts; gamma = 1 is about a factor e in
    odds). The widest ``gamma`` in ``gammas`` that still rejects at least ``target`` of the
    negatives is kept: as tolerant of unseen smears as the negatives allow. The grid stops at 1
    on purpose: wider bounds would rest on the finite negative set alone, far outside anything
    seen on smears. Pass train/val smear statistics (and their stain variants) only.
    """
    if not smear_feats or not negative_feats:
        raise ValueError("fit_rules needs smear and negative statistics")
    table = []
    best: tuple[float, tuple[Rule, ...]] | None = None
    for g in sorted(gammas):
        rules = _make_rules(smear_feats, g)
        neg = float(_rejected(negative_feats, rules).mean())
        table.append({"gamma": g, "negative_rejection": round(neg, 4)})
        if neg >= target:
            best = (g, rules)
    if best is None:  # even the tightest bounds miss the target: keep them and say so
        best = (min(gammas), _make_rules(smear_feats, min(gammas)))
    gamma, rules = best
    rej = _rejected(negative_feats, rules)
    per_rule = {r.name: int(sum(not r.holds(f[r.feature]) for f in negative_feats)) for r in rules}
    report = {
        "gamma": gamma,
        "target_negative_rejection": target,
        "n_smear_images": len(smear_feats),
        "n_negatives": len(negative_feats),
        "smear_rejection_fit": float(_rejected(smear_feats, rules).mean()),
        "negative_rejection_fit": round(float(rej.mean()), 4),
        "negatives_rejected_per_rule": per_rule,
        "gamma_search": table,
    }
    return rules, report


def read_part(root: Path, manifest: dict, part: str, limit: int | None = None, seed: int = 0):
    """(paths, class names) of one manifest part, optionally a seeded random subsample."""
    from core.dataset import manifest_part
    from core.labels import CLASS_FOLDERS

    paths, labels = manifest_part(manifest, root, part)
    idx = np.arange(len(paths))
    if limit is not None and limit < len(paths):
        idx = np.sort(np.random.default_rng(seed).choice(len(paths), limit, replace=False))
    return [paths[i] for i in idx], [CLASS_FOLDERS[labels[i]] for i in idx]


def _read_images(paths: Sequence[Path]):
    """Yields (path, rgb or None, error or None)."""
    from core.imageio import ImageError, read_image

    for p in paths:
        try:
            yield p, read_image(p), None
        except ImageError as exc:
            yield p, None, str(exc)


def _command(prog: str, argv: Sequence[str] | None) -> str:
    return " ".join([*prog.split(), *(argv if argv is not None else sys.argv[1:])])


def fit_command(root: Path, manifest_path: str | None, write: bool, command: str = "",
                out: Path = RULES_PATH) -> dict[str, object]:
    """Fit on the train/val parts (+ variants) and the seed-1 negatives; write when asked."""
    from core.dataset import load_manifest, manifest_hash

    t0 = time.perf_counter()
    manifest = load_manifest(manifest_path)
    paths: list[Path] = []
    for part in FIT_PARTS:
        paths += read_part(root, manifest, part)[0]
    rng = np.random.default_rng(FIT_VARIANT_SEED)
    feats, errors = [], []
    for p, rgb, err in _read_images(paths):
        if err:
            errors.append({"file": str(p), "error": err})
            continue
        feats.append(smear_features(rgb))
        feats.append(smear_features(stain_variant(rgb, rng)))
    neg_feats = [smear_features(img) for _, img in negative_images(FIT_NEGATIVE_SEED)]
    rules, report = fit_rules(feats, neg_feats)
    doc = {
        "about": "Bounds of core.smear_check's rules, read at run time. Written by core.smear_check_tools fit.",
        "command": command,
        "date": time.strftime("%Y-%m-%d"),
        "data": {"folder": str(root), "manifest_hash": manifest_hash(manifest), "parts": list(FIT_PARTS),
                 "n_images": len(feats) // 2, "stain_variants_per_image": 1, "variant_seed": FIT_VARIANT_SEED,
                 "negative_seed": FIT_NEGATIVE_SEED, "unreadable": errors},
        "fit": report,
        "rules": [r.to_dict() for r in rules],
        "seconds": round(time.perf_counter() - t0, 1),
    }
    if write:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        doc["written_to"] = str(out)
    return doc


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def _rate(flags: Sequence[bool]) -> float | None:
    return round(float(np.mean(flags)), 4) if len(flags) else None


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


def _part_report(root: Path, manifest: dict, part: str, rules, limit, seed, copies: bool) -> dict[str, object]:
    paths, classes = read_part(root, manifest, part, limit, seed)
    rej, kept_classes, refused, errors = [], [], [], []
    gray_rej, var_rej, var_refused = [], [], []
    rng = np.random.default_rng(EVAL_VARIANT_SEED)
    for (p, rgb, err), cls in zip(_read_images(paths), classes):
        if err:
            errors.append({"file": str(p), "error": err})
            continue
        res = check_smear(rgb, rules)
        rej.append(not res.is_smear)
        kept_classes.append(cls)
        if not res.is_smear:
            refused.append({"file": p.relative_to(root).as_posix(), "score": round(res.score, 3),
                            "message": res.message, "failed": list(res.failed)})
        if copies:
            gray_rej.append(not check_smear(_to_gray(rgb), rules).is_smear)
            v = check_smear(stain_variant(rgb, rng), rules)
            var_rej.append(not v.is_smear)
            if not v.is_smear:
                var_refused.append({"file": p.name, "failed": list(v.failed)})
    out: dict[str, object] = {
        "n_images": len(rej),
        "n_rejected": int(sum(rej)),
        "rejection_rate": _rate(rej),
        "rejection_by_class": {c: _rate([r for r, k in zip(rej, kept_classes) if k == c])
                               for c in dict.fromkeys(kept_classes)},
        "rejected": refused,
        "unreadable": errors,
    }
    if copies:
        out["grayscale_copies"] = {"n_images": len(gray_rej), "n_rejected": int(sum(gray_rej)),
                                   "rejection_rate": _rate(gray_rej),
                                   "rule": f"'{GRAYSCALE_RULE}': grayscale smears are refused by design"}
        out["stain_variants"] = {"n_images": len(var_rej), "n_rejected": int(sum(var_rej)),
                                 "rejection_rate": _rate(var_rej), "seed": EVAL_VARIANT_SEED,
                                 "rejected": var_refused}
    return out


def _other_lab_report(root: Path, rules, limit, seed) -> dict[str, object]:
    from core.cells_fit import other_lab_groups

    groups, flags_all, refused = {}, [], []
    for name, paths in other_lab_groups(root).items():
        if limit is not None and limit < len(paths):
            idx = np.sort(np.random.default_rng(seed).choice(len(paths), limit, replace=False))
            paths = [paths[i] for i in idx]
        flags = []
        for p, rgb, err in _read_images(paths):
            if err:
                refused.append({"file": str(p.relative_to(root)), "error": err})
                continue
            res = check_smear(rgb, rules)
            flags.append(res.is_smear)
            if not res.is_smear:
                refused.append({"file": p.relative_to(root).as_posix(), "score": round(res.score, 3),
                                "message": res.message, "failed": list(res.failed)})
        groups[name] = {"n_images": len(flags), "n_accepted": int(sum(flags)), "acceptance_rate": _rate(flags)}
        flags_all += flags
    return {"folder": str(root), "n_images": len(flags_all), "n_accepted": int(sum(flags_all)),
            "acceptance_rate": _rate(flags_all), "by_folder": groups, "refused": refused}


def evaluate(
    root: str | Path | None,
    manifest_path: str | None = None,
    parts: Sequence[str] = ("test",),
    other_lab: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    negative_seed: int = EVAL_NEGATIVE_SEED,
    rules: Sequence[Rule] | None = None,
    command: str = "",
) -> dict[str, object]:
    """The evaluation report described in the module docstring (JSON-ready)."""
    from core.dataset import load_manifest, manifest_hash

    t0 = time.perf_counter()
    rules = tuple(load_rules() if rules is None else rules)
    result: dict[str, object] = {"command": command, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                 "rules_file": str(RULES_PATH), "n_rules": len(rules), "limit": limit, "seed": seed}
    if root is not None:
        root = Path(root)
        manifest = load_manifest(manifest_path)
        result["data"] = {"folder": str(root), "manifest_hash": manifest_hash(manifest)}
        for part in parts:
            result[part] = _part_report(root, manifest, part, rules, limit, seed, copies=part == "test")

    negatives = negative_images(negative_seed)
    by_kind: dict[str, list[bool]] = {}
    accepted, histology, neg_scores = [], {}, []
    for name, img in negatives:
        res = check_smear(img, rules)
        kind = name.split(":", 1)[0]
        by_kind.setdefault(kind, []).append(not res.is_smear)
        neg_scores.append(res.score)
        if res.is_smear:
            accepted.append({"name": name, "score": round(res.score, 3)})
        if kind == "histology":
            histology[name] = {"is_smear": res.is_smear, "message": res.message, "failed": list(res.failed)}
    all_neg = [f for v in by_kind.values() for f in v]
    result["negatives"] = {
        "n_images": len(all_neg), "n_rejected": int(sum(all_neg)), "rejection_rate": _rate(all_neg),
        "seed": negative_seed, "by_kind": {k: {"n": len(v), "rate": _rate(v)} for k, v in by_kind.items()},
        "accepted": accepted, "score_max": round(max(neg_scores), 3),
        "histology_immunohistochemistry": histology,
    }
    if other_lab:
        result["other_lab"] = _other_lab_report(Path(other_lab), rules, limit, seed)

    checks = {"negative_rejection_min": result["negatives"]["rejection_rate"] >= TARGETS["negative_rejection_min"]}
    if "test" in result:
        checks["test_rejection_max"] = result["test"]["rejection_rate"] <= TARGETS["test_rejection_max"]
    if "other_lab" in result:
        checks["other_lab_acceptance_min"] = (result["other_lab"]["acceptance_rate"] or 0) >= \
            TARGETS["other_lab_acceptance_min"]
    result["targets"] = TARGETS
    result["meets_targets"] = checks
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def main(argv: Sequence[str] | None = None, prog: str = "python -m core.smear_check_tools") -> int:
    from core.dataset import OTHER_LAB_ENV, PARTS, DatasetError, resolve_data_dir

    parser = argparse.ArgumentParser(prog=prog, description="Is this a stained blood smear? Fit or evaluate "
                                                            "the check; prints one JSON object.")
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="acceptance of another lab's smears, rejection of non-smears and of "
                                         "the test part",
                        parents=[data_options(other_lab=True), sample_options(
                            limit_help="a seeded random subsample of N images per part and folder")])
    ev.add_argument("--parts", default="test", help="comma-separated manifest parts (default: test)")
    ev.add_argument("--part", help=argparse.SUPPRESS)  # the old single-part flag
    ev.add_argument("--out", type=Path, help="also write the JSON report here")
    fit = sub.add_parser("fit", help=f"fit the rule bounds on the {'/'.join(FIT_PARTS)} parts and negatives",
                         parents=[data_options()])
    fit.add_argument("--write", action="store_true", help=f"write the rules to {RULES_PATH}")
    args = parser.parse_args(argv)
    if args.command == "evaluate" and args.limit is not None and args.limit < 1:
        print("error: --limit must be >= 1", file=sys.stderr)
        return 2
    command = _command(prog, argv)
    try:
        root = resolve_data_dir(args.data)
        if args.command == "fit":
            result = fit_command(root, args.manifest, args.write, command)
        else:
            parts = [args.part] if args.part else [x.strip() for x in args.parts.split(",") if x.strip()]
            bad = [x for x in parts if x not in PARTS]
            if bad:
                raise DatasetError(f"Unknown part {bad[0]!r}: use {', '.join(PARTS)}.")
            other = args.other_lab or os.environ.get(OTHER_LAB_ENV) or None
            if other and not Path(other).is_dir():
                raise DatasetError(f"Other-lab folder not found: {other}")
            result = evaluate(root, args.manifest, parts, other, args.limit, args.seed, command=command)
            if args.out:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    except (DatasetError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
