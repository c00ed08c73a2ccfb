"""Session-aware folds, the block bootstrap and the cross-validation CLI (frozen probe)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from core.crossval import (Scheme, block_bootstrap_ci, capture_blocks, capture_number, describe_fold, main,
                           make_folds)
from core.dataset import DatasetError, ImageRecord
from core.labels import CLASS_FOLDERS

from conftest import SAMPLES

PREFIX = {"Benign": "WBC-Benign", "Early": "WBC-Malignant-Early", "Pre": "WBC-Malignant-Pre",
          "Pro": "WBC-Malignant-Pro"}


def records(n_per_class: int = 60, duplicates: tuple[int, int] = (10, 11)) -> list[ImageRecord]:
    out = []
    for label in CLASS_FOLDERS:
        for n in range(1, n_per_class + 1):
            h = f"{label}-{n}"
            if label == "Pro" and n == duplicates[1]:  # byte-identical to its neighbour, as Pro-117 = Pro-118
                h = f"{label}-{duplicates[0]}"
            out.append(ImageRecord(f"Original/{label}/{PREFIX[label]}-{n:03d}.jpg", label, h))
    return out


def test_capture_number_reads_the_file_name():
    assert capture_number("Original/Pre/WBC-Malignant-Pre-042.jpg") == 42
    with pytest.raises(DatasetError, match="capture number"):
        capture_number("Original/Pre/smear.jpg")


@pytest.mark.parametrize("scheme", [Scheme.CONTIGUOUS, Scheme.RANDOM])
def test_every_image_is_tested_exactly_once_and_copies_stay_together(scheme):
    recs = records()
    folds = make_folds(recs, 5, scheme, embargo=5 if scheme is Scheme.CONTIGUOUS else 0)
    hashes = {r.sha256 for r in recs}
    tested = [h for f in folds for h, part in f.items() if part == "test"]
    assert sorted(tested) == sorted(hashes)  # one hash per pair of copies: they share every fold's part
    for f in folds:
        assert set(f) == hashes and {"train", "val", "test"} <= set(f.values())


def test_contiguous_folds_embargo_the_neighbours_of_the_test_block():
    recs = records()
    folds = make_folds(recs, 5, Scheme.CONTIGUOUS, embargo=5)
    desc = describe_fold(recs, folds[2])["Benign"]
    assert desc["test"]["ranges"] == [[25, 36]]  # 60 images in 5 blocks: the third is 25..36
    assert desc["embargo"]["ranges"] == [[20, 24], [37, 41]]
    # validation is one run right after the embargo; training never touches the embargo zone
    assert desc["val"]["ranges"][0][0] == 42
    train = [capture_number(r.file) for r in recs if r.label == "Benign" and folds[2][r.sha256] == "train"]
    assert not any(20 <= n <= 41 for n in train)


def test_random_scheme_refuses_an_embargo():
    with pytest.raises(ValueError, match="embargo"):
        make_folds(records(), 5, Scheme.RANDOM, embargo=37)


def test_block_bootstrap_interval_brackets_the_estimate_and_widens_with_fewer_blocks():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 200)
    pred = np.where(rng.random(800) < 0.9, labels, (labels + 1) % 4)
    files = [f"x-{i % 200:03d}.jpg" for i in range(800)]
    fine = block_bootstrap_ci(labels, pred, capture_blocks(files, labels, 5), n_boot=300)
    coarse = block_bootstrap_ci(labels, pred, capture_blocks(files, labels, 50), n_boot=300)
    lo, hi = fine["balanced_accuracy"]
    assert lo < 0.9 < hi
    assert fine["n_blocks"] == 160 and coarse["n_blocks"] == 16
    assert np.diff(coarse["balanced_accuracy"]) > 0


@pytest.mark.slow
def test_frozen_probe_cross_validation_end_to_end(tmp_path, lite0_cache, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(lite0_cache))
    out = tmp_path / "cv.json"
    argv = ["--data", str(SAMPLES), "--scheme", "contiguous", "--folds", "2", "--embargo", "1",
            "--recipe", "frozen-probe", "--image-size", "64", "--work", str(tmp_path / "work"), "--out", str(out)]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    pooled = result["pooled_out_of_fold"]
    assert pooled["n_images"] == len(result["predictions"]["files"]) > 0
    assert 0.0 <= pooled["ci95"]["balanced_accuracy"][0] <= pooled["ci95"]["balanced_accuracy"][1] <= 1.0
    assert result["scheme"] == "contiguous" and result["embargo"] == 1 and result["git_commit"]
    assert [f["fold"] for f in result["per_fold"]] == [0, 1]
    # a second call with --resume reuses the finished folds
    assert main(argv + ["--resume"]) == 0
    assert json.loads(out.read_text())["pooled_out_of_fold"]["balanced_accuracy"] == pooled["balanced_accuracy"]
    # Soft voting of results on the same folds: a recipe with itself scores as itself; with two
    # copies of an oracle listed in another order, every image is right (the files are aligned).
    probs = np.asarray(result["predictions"]["probabilities"])
    assert probs.shape == (pooled["n_images"], len(CLASS_FOLDERS))
    both = tmp_path / "both.json"
    assert main(["--combine", str(out), str(out), "--out", str(both)]) == 0
    combined = json.loads(both.read_text())
    assert combined["pooled_out_of_fold"]["balanced_accuracy"] == pytest.approx(pooled["balanced_accuracy"])
    assert combined["combined_from"] == [str(out), str(out)]
    assert combined["recipe"] == "frozen-probe (64 px) + frozen-probe (64 px)"  # each member's settings named
    files, labels = result["predictions"]["files"], result["predictions"]["labels"]
    order = list(reversed(range(len(files))))
    oracle = dict(result, predictions={"files": [files[i] for i in order], "labels": [labels[i] for i in order],
                                       "probabilities": np.eye(len(CLASS_FOLDERS))[[labels[i] for i in order]].tolist()})
    (tmp_path / "oracle.json").write_text(json.dumps(oracle))
    oracle_path = str(tmp_path / "oracle.json")
    assert main(["--combine", str(out), oracle_path, oracle_path, "--out", str(both)]) == 0
    assert json.loads(both.read_text())["pooled_out_of_fold"]["balanced_accuracy"] == 1.0
    other = dict(result, embargo=3)
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["--combine", str(out), str(tmp_path / "other.json"), "--out", str(both)]) == 2
    assert main(["--combine", str(out), str(tmp_path / "missing.json"), "--out", str(both)]) == 2


def test_test_time_settings_predict_into_their_own_file_and_not_for_the_probe(tmp_path):
    from core.crossval import TestCopy, oof_name

    names = {oof_name(v, c) for v in (1, 8) for c in TestCopy}
    assert len(names) == 4 and oof_name(1, TestCopy.AS_CAPTURED) == "oof.json"
    assert main(["--data", str(SAMPLES), "--folds", "2", "--recipe", "frozen-probe", "--views", "8",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_probe_inputs_whole_field_neutral_copy_or_white_cells():
    from core.audit import NEUTRAL
    from core.crossval import ProbeInput, _probe_views
    from core.imageio import read_image

    rgb = read_image(SAMPLES / "Original" / "Pro" / "WBC-Malignant-Pro-041.jpg")
    whole, = _probe_views(rgb, ProbeInput.IMAGE, 96)
    neutral, = _probe_views(rgb, ProbeInput.NEUTRAL, 96)
    cells = _probe_views(rgb, ProbeInput.CELLS, 96)
    assert whole.shape == neutral.shape == (96, 96, 3) and not np.array_equal(whole, neutral)
    assert (np.abs(neutral.astype(int) - NEUTRAL).sum(axis=2) < 6).mean() > 0.2  # the slide is grey
    assert 1 <= len(cells) <= 3 and all(c.shape == (96, 96, 3) for c in cells)
    assert not any(np.array_equal(c, neutral) for c in cells)  # crops, not the field
    stained = _probe_views(rgb, ProbeInput.CELLS_REINHARD, 96)
    assert len(stained) == len(cells) and not np.array_equal(stained[0], cells[0])  # same cells, recoloured
    pooled = _probe_views(rgb, ProbeInput.CELLS_MEANMAX, 96)  # more cells, the largest first, as above
    assert len(cells) <= len(pooled) <= 6 and np.array_equal(pooled[0], cells[0])
    blank = np.full((224, 224, 3), 240, np.uint8)  # no white cell: described by its neutral copy
    assert len(_probe_views(blank, ProbeInput.CELLS, 96)) == 1


def test_views_are_pooled_by_mean_or_by_mean_and_max():
    from core.crossval import ProbeInput, pool_views

    views = np.array([[0.0, 4.0], [2.0, 0.0]])
    assert pool_views(views, ProbeInput.CELLS).tolist() == [1.0, 2.0]
    assert pool_views(views, ProbeInput.CELLS_MEANMAX).tolist() == [1.0, 2.0, 2.0, 4.0]
    assert pool_views(views[:1], ProbeInput.CELLS_MEANMAX).tolist() == [0.0, 4.0, 0.0, 4.0]
    with pytest.raises(ValueError):
        pool_views(np.zeros((0, 2)), ProbeInput.CELLS)


def test_probe_input_is_for_the_probe_only(tmp_path):
    assert main(["--data", str(SAMPLES), "--folds", "2", "--recipe", "tl-two-stage", "--probe-input", "cells",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert not (tmp_path / "x.json").exists()


def test_shortcut_audit_reports_every_feature_group_under_both_schemes(tmp_path):
    from core.audit import ALL_GROUPS, FEATURE_GROUPS, main as audit_main, neutralise, simple_features
    from core.imageio import read_image

    out = tmp_path / "audit.json"
    assert audit_main(["--data", str(SAMPLES), "--folds", "2", "--embargo", "1", "--model", "none",
                       "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for scheme in ("contiguous, embargo 1", "random"):
        groups = result["feature_audit"][scheme]
        assert set(groups) == {*FEATURE_GROUPS, ALL_GROUPS}
        assert all(0.0 <= g["balanced_accuracy"] <= 1.0 and g["n_images"] == 20 for g in groups.values())
    sizes = result["red_cell_diameter_px_by_class"]
    assert set(sizes) == set(CLASS_FOLDERS) and all(10 < s["median"] < 30 for s in sizes.values())
    # magnification: a 1.5x zoom of a field measures its red cells about 1.5 times larger
    field = read_image(SAMPLES / "Original" / "Benign" / "WBC-Benign-288.jpg")
    size = simple_features(field)["red-cell size"]
    zoomed = cv2.resize(field, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_CUBIC)[56:280, 56:280]
    zoomed_size = simple_features(zoomed)["red-cell size"]
    assert size[1] == zoomed_size[1] == 0.0 and 1.25 < zoomed_size[0] / size[0] < 1.75
    # the masked copy keeps the stained cells and greys out the slide and the scale-bar corner
    rgb = read_image(SAMPLES / "Original" / "Benign" / "WBC-Benign-126.jpg")
    masked = neutralise(rgb)
    assert masked.shape == (224, 224, 3) and (masked[-10:, -10:] == 225).all()
    assert 0.05 < (masked != rgb).any(axis=2).mean() < 0.95
