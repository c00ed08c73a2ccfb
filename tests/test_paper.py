"""Tests for the transcription of the paper's results and the loader in core/paper.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from core import paper  # noqa: E402
from core.metrics import matrix_metrics  # noqa: E402
from core.labels import CLASS_FOLDERS  # noqa: E402

CLASSES = ["Benign", "Early", "Pre", "Pro"]
CNNS = {"vgg19", "inceptionv3", "mobilenetv2", "xception", "densenet201", "seresnet152"}


@pytest.fixture(scope="module")
def raw() -> dict:
    return json.loads(paper.PAPER_RESULTS_PATH.read_text(encoding="utf-8"))


def test_json_path_is_next_to_package():
    assert paper.PAPER_RESULTS_PATH == REPO_ROOT / "benchmarks" / "paper" / "paper_results.json"
    assert paper.PAPER_RESULTS_PATH.is_file()


def test_class_order_matches_labels(raw):
    assert raw["classes"] == CLASSES == list(CLASS_FOLDERS)
    assert list(raw["paper_class_labels"]) == CLASSES


def test_accuracy_tables_complete(raw):
    rows = raw["accuracy_tables"]
    assert len(rows) == 12
    base = [r for r in rows if r["mode"] == "baseline"]
    tl = [r for r in rows if r["mode"] == "tl"]
    assert {r["model"] for r in base} == CNNS and len(base) == 6
    assert {r["model"] for r in tl} == CNNS and len(tl) == 6
    assert {r["source"] for r in base} == {"Table 3"}
    assert {r["source"] for r in tl} == {"Table 5"}
    for r in rows:
        assert r["paper_label"]
        for k in ("training_accuracy_pct", "model_accuracy_pct"):
            assert isinstance(r[k], int) and 0 <= r[k] <= 100


def test_per_class_tables_complete_and_ordered(raw):
    tables = raw["per_class_tables"]
    assert len(tables) == 13
    keys = {(t["model"], t["mode"]) for t in tables}
    assert len(keys) == 13
    assert {m for m, mode in keys if mode == "baseline"} == CNNS
    assert {m for m, mode in keys if mode == "tl"} == CNNS
    assert ("dex", "ensemble") in keys
    sources = {"baseline": "Table 4", "tl": "Table 6", "ensemble": "Table 7"}
    for t in tables:
        assert t["source"] == sources[t["mode"]]
        assert t["columns"] == CLASSES
        for k in ("precision_pct", "recall_pct", "f1_pct"):
            assert len(t[k]) == 4 and all(isinstance(v, int) and 0 <= v <= 100 for v in t[k])
        assert len(t["support"]) == 4 and all(isinstance(v, int) and v > 0 for v in t["support"])
        assert sum(t["support"]) == 896


def test_matrices_complete_and_well_formed(raw):
    mats = raw["confusion_matrices"]
    assert len(mats) == 13
    keys = {(m["model"], m["mode"]) for m in mats}
    assert len(keys) == 13
    assert {m for m, mode in keys if mode == "baseline"} == CNNS
    assert {m for m, mode in keys if mode == "tl"} == CNNS
    assert ("dex", "ensemble") in keys
    expected_sources = {f"Figure 4 ({c})" for c in "ABCDEF"} | {f"Figure 5 ({c})" for c in "ABCDEF"} | {"Figure 6"}
    assert {m["source"] for m in mats} == expected_sources
    for m in mats:
        assert m["orientation"] == "rows=predicted, columns=true"
        assert m["labels"] == CLASSES
        arr = m["matrix_as_published"]
        assert len(arr) == 4 and all(len(row) == 4 for row in arr)
        assert all(type(v) is int and v >= 0 for row in arr for v in row)


def test_paper_labels(raw):
    by_source = {m["source"]: m for m in raw["confusion_matrices"]}
    assert by_source["Figure 5 (D)"]["model"] == "seresnet152"
    assert by_source["Figure 5 (D)"]["paper_label"] == "Resnet152"
    t3 = {r["model"]: r for r in raw["accuracy_tables"] if r["source"] == "Table 3"}
    assert t3["seresnet152"]["paper_label"] == "SecrensNet152"


def test_orientation_column_sums_are_supports(raw):
    supports = {(t["model"], t["mode"]): t["support"] for t in raw["per_class_tables"]}
    col_ok = row_ok = 0
    for m in raw["confusion_matrices"]:
        pub = np.array(m["matrix_as_published"])
        stated = supports[(m["model"], m["mode"])]
        col_ok += pub.sum(axis=0).tolist() == stated
        row_ok += pub.sum(axis=1).tolist() == stated
    assert col_ok >= 11  # all but Figure 4 (C) and 4 (E), see the notes
    assert row_ok == 0

    vgg = np.array(next(m for m in raw["confusion_matrices"] if m["source"] == "Figure 4 (A)")["matrix_as_published"])
    assert vgg.sum(axis=0).tolist() == supports[("vgg19", "baseline")] == [136, 270, 270, 220]
    assert round(100 * vgg[0, 0] / vgg[:, 0].sum()) == 97
    dex = np.array(next(m for m in raw["confusion_matrices"] if m["source"] == "Figure 6")["matrix_as_published"])
    assert dex.sum(axis=0).tolist() == supports[("dex", "ensemble")] == [141, 275, 263, 217]
    assert int(100 * dex[0, 0] / dex[:, 0].sum()) == 78


def test_confusion_matrices_are_transposed_to_rows_true(raw):
    mats = paper.confusion_matrices()
    assert len(mats) == 13
    published = {m["source"]: np.array(m["matrix_as_published"]) for m in raw["confusion_matrices"]}
    supports = {(t["model"], t["mode"]): t["support"] for t in raw["per_class_tables"]}
    for pm in mats:
        assert isinstance(pm, paper.PaperMatrix)
        assert pm.matrix.shape == (4, 4) and np.issubdtype(pm.matrix.dtype, np.integer)
        np.testing.assert_array_equal(pm.matrix, published[pm.source].T)
        np.testing.assert_array_equal(pm.matrix_as_published, published[pm.source])
    dex = _dex_matrix()
    assert dex.sum(axis=1).tolist() == supports[("dex", "ensemble")]  # rows = true
    assert dex[0].tolist() == [111, 30, 0, 0]


def _dex_matrix() -> np.ndarray:
    return next(m.matrix for m in paper.confusion_matrices() if (m.model, m.mode) == ("dex", "ensemble"))


def test_published_to_true_by_predicted():
    pub = [[1, 2, 0, 0], [0, 3, 0, 0], [0, 0, 4, 0], [5, 0, 0, 6]]
    out = paper.published_to_true_by_predicted(pub)
    assert out[0, 3] == 5 and out[1, 0] == 2
    with pytest.raises(ValueError):
        paper.published_to_true_by_predicted([[1, 2], [3, 4]])


def test_dex_accuracy_from_matrix():
    acc = paper.accuracy_table()
    row = acc[(acc["model"] == "dex") & (acc["mode"] == "ensemble")].iloc[0]
    assert row["n_correct_in_matrix"] == 863 and row["n_images_in_matrix"] == 896
    assert row["accuracy_from_matrix"] == pytest.approx(100 * 863 / 896)
    assert row["accuracy_stated"] == 99 and row["source"] == "Abstract"
    assert np.isnan(row["training_accuracy_stated"])
    met = matrix_metrics(_dex_matrix())
    assert Fraction(met["n_correct"], met["n"]) == Fraction(863, 896)


def test_accuracy_table_shape_and_values():
    acc = paper.accuracy_table()
    expected_cols = {"model", "mode", "source", "training_accuracy_stated", "accuracy_stated",
                     "accuracy_from_matrix", "n_images_in_matrix"}
    assert expected_cols <= set(acc.columns)
    assert len(acc) == 13
    assert acc["accuracy_from_matrix"].notna().all()
    vgg = acc[(acc["model"] == "vgg19") & (acc["mode"] == "baseline")].iloc[0]
    assert (vgg["training_accuracy_stated"], vgg["accuracy_stated"]) == (99, 89)
    assert vgg["accuracy_from_matrix"] == pytest.approx(100 * 885 / 896)
    xc = acc[(acc["model"] == "xception") & (acc["mode"] == "baseline")].iloc[0]
    assert xc["n_images_in_matrix"] == 898  # as published (Figure 4 (C))


def test_per_class_table():
    df = paper.per_class_table()
    assert len(df) == 52
    for (model, mode), g in df.groupby(["model", "mode"], sort=False):
        assert g["class"].tolist() == CLASSES, (model, mode)
    assert df["specificity_from_matrix"].between(0, 100).all()
    dex = df[df["model"] == "dex"].set_index("class")
    assert dex.loc["Benign", "recall_stated"] == 78
    assert dex.loc["Benign", "recall_from_matrix"] == pytest.approx(100 * 111 / 141)
    assert (dex["support_stated"] == dex["support_from_matrix"]).all()
    # where the table and its figure agree, recomputed recall is within 1 point of the stated one
    vgg = df[(df["model"] == "vgg19") & (df["mode"] == "baseline")]
    assert (abs(vgg["recall_from_matrix"] - vgg["recall_stated"]) < 1).all()


def test_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    for pm in paper.confusion_matrices():
        cm = pm.matrix
        y_true = np.repeat(np.repeat(np.arange(4), 4), cm.ravel())
        y_pred = np.repeat(np.tile(np.arange(4), 4), cm.ravel())
        np.testing.assert_array_equal(confusion_matrix(y_true, y_pred, labels=range(4)), cm)
        met = matrix_metrics(cm)
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(4), average=None, zero_division=0)
        np.testing.assert_allclose(met["precision"], p)
        np.testing.assert_allclose(met["recall"], r)
        np.testing.assert_allclose(met["f1"], f)
        np.testing.assert_array_equal(met["support"], s)
        assert met["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
        for k in range(4):  # specificity of class k = recall of "not k" in the one-vs-rest problem
            spec = precision_recall_fscore_support(
                y_true != k, y_pred != k, labels=[True], average=None, zero_division=0)[1][0]
            assert met["specificity"][k] == pytest.approx(spec)


def test_protocol():
    p = paper.PAPER_PROTOCOL
    assert p["input_size"] == (132, 132)
    assert p["train_test_split"] == "70:30"
    assert (p["learning_rate"], p["beta_1"], p["beta_2"], p["epsilon"]) == (1e-4, 0.9, 0.999, 1e-7)
    assert (p["batch_size"], p["max_epochs"], p["early_stopping_patience"]) == (17, 25, 10)
    assert p["loss"] == "categorical_crossentropy"
    assert p["seconds_per_epoch_colab"] == {"mobilenetv2": 20, "densenet201": 14, "inceptionv3": 14}
    assert all(k in p["sources"] for k in p if k != "sources")


def test_notes(raw):
    notes = paper.notes()
    assert notes == raw["notes"] and len(notes) >= 5
    assert all(isinstance(n, str) and n and "\n" not in n for n in notes)


def test_loader_from_other_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = paper.load_paper_results()
    assert len(data["confusion_matrices"]) == 13
    assert data == paper.load_paper_results(paper.PAPER_RESULTS_PATH)
    code = "from core import paper; print(len(paper.confusion_matrices()), len(paper.accuracy_table()))"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["13", "13"]


def test_load_returns_fresh_copy():
    a = paper.load_paper_results()
    a["confusion_matrices"].clear()
    assert len(paper.load_paper_results()["confusion_matrices"]) == 13
