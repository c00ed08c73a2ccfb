"""Tests for core.smear_check: the "is this a stained blood smear?" gate and energy_score.

Fast tests use generated images and scikit-image's bundled samples; the sample-smear tests
use samples/Original/<class>/ when the repository ships it, else the dataset named by
$LEUKOSCOPE_DATA (skipped when unset); the dataset test evaluates a 150-image subsample of
the manifest's test part.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from core import smear_check as sc  # noqa: E402
from core.labels import CLASS_FOLDERS  # noqa: E402

DATA_ENV = "LEUKOSCOPE_DATA"
SAMPLES = REPO_ROOT / "samples" / "Original"


def _data_root() -> Path:
    value = os.environ.get(DATA_ENV)
    if not value:
        pytest.skip(f"{DATA_ENV} is not set: point it at the ALL dataset root to run this test")
    root = Path(value)
    if not (root / "Original").is_dir():
        pytest.skip(f"{DATA_ENV}={value} has no Original/ folder")
    return root


@pytest.fixture(scope="module")
def negatives() -> list[tuple[str, np.ndarray]]:
    return sc.negative_images(0)


@pytest.fixture(scope="module")
def negative_results(negatives):
    return {name: sc.check_smear(img) for name, img in negatives}


def _synthetic_smear(seed: int = 0) -> np.ndarray:
    """A drawn smear: pale blue-white background, gray-blue red-cell rings, violet nuclei,
    optical blur and sensor noise."""
    rng = np.random.default_rng(seed)
    s = 224
    img = np.zeros((s, s, 3), np.float32)
    img[...] = (236, 236, 246)
    for _ in range(60):
        c = (int(rng.integers(0, s)), int(rng.integers(0, s)))
        r = int(rng.integers(9, 13))
        cv2.circle(img, c, r, (175, 180, 205), -1)
        cv2.circle(img, c, r // 2, (215, 215, 232), -1)
    for _ in range(int(rng.integers(2, 6))):
        c = (int(rng.integers(20, s - 20)), int(rng.integers(20, s - 20)))
        r = int(rng.integers(12, 20))
        cv2.circle(img, c, r + 3, (200, 170, 225), -1)
        cv2.circle(img, c, r, (120, 70, 180), -1)
    img = cv2.GaussianBlur(img, (0, 0), 1.2) + rng.normal(0, 3, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# The shipped rules
# --------------------------------------------------------------------------------------------


def test_rules_are_fitted_and_cover_every_spec():
    assert sc.RULES, "RULES is empty: run `python -m core.smear_check fit --write`"
    assert [(r.feature, r.side, r.transform) for r in sc.RULES] == list(sc.RULE_SPECS)
    feats = sc.smear_features(_synthetic_smear())
    for r in sc.RULES:
        assert r.feature in feats
        assert r.fail, f"rule {r.feature} {r.side} has no plain-language reason"
        assert r.holds(r.typical), f"the typical smear value breaks rule {r}"


def test_result_fields_and_consistency():
    res = sc.check_smear(_synthetic_smear())
    assert isinstance(res, sc.SmearCheck)
    assert isinstance(res.is_smear, bool)
    assert 0.0 <= res.score <= 1.0
    assert res.reasons and all(isinstance(s, str) and s for s in res.reasons)
    assert set(res.features) == set(sc.smear_features(_synthetic_smear()))
    assert all(isinstance(v, float) and math.isfinite(v) for v in res.features.values())


@pytest.mark.parametrize("seed", range(4))
def test_synthetic_smear_accepted(seed):
    res = sc.check_smear(_synthetic_smear(seed))
    assert res.is_smear, res.reasons
    assert res.score >= 0.5


def test_grayscale_copy_of_a_smear_is_refused_as_grayscale():
    gray = cv2.cvtColor(cv2.cvtColor(_synthetic_smear(), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    res = sc.check_smear(gray)
    assert not res.is_smear and res.score < 0.5
    assert any("grayscale" in s for s in res.reasons)


def test_input_forms_and_validation():
    smear = _synthetic_smear()
    rgba = np.dstack([smear, np.full(smear.shape[:2], 255, np.uint8)])
    assert sc.check_smear(rgba).is_smear
    assert not sc.check_smear(smear[..., 0]).is_smear  # 2-D gray: allowed, not a smear
    for shape in [(1, 1, 3), (8, 8, 3), (3, 500, 3)]:  # tiny or thin: a verdict, no crash
        assert not sc.check_smear(np.full(shape, 200, np.uint8)).is_smear
    with pytest.raises(ValueError):
        sc.check_smear(smear.astype(np.float32))
    with pytest.raises(ValueError):
        sc.check_smear(np.zeros((10, 10, 5), np.uint8))


def test_large_image_is_downscaled_and_fast():
    import time

    big = cv2.resize(_synthetic_smear(), (2000, 2000), interpolation=cv2.INTER_CUBIC)
    t0 = time.perf_counter()
    res = sc.check_smear(big)
    assert time.perf_counter() - t0 < 2.0
    assert res.is_smear, res.reasons


# --------------------------------------------------------------------------------------------
# Negatives
# --------------------------------------------------------------------------------------------


def test_negative_images_set(negatives):
    assert len(negatives) >= 100
    kinds = {name.split(":", 1)[0] for name, _ in negatives}
    assert kinds <= set(sc.NEGATIVE_KINDS)
    for required in ("photo", "blank", "noise", "screenshot", "document", "gradient", "radiograph", "blobs"):
        assert required in kinds
    for name, img in negatives:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert min(img.shape[:2]) >= 32, name
    assert len({name for name, _ in negatives}) == len(negatives)
    again = sc.negative_images(0)
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(negatives, again))


def test_generated_negatives_all_rejected_with_reasons(negative_results):
    generated = {n: r for n, r in negative_results.items()
                 if n.split(":")[0] in ("blank", "noise", "screenshot", "document", "gradient", "radiograph", "blobs")}
    assert len(generated) >= 25
    accepted = [n for n, r in generated.items() if r.is_smear]
    assert not accepted
    for name, res in generated.items():
        assert res.score < 0.5, name
        assert len(res.reasons) >= 2 and "does not look like" in res.reasons[0], name


def test_negative_rejection_rate(negative_results):
    rejected = [not r.is_smear for r in negative_results.values()]
    assert np.mean(rejected) >= 0.95, [n for n, r in negative_results.items() if r.is_smear]


def test_specific_reasons(negative_results):
    doc = [r for n, r in negative_results.items() if n.startswith("document:")]
    assert all(any("sharp edges" in s or "stain" in s for s in r.reasons) for r in doc)
    radio = [r for n, r in negative_results.items() if n.startswith("radiograph:")]
    assert all(any("grayscale" in s for s in r.reasons) for r in radio)


def test_immunohistochemistry_is_not_a_blood_smear(negative_results):
    """A DAB/hematoxylin tissue section: stained, but not a blood smear. It is refused, for
    its brown (DAB) pixels."""
    ihc = {n: r for n, r in negative_results.items() if n.startswith("histology:")}
    if not ihc:
        pytest.skip("scikit-image's immunohistochemistry sample is not available")
    for name, res in ihc.items():
        assert not res.is_smear, (name, res.features)
        assert any("brown" in s for s in res.reasons), res.reasons


# --------------------------------------------------------------------------------------------
# energy_score
# --------------------------------------------------------------------------------------------


def test_energy_score_values():
    logits = np.array([[2.0, 0.0, -1.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    expected = -np.log(np.exp(logits).sum(axis=1))
    np.testing.assert_allclose(sc.energy_score(logits), expected, rtol=1e-12)
    assert sc.energy_score(logits).shape == (2,)
    assert np.ndim(sc.energy_score(logits[0])) == 0
    np.testing.assert_allclose(sc.energy_score(np.zeros(4)), -math.log(4))


def test_energy_score_stable_and_ordered():
    big = np.array([[1000.0, 999.0, -5.0, 0.0]])
    e = sc.energy_score(big)
    assert np.isfinite(e).all()
    np.testing.assert_allclose(e, -(1000.0 + math.log1p(math.exp(-1.0) + math.exp(-1005.0) + math.exp(-1000.0))))
    # a confident, in-distribution-like output has lower energy than a flat one
    assert sc.energy_score(np.array([8.0, 0.0, 0.0, 0.0])) < sc.energy_score(np.array([0.5, 0.4, 0.5, 0.4]))
    with pytest.raises(ValueError):
        sc.energy_score(np.float64(1.0))


# --------------------------------------------------------------------------------------------
# Fitting procedure (on made-up statistics)
# --------------------------------------------------------------------------------------------


def test_fit_rules_contains_smears_and_picks_widest_gamma():
    rng = np.random.default_rng(0)
    base = sc.smear_features(_synthetic_smear())
    smears = []
    for _ in range(50):
        f = dict(base)
        f["stain_frac"] = float(rng.uniform(0.05, 0.4))
        f["dark_frac"] = float(rng.uniform(0.0, 0.002))
        smears.append(f)
    negs = []
    for k in range(20):
        f = dict(base)
        f["stain_frac"] = 0.0 if k % 2 else 0.01 + 0.002 * k  # some close to the smears
        negs.append(f)
    rules, report = sc.fit_rules(smears, negs, target=0.5)
    assert report["smear_rejection_fit"] == 0.0
    assert report["negative_rejection_fit"] >= 0.5
    chosen = report["gamma"]
    later = [row for row in report["gamma_search"] if row["gamma"] > chosen]
    assert all(row["negative_rejection"] < 0.5 for row in later)
    stain_min = next(r for r in rules if r.feature == "stain_frac" and r.side == "min")
    assert stain_min.bound <= 0.05


# --------------------------------------------------------------------------------------------
# Real smear images
# --------------------------------------------------------------------------------------------


def _sample_smears(per_class: int = 6) -> list[Path]:
    if SAMPLES.is_dir():
        files = [p for c in CLASS_FOLDERS for p in sorted((SAMPLES / c).glob("*"))[:per_class]
                 if p.suffix.lower() in {".jpg", ".jpeg", ".png"}]
        if files:
            return files
    root = _data_root()
    from core.dataset import load_manifest

    paths, _ = sc._read_part(root, load_manifest(), "test", limit=per_class * len(CLASS_FOLDERS), seed=1)
    return paths


def test_sample_smears_accepted():
    from core.imageio import read_image

    paths = _sample_smears()
    assert paths
    rejected = {}
    for p in paths:
        res = sc.check_smear(read_image(p))
        if not res.is_smear:
            rejected[p.name] = res.reasons
        assert 0.0 <= res.score <= 1.0
    assert not rejected, rejected


def test_dataset_evaluation_subsample():
    root = _data_root()
    result = sc.evaluate(root, part="test", limit=150, seed=0)
    json.dumps(result)  # JSON-ready
    assert result["n_images"] == 150
    assert result["false_rejection_rate"] <= 0.02, result["false_rejections"]
    assert result["rejection_rate"] >= 0.95, result["accepted_negatives"]
    assert result["n_negatives"] >= 100
    assert set(result["rejection_by_kind"]) <= set(sc.NEGATIVE_KINDS)


def test_cli_evaluate_prints_one_json():
    root = _data_root()
    out = subprocess.run(
        [sys.executable, "-m", "core.smear_check", "evaluate", "--data", str(root), "--limit", "20"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert {"false_rejection_rate", "rejection_rate", "rejection_by_kind", "n_images"} <= set(result)


def test_cli_without_data_fails_plainly(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV}
    out = subprocess.run([sys.executable, "-m", "core.smear_check", "evaluate"], cwd=REPO_ROOT,
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert DATA_ENV in out.stderr
