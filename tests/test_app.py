"""The Streamlit app, page by page, with `streamlit.testing.v1.AppTest` and the tiny fixture model.

Every page runs in this process; the registry is pinned to the fixture's weights folder (not
./weights or models/weights), so the tests see exactly one model whatever is installed, and the
Benchmark page reads a temporary results folder built here with the real metric functions.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples" / "Original"
SAMPLE_A = SAMPLES / "Pre" / "WBC-Malignant-Pre-241.jpg"
SAMPLE_B = SAMPLES / "Benign" / "WBC-Benign-126.jpg"
TIMEOUT = 240  # seconds per script run: model load + Grad-CAM on a busy 2-core machine
BAD_BYTES = b"this is a text file pretending to be a JPEG\n"

from core.labels import CLASS_FOLDERS, CLASS_NAMES  # noqa: E402
from core.metrics import row_normalise  # noqa: E402


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


def fake_evaluation(model: str = "mobilenetv2-baseline", n: int = 40, seed: int = 0) -> dict:
    """An evaluation record in core.evaluate's format, computed with the real metric functions."""
    from core.metrics import classification_metrics, reliability_curve

    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    logits = rng.normal(size=(n, 4)) + 3.0 * np.eye(4)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    rec = classification_metrics(labels, probs)
    rec.update(
        model=model, display=model, split="test",
        split_description="test part of the split manifest (image-level split; no patient IDs)",
        calibration={"ece_before": rec["ece"], "ece_after": rec["ece"] / 2, "temperature": 1.3,
                     "threshold": 0.7, "test_uncertain_fraction": 0.1, "test_accuracy_when_confident": 0.95,
                     "reliability_before": reliability_curve(probs, labels),
                     "reliability_after": reliability_curve(probs, labels)},
        robustness={"grayscale_accuracy": 0.5, "colour_jitter_accuracy": 0.8, "colour_jitter": "hue +-15"},
        weights={model: f"/weights/{model}.weights.h5"}, device="CPU: test", command="python -m core.evaluate …",
        evaluated="2026-01-01T00:00:00",
    )
    return rec


@pytest.fixture(scope="session")
def results_folder(tmp_path_factory, tiny_run, samples_manifest) -> Path:
    """benchmarks/results look-alike: one test evaluation, one training run, one speed file, the
    default's choice (core.select over the tiny run), and one broken file the page must skip with a warning."""
    from core.select import main as select_main

    d = tmp_path_factory.mktemp("results")
    weights = tiny_run / "mobilenetv2-baseline.weights.h5"
    assert select_main(["--data", str(ROOT / "samples"), "--manifest", str(samples_manifest), "--member", f"tiny={weights}",
                        "--out", str(d / "val" / "selection.json")]) == 0
    (d / "mobilenetv2-baseline.test.json").write_text(json.dumps(fake_evaluation()))
    (d / "broken.test.json").write_text("{not json")
    run = d / "runs" / "mobilenetv2-baseline"
    run.mkdir(parents=True)
    for f in ("history.csv", "run.json"):
        shutil.copy(tiny_run / f, run / f)
    (d / "bench_cpu.json").write_text(json.dumps({"device": "CPU: test", "models": [
        {"model": "mobilenetv2-baseline", "images_per_second": 12.5, "batch": 32}]}))
    write_cross_validation(d / "cv")
    return d


def write_cross_validation(folder: Path) -> None:
    """Two cross-validation files (random 96% and contiguous 80% correct) through the real pooled
    metrics, and the real audit over the samples (no model)."""
    from core.audit import main as audit_main
    from core.crossval import ANCHOR, pooled_metrics

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    files = [f"WBC-x-{i % 50 + 1:03d}.jpg" for i in range(200)]
    for scheme, right in (("random", 0.96), ("contiguous", 0.80)):
        pred = np.where(rng.random(200) < right, labels, (labels + 1) % 4)
        probs = np.eye(4)[pred]
        (folder / f"{scheme}-tl-two-stage.json").write_text(json.dumps({
            "scheme": scheme, "folds": 5, "embargo": 37 if scheme == "contiguous" else 0, "recipe": "tl-two-stage",
            "model": "efficientnet_lite0-tl", "n_images_in_copy": 200, "anchor": ANCHOR, "device": "CPU: test",
            "git_commit": "abc", "command": f"python -m core.crossval --scheme {scheme}",
            "pooled_out_of_fold": pooled_metrics(files, labels, probs, block=10)}))
    assert audit_main(["--data", str(ROOT / "samples"), "--folds", "2", "--embargo", "1", "--model", "none",
                       "--out", str(folder / "audit.json")]) == 0


@pytest.fixture()
def app_env(tiny_run, results_folder, monkeypatch):
    """Weights: only the tiny run. Results: the temporary folder."""
    import core.inference
    import models.registry

    monkeypatch.setenv("LEUKOSCOPE_WEIGHTS", str(tiny_run))
    monkeypatch.setenv("LEUKOSCOPE_RESULTS", str(results_folder))
    monkeypatch.setattr(models.registry, "weights_dirs", lambda: [Path(tiny_run)])
    monkeypatch.setattr(core.inference, "weights_dirs", lambda: [Path(tiny_run)])
    return tiny_run


def app(page: str):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(ROOT / page), default_timeout=TIMEOUT)


def texts(at) -> str:
    """All the text a user can read on the page (markdown, captions, alerts, titles, metrics)."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "success", "warning", "error", "info",
                 "text"):
        parts += [str(e.value) for e in at.get(kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    return "\n".join(parts)


def not_a_smear_png() -> bytes:
    """A smooth green picture (no stain, no cells): the smear check must refuse it."""
    y, x = np.mgrid[0:160, 0:160]
    rgb = np.stack([20 + x // 4, 120 + y // 2, 30 + (x + y) // 8], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def captions_of_images(at) -> list[str]:
    return [c for im in at.image for c in im.captions]


def no_exceptions(at) -> None:
    assert not at.exception, [e.value for e in at.exception]


@pytest.fixture()
def media(monkeypatch) -> list:
    """AppTest keeps download-button data in a MemoryMediaFileStorage made per run; record them."""
    import streamlit.testing.v1.app_test as app_test_module

    stores = []
    base = app_test_module.MemoryMediaFileStorage

    class Recording(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            stores.append(self)

    monkeypatch.setattr(app_test_module, "MemoryMediaFileStorage", Recording)
    return stores


def download_bytes(media: list, button) -> bytes:
    """The content behind an st.download_button of the latest run."""
    return media[-1].get_file(button.proto.url.rsplit("/", 1)[-1]).content


# --------------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------------


def test_front_door_lists_the_zoo(app_env):
    from models.registry import REGISTRY

    at = app("streamlit_app.py").run()
    no_exceptions(at)
    zoo = at.dataframe[0].value
    assert set(zoo["model"]) == set(REGISTRY)
    avail = zoo.set_index("model")["available here"]
    assert avail["mobilenetv2-baseline"] == "yes"
    assert avail["vgg19-tl"] == "no"
    assert "python -m core.train" in zoo.set_index("model").loc["vgg19-tl", "how to get it"]
    page = texts(at)
    for needle in ("not a diagnostic device", "GPU visible", "LEUKOSCOPE_DATA", "Sultana", "Aria M.",
                   "no patient IDs"):
        assert needle in page, needle


def test_diagnose_upload_sample_and_bad_file(app_env):
    at = app("app_pages/1_Diagnose.py").run()
    no_exceptions(at)
    assert "Upload one or more smear images" in texts(at)
    at.file_uploader(key="dx_upload").set_value([
        ("smear.jpg", SAMPLE_A.read_bytes(), "image/jpeg"),
        ("notes.jpg", BAD_BYTES, "image/jpeg"),
        ("leaf.png", not_a_smear_png(), "image/png"),
    ]).run()
    no_exceptions(at)
    page = texts(at)
    verdicts = [e.value for e in (*at.success, *at.warning)]
    assert len(verdicts) == 1 and any(n in verdicts[0] for n in CLASS_NAMES), verdicts
    assert "Status: **ok**" in page or "Status: **uncertain**" in page
    if "Status: **uncertain**" in page:
        assert "review by a hematologist" in verdicts[0]
    caps = captions_of_images(at)
    assert any(c.startswith("white cells found: ") and not c.startswith("white cells found: 0") for c in caps)
    assert any(c.startswith("nuclei mask") for c in caps)
    assert any(c.startswith("Grad-CAM:") for c in caps)
    # The text file gets a plain message; the green picture is refused as not a smear. Neither
    # gets a diagnosis or a heat map.
    errors = [e.value for e in at.error]
    assert len(errors) == 2 and errors[0].startswith("No diagnosis: Not an image"), errors
    assert errors[1].startswith("This does not look like a peripheral blood smear"), errors
    assert "Traceback" not in page
    assert len([c for c in caps if c.startswith("Grad-CAM")]) == 1
    # Switching to Grad-CAM++ and another target class redraws only the heat map.
    at.radio(key="dx_method").set_value("Grad-CAM++")
    target = next(sb for sb in at.selectbox if sb.key and sb.key.endswith("_target"))
    other = next(n for n in CLASS_NAMES if n != target.value)
    target.set_value(other)
    at.run()
    no_exceptions(at)
    assert f"Grad-CAM++: {other}" in captions_of_images(at)


def test_diagnose_with_eight_views_is_labelled(app_env):
    at = app("app_pages/1_Diagnose.py").run()
    at.selectbox(key="dx_sample").set_value("Early/WBC-Malignant-Early-457.jpg")
    at.run()
    no_exceptions(at)
    assert "average of 8 rotations/flips" not in texts(at)
    at.checkbox(key="dx_views").check().run()
    no_exceptions(at)
    page = texts(at)
    assert "average of 8 rotations/flips" in page
    assert "Status: **ok**" in page or "Status: **uncertain**" in page


def test_diagnose_ensemble_shows_each_member(app_env, monkeypatch):
    """An ensemble's page shows every member's probabilities and heat map. The fixture has one
    trained network, so the test ensemble is two copies of it (soft voting of equal members)."""
    import models.registry
    from models.registry import ModelSpec

    spec = ModelSpec("mdx", "ensemble", "ensemble", "MDX (test: 2 x MobileNetV2)",
                     members=("mobilenetv2-baseline", "mobilenetv2-baseline"))
    monkeypatch.setitem(models.registry.REGISTRY, "mdx", spec)
    at = app("app_pages/1_Diagnose.py").run()
    at.selectbox(key="dx_model").set_value("mdx")
    at.selectbox(key="dx_sample").set_value("Early/WBC-Malignant-Early-457.jpg")
    at.run()
    no_exceptions(at)
    assert "MDX (test: 2 x MobileNetV2)" in texts(at)
    assert len(at.tabs) == 2
    assert len([c for c in captions_of_images(at) if c.startswith("Grad-CAM:")]) == 2
    assert "dataset label: Early Pre-B" in texts(at)


def test_segmentation_page(app_env):
    at = app("app_pages/2_Segmentation.py").run()
    no_exceptions(at)

    def metric(label: str) -> str:
        return next(m.value for m in at.metric if m.label == label)

    caps = captions_of_images(at)
    # White cells (core.cells): outlined, counted and measured, whatever the HSV sliders say.
    assert "white-cell mask (nuclei)" in caps
    white_caption = next(c for c in caps if c.startswith("white cells:"))
    white = at.dataframe[0].value
    assert list(white.columns[:3]) == ["cell", "diameter (px)", "area (px)"]
    n_white = int(metric("White cells"))
    assert n_white == len(white) == int(white_caption.split(":")[1]) and n_white >= 1
    assert metric("Median diameter").endswith(" px")
    # The HSV research tools, beside the dataset's own segmentation of the shipped sample.
    assert "HSV mask" in caps
    assert any(c.startswith("HSV overlay:") for c in caps)
    assert "the dataset's own Segmented image" in caps
    comps = at.dataframe[1].value
    assert list(comps.columns[:6]) == ["component", "area (px)", "x", "y", "width", "height"]
    count = int(metric("HSV components"))
    assert count == len(comps) and count >= 1
    at.slider(key="seg_s").set_value((250, 255)).run()  # nearly nothing is that saturated
    no_exceptions(at)
    assert int(metric("HSV components")) < count
    assert int(metric("White cells")) == n_white  # the sliders do not touch the white cells
    at.button(key="seg_reset").click().run()
    no_exceptions(at)
    assert int(metric("HSV components")) == count


def test_compare_models_one_card_per_model(app_env):
    from models.registry import available_models

    at = app("app_pages/3_Compare_models.py").run()
    no_exceptions(at)
    rows = at.session_state["cmp_results"]
    assert [r["model"] for r in rows] == available_models() == ["mobilenetv2-baseline"]
    assert all(r["status"] in ("ok", "uncertain") and r["label"] in CLASS_NAMES for r in rows)
    assert any(c.startswith("Grad-CAM") for c in captions_of_images(at))
    assert at.dataframe[0].value.shape[0] == len(rows)


def test_benchmark_page(app_env, media):
    at = app("app_pages/4_Benchmark.py").run()
    no_exceptions(at)
    page = texts(at)
    assert "863/896 = 96.3%" in page  # DEX: stated 99 %, its own matrix says 96.3 %
    assert "not reproduced here" in page
    assert "broken.test.json" in page  # the unreadable file is named, not fatal
    comparison = at.dataframe[0].value
    dex = comparison.set_index("model").loc["dex"]
    assert round(dex["accuracy_from_matrix"], 1) == 96.3 and dex["status"] == "not reproduced here"
    assert "core.evaluate" in dex["how_to_reproduce"]
    ours = comparison.set_index("model").loc["mobilenetv2-baseline"]
    # The fixture weights were trained 1 epoch at batch 8: not the paper's protocol, and the page says so.
    assert ours["status"].startswith("ours, protocol differs") and ours["our_n_images"] == 40
    assert "ImageNet" in comparison.set_index("model").loc["vgg19-tl", "how_to_reproduce"]
    assert "No speed measurements" not in page  # bench_cpu.json is shown
    assert "Rule** (validation part only" in page  # how the default was chosen
    choice = next(df.value for df in at.dataframe if "chosen" in df.value)
    assert list(choice["chosen"]) == ["✔"] and list(choice["members"]) == ["tiny"]
    assert len(at.download_button) >= 4
    csv_text = download_bytes(media, at.download_button[0]).decode()
    assert csv_text.splitlines()[0].startswith("paper_label,model")
    at.multiselect(key="bm_mode").set_value(["tl"]).run()
    no_exceptions(at)
    assert set(at.dataframe[0].value["mode"]) == {"tl"}
    # The session-aware figures sit beside the paper-style ones, with the anchor and the audit.
    assert "New patients (session-aware)" in page
    cv = next(df.value for df in at.dataframe if "scheme" in df.value)
    assert set(cv["scheme"]) == {"random", "contiguous"}
    assert "0.968" in page and "shrirudragoud" in page
    assert "tl-two-stage**: " in page and "on session-aware folds" in page
    assert "Shortcut audit" in page
    audit = next(df.value for df in at.dataframe if "features" in df.value)
    assert "background colour" in set(audit["features"])


def test_batch_two_samples_and_a_bad_file(app_env, media):
    at = app("app_pages/5_Batch.py").run()
    no_exceptions(at)
    at.file_uploader(key="batch_upload").set_value([
        ("a.jpg", SAMPLE_A.read_bytes(), "image/jpeg"),
        ("b.jpg", SAMPLE_B.read_bytes(), "image/jpeg"),
        ("bad.jpg", BAD_BYTES, "image/jpeg"),
    ]).run()
    no_exceptions(at)
    rows = list(csv.DictReader(io.StringIO(at.session_state["batch_csv"])))
    assert [r["file"] for r in rows] == ["a.jpg", "b.jpg", "bad.jpg"]
    # every row says which model and weights produced it, with which app version and when
    assert {r["model"] for r in rows} == {"mobilenetv2-baseline"} and rows[0]["app_version"]
    assert rows[0]["weights_sha256"].startswith("mobilenetv2-baseline=") and rows[0]["analysed_at"].endswith("Z")
    assert rows[2]["status"] == "error" and rows[2]["message"].startswith("Not an image")
    assert all(r["status"] in ("ok", "uncertain") and r["label"] in CLASS_NAMES for r in rows[:2])
    assert download_bytes(media, at.download_button(key="batch_download")).decode() == at.session_state["batch_csv"]
    assert at.dataframe[0].value.shape[0] == 3
    at.checkbox(key="batch_thumbs").check().run()
    no_exceptions(at)
    assert len(at.image) == 2


# --------------------------------------------------------------------------------------------
# app/benchmark_data.py
# --------------------------------------------------------------------------------------------


def test_benchmark_data_load_results_skips_bad_files(tmp_path):
    from app import benchmark_data as bd

    (tmp_path / "a.test.json").write_text(json.dumps(fake_evaluation("densenet121-baseline")))
    (tmp_path / "b.test.json").write_text("[1, 2]")
    (tmp_path / "c.test.json").write_text(json.dumps({"model": "x"}))
    (tmp_path / "d.all.json").write_text(json.dumps(fake_evaluation()))  # not a test split: ignored
    results, problems = bd.load_results(tmp_path)
    assert [r["model"] for r in results] == ["densenet121-baseline"]
    assert len(problems) == 2 and problems[0].startswith("b.test.json")
    assert bd.load_results(tmp_path / "missing") == ([], [])


def test_benchmark_data_tables():
    from core import paper

    from app import benchmark_data as bd

    rec = fake_evaluation("xception-tl", n=40)
    acc = bd.our_accuracy_table([rec])
    row = acc.iloc[0]
    assert (row["family"], row["mode"], row["n_images"]) == ("xception", "tl", 40)
    assert row["accuracy"] == pytest.approx(100 * rec["accuracy"])
    assert row["weights"] == "xception-tl: /weights/xception-tl.weights.h5"
    pc = bd.our_per_class_table([rec])
    assert list(pc["class"]) == list(CLASS_FOLDERS) and pc["support"].sum() == 40
    assert pc.iloc[0]["recall"] == pytest.approx(100 * rec["per_class"]["Benign"]["recall"])

    cmp_ = bd.comparison_table(paper.accuracy_table(), acc, differences={})
    assert len(cmp_) == 13
    by = cmp_.set_index("model")
    # No training record with the evaluation and no weights here: never claimed as a reproduction.
    assert by.loc["xception-tl", "status"] == "ours, protocol not recorded"
    assert by.loc["xception-tl", "our_accuracy"] == pytest.approx(row["accuracy"])
    assert by.loc["dex", "matrix"] == "863/896 (Figure 6)"
    assert by.loc["dex", "status"] == bd.NOT_REPRODUCED
    assert "--model dex" in by.loc["dex", "how_to_reproduce"]
    assert "ImageNet" in by.loc["vgg19-tl", "how_to_reproduce"]
    assert "ImageNet" not in by.loc["vgg19-baseline", "how_to_reproduce"]

    assert set(bd.filter_frame(cmp_, ["dex", "vgg19"], ["tl"])["model"]) == {"vgg19-tl"}
    assert len(bd.filter_frame(cmp_, [], None)) == 13
    assert bd.family_options(acc)[:7] == list(paper.MODEL_KEYS)
    assert bd.family_of("mdx") == "mdx" and bd.family_of("densenet201-tl") == "densenet201"

    # A paper-protocol evaluation takes the paper row; our own recipe's stands beside it; a gap of
    # more than 2 points carries the written explanation, or says that none is written yet.
    paper_run = {**fake_evaluation("xception-tl", n=40), "accuracy": 0.5,  # far below the paper's 90.5
                 "training": {"xception-tl": {"protocol": "paper", "device": "CPU (2 cores)"}}}
    own_run = {**rec, "training": {"xception-tl": {"protocol": "own recipe"}}}
    both = bd.our_accuracy_table([own_run, paper_run])
    assert list(both["protocol"]) == ["own recipe", "paper"] and list(both["trained_on"]) == ["", "CPU (2 cores)"]
    by = bd.comparison_table(paper.accuracy_table(), both, differences={"xception-tl": "Because."}).set_index("model")
    assert by.loc["xception-tl", "status"] == "reproduced" and by.loc["xception-tl", "our_protocol"] == "paper"
    assert by.loc["xception-tl", "our_recipe_accuracy"] == pytest.approx(100 * rec["accuracy"])
    assert by.loc["xception-tl", "trained_on"] == "CPU (2 cores)"
    assert by.loc["xception-tl", "difference"] == pytest.approx(50 - by.loc["xception-tl", "accuracy_from_matrix"])
    assert by.loc["xception-tl", "why_it_differs"] == "Because."
    unexplained = bd.comparison_table(paper.accuracy_table(), both, differences={}).set_index("model")
    assert "not yet explained" in unexplained.loc["xception-tl", "why_it_differs"]
    close = bd.comparison_table(paper.accuracy_table(), bd.our_accuracy_table([{**paper_run, "accuracy": 0.905}]),
                                differences={"xception-tl": "Because."}).set_index("model")
    assert close.loc["xception-tl", "why_it_differs"] == ""  # within 2 points: nothing to explain
    # InceptionV3: the paper states 90% while its matrix gives 98.3%; 97.8% is close to one only.
    inception = {**fake_evaluation("inceptionv3-baseline", n=40), "accuracy": 0.978,
                 "training": {"inceptionv3-baseline": {"protocol": "paper"}}}
    far_from_stated = bd.comparison_table(paper.accuracy_table(), bd.our_accuracy_table([inception]),
                                          differences={"inceptionv3-baseline": "Stated is the outlier."})
    row = far_from_stated.set_index("model").loc["inceptionv3-baseline"]
    assert abs(row["difference"]) < 2 and row["why_it_differs"] == "Stated is the outlier."
    # An older file without its members' training records: the shipped members' metas say how and where.
    from core.paper import Protocol

    assert bd.protocol_of({"model": "lite1-mobilenetv2"}) is Protocol.OWN
    assert "NVIDIA H200" in bd.trained_on({"model": "lite1-mobilenetv2"})
    # A lent GPU's result on a resized, re-encoded copy says so wherever its split is named.
    copy = {**inception, "manifest_derived_from": {"image_size": 132, "jpeg_quality": 80}}
    assert bd.our_accuracy_table([copy]).iloc[0]["images"] == "132 px JPEG q80 copy"
    assert bd.comparison_table(paper.accuracy_table(), bd.our_accuracy_table([copy]), differences={}) \
        .set_index("model").loc["inceptionv3-baseline", "our_split"] == "test (132 px JPEG q80 copy)"
    # The shipped sentences are written in English and Bangla; the page shows the reader's.
    shipped = bd.load_differences(lang="en")
    assert shipped and shipped == bd.load_differences(lang="xx")  # unknown language: English
    bangla = bd.load_differences(lang="bn")
    assert bangla.keys() == shipped.keys() and all(bangla[k] != shipped[k] for k in shipped)
    assert bd.comparison_table(paper.accuracy_table(), bd.our_accuracy_table([inception]), lang="bn") \
        .set_index("model").loc["inceptionv3-baseline", "why_it_differs"] == bangla["inceptionv3-baseline"]

    cm = bd.confusion_matrix_of(rec)
    assert cm.sum() == 40 and np.allclose(row_normalise(cm).sum(axis=1), 1.0)
    rel = bd.reliability_frame(rec)
    assert set(rel["stage"]) == {"before", "after"}
    assert rel[rel["stage"] == "before"]["count"].sum() == 40
    assert bd.reliability_frame({"model": "x"}).empty


def test_benchmark_data_runs_and_speed(tmp_path, tiny_run):
    from app import benchmark_data as bd

    assert bd.list_runs(tmp_path) == [] and bd.speed_table(tmp_path) is None
    run = tmp_path / "runs" / "mobilenetv2-baseline"
    run.mkdir(parents=True)
    shutil.copy(tiny_run / "history.csv", run)
    shutil.copy(tiny_run / "run.json", run)
    assert bd.list_runs(tmp_path) == ["mobilenetv2-baseline"]
    hist = bd.load_history(run)
    assert {"accuracy", "val_accuracy", "loss", "val_loss"} <= set(hist.columns)
    dev = bd.deviations_table(bd.load_run(run)).set_index("setting")
    assert dev.loc["batch size", "paper"] == "17" and dev.loc["batch size", "this run"] == "8"
    assert dev.loc["max epochs", "paper"] == "25" and dev.loc["max epochs", "this run"] == "1"
    assert bd.deviations_table({}).empty
    (tmp_path / "bench_x.json").write_text(json.dumps({"models": [{"model": "a", "ms": 1.5}, {"model": "b"}]}))
    (tmp_path / "bench_y.json").write_text("oops")
    speed = bd.speed_table(tmp_path)
    assert list(speed["model"]) == ["a", "b"] and set(speed["file"]) == {"bench_x.json"}
    assert bd.to_csv(pd.DataFrame({"a": [1]})) == b"a\n1\n"
    assert bd.default_choice(tmp_path) is None
    # Every column of the shipped session-aware and default-choice tables has a header in the reader's language.
    from app.common import COLUMN_LABELS

    shipped = ROOT / "benchmarks" / "results"
    assert set(bd.cv_table(bd.load_cv(shipped / "cv")).columns) <= set(COLUMN_LABELS)
    assert set(bd.default_choice(shipped)[1].columns) <= set(COLUMN_LABELS)
    # Test-time settings are part of a row's name, so two rows of one recipe stay apart.
    plain = {"recipe": "tl-session-robust", "test_time": {"views": 1, "copy": "as-captured"}}
    assert bd.cv_label(plain) == bd.cv_label({"recipe": "tl-session-robust"}) == "tl-session-robust"
    assert bd.cv_label({**plain, "test_time": {"views": 8, "copy": "neutral"}}) == (
        "tl-session-robust (8 views, neutral test copies)")
    probe = {"recipe": "frozen-probe", "probe": {"input": "cells", "image_size": 224}}
    assert bd.cv_label(probe) == "frozen-probe (features of the cells, 224 px)"
    assert bd.cv_label({**probe, "probe": {"input": "neutral", "image_size": 160}}) == (
        "frozen-probe (features of the neutral copy, 160 px)")
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "selection.json").write_text(json.dumps({"chosen": {}, "ensembles": [{"members": 3}]}))
    assert bd.default_choice(tmp_path) is None  # unreadable: the page says so instead of failing


# --------------------------------------------------------------------------------------------
# app/batch.py (zip handling, no model needed)
# --------------------------------------------------------------------------------------------


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_batch_zip_skips_folders_hidden_and_odd_names():
    from app.batch import plan_batch

    img = SAMPLE_A.read_bytes()
    data = _zip({"smears/": b"", "smears/a.jpg": img, "smears/.b.jpg": img, "__MACOSX/smears/._a.jpg": b"x",
                 "../evil.jpg": img, "notes.txt": b"hello", "smears/c.PNG": b"not png"})
    plan = plan_batch([("set.zip", data), ("loose.jpg", img)])
    assert [i.name for i in plan.items] == ["set.zip/smears/a.jpg", "set.zip/smears/c.PNG", "loose.jpg"]
    loaded = dict(plan.iter_inputs())
    assert loaded["set.zip/smears/a.jpg"] == img and loaded["loose.jpg"] == img
    assert "skipped" in plan.notes[0] and "hidden" in plan.notes[0] and "odd name" in plan.notes[0]


def test_batch_zip_refuses_bombs_and_bad_archives(monkeypatch):
    import app.batch as batch

    big = _zip({f"{i}.jpg": b"\0" * 100_000 for i in range(3)})  # 300 kB unpacked, ~1 kB packed
    monkeypatch.setattr(batch, "MAX_ZIP_TOTAL_BYTES", 200_000)
    plan = batch.plan_batch([("bomb.zip", big)])
    [(name, err)] = list(plan.iter_inputs())
    assert name == "bomb.zip" and "limit is 0 MB" not in str(err) and "unpack" in str(err)
    monkeypatch.setattr(batch, "MAX_ZIP_TOTAL_BYTES", 10**9)
    monkeypatch.setattr(batch, "MAX_ZIP_MEMBERS", 2)
    [(_, err)] = list(batch.plan_batch([("many.zip", big)]).iter_inputs())
    assert "3 entries" in str(err)
    [(_, err)] = list(batch.plan_batch([("bad.zip", b"PK\x03\x04 garbage")]).iter_inputs())
    assert "damaged or not a zip" in str(err)


def test_benchmark_labels_offline_transfer_learning_apart_from_the_paper():
    from app import benchmark_data as bd

    row = bd.our_accuracy_table([fake_evaluation("efficientnet_lite0-tl", n=40)]).iloc[0]
    assert "offline ImageNet transfer learning" in row["provenance"] and "not in the paper" in row["provenance"]
    assert bd.provenance_of("vgg19-tl") == "paper architecture, ImageNet transfer learning"
    lite = bd.reproduce_command("efficientnet_lite0-tl")
    assert "--recipe tl-two-stage" in lite and "internet" not in lite
    assert "internet" in bd.reproduce_command("vgg19-tl")


def test_case_review_sign_report_history_and_bangla(app_env, media, tmp_path, monkeypatch):
    """The hematologist's whole flow: create a case, upload three images, reclassify one with a
    reason, sign, download the PDF, find the case in the history after a restart, read it in Bangla."""
    from core.case import CaseStatus, Decision

    history = tmp_path / "history"
    monkeypatch.setenv("LEUKOSCOPE_HISTORY", str(history))
    at = app("app_pages/6_Case.py").run()
    no_exceptions(at)
    at.text_input(key="case_specimen").input("BM-2026-001")
    at.text_input(key="case_patient").input("ward 3, bed 12")
    at.button(key="case_create").click().run()
    no_exceptions(at)
    case = at.session_state["case"]
    cid = case.case_id
    at.checkbox(key="history_on").check().run()
    three = [SAMPLE_A, SAMPLE_B, SAMPLES / "Pro" / "WBC-Malignant-Pro-613.jpg"]
    at.file_uploader(key=f"case_upload_{cid}").set_value(
        [(p.name, p.read_bytes(), "image/jpeg") for p in three]).run()
    no_exceptions(at)
    case = at.session_state["case"]
    assert [im.analysis.file_name for im in case.images] == [p.name for p in three]
    assert all(len(im.analysis.weights) == 1 and im.thumbnail for im in case.images)

    # Reclassify image 1: refused without a reason, accepted with one.
    suggested = case.images[0].analysis.suggested_label
    other = next(c for c in CLASS_FOLDERS if c != suggested)
    at.radio(key=f"case_dec_{cid}_0").set_value(Decision.RECLASSIFIED.value)
    at.selectbox(key=f"case_cls_{cid}_0").set_value(other)
    at.button(key=f"case_save_{cid}_0").click().run()
    assert any("reason" in e.value.lower() for e in at.error) and case.images[0].review is None
    at.text_input(key=f"case_why_{cid}_0").input("blast nuclei are not cleaved; hematogone pattern")
    at.button(key=f"case_save_{cid}_0").click().run()
    no_exceptions(at)
    assert case.images[0].review.decision is Decision.RECLASSIFIED and case.images[0].final_label == other
    assert at.button(key="case_sign").disabled  # two images still undecided
    for i in (1, 2):
        choice = Decision.CONFIRMED if case.images[i].analysis.suggested_label else Decision.UNUSABLE
        at.radio(key=f"case_dec_{cid}_{i}").set_value(choice.value)
        at.button(key=f"case_save_{cid}_{i}").click().run()
        no_exceptions(at)
    at.text_input(key="case_reviewer").input("Dr. N. Rahman")
    at.button(key="case_sign").click().run()
    no_exceptions(at)
    assert case.status is CaseStatus.SIGNED and case.signed_by == "Dr. N. Rahman"
    assert "Signed by Dr. N. Rahman" in texts(at)
    pdf = download_bytes(media, next(b for b in at.download_button if b.proto.label.endswith("(PDF)")))
    assert pdf.startswith(b"%PDF")

    # A restart of the app: a new session finds the signed case in the history.
    hist = app("app_pages/7_History.py").run()
    no_exceptions(hist)
    listed = hist.dataframe[0].value
    assert list(listed["specimen ID"]) == ["BM-2026-001"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d \(UTC[+-]\d\d:\d\d\)", listed["signed"][0])  # not raw ISO
    assert "Signed by Dr. N. Rahman" in texts(hist)
    assert "blast nuclei are not cleaved" in hist.dataframe[1].value.to_string()
    assert not list(history.glob("*.jpg"))  # images are not kept unless ticked
    # A later finding goes on the signed case as an addendum (the case itself stays as signed).
    hist.text_area(key=f"hist_{cid}_addendum_text").input("flow cytometry: CD10+, CD19+")
    hist.text_input(key=f"hist_{cid}_addendum_by").input("Dr. N. Rahman")
    hist.button(key=f"hist_{cid}_addendum_add").click().run()
    no_exceptions(hist)
    assert "flow cytometry: CD10+, CD19+" in texts(hist)
    assert "addendum" in hist.dataframe[-1].value.to_string()  # in the audit trail

    # Bangla: the same page's labels in Bangla, class names in their international spelling.
    bn = app("app_pages/6_Case.py")
    bn.session_state["lang"] = "bn"
    bn.run()
    no_exceptions(bn)
    assert bn.title[0].value == "কেস পর্যালোচনা"
    assert bn.text_input(key="case_specimen").label == "নমুনা আইডি"


def case_with_history(specimen: str, files: list[tuple[str, bytes, str]]):
    """Case review in a new session: a case created, the history switched on, `files` uploaded."""
    at = app("app_pages/6_Case.py").run()
    at.text_input(key="case_specimen").input(specimen)
    at.button(key="case_create").click().run()
    cid = at.session_state["case"].case_id
    at.checkbox(key="history_on").check().run()
    at.file_uploader(key=f"case_upload_{cid}").set_value(files).run()
    return at, cid


def test_case_history_that_cannot_be_written_loses_nothing(app_env, tmp_path, monkeypatch):
    """A history 'folder' that is a file: signing still works, the user reads one sentence, the case
    stays in the session with its downloads, and saving can be tried again."""
    from core.case import CaseStatus

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the history folder should be")
    monkeypatch.setenv("LEUKOSCOPE_HISTORY", str(blocker))
    at, cid = case_with_history("BM-2026-002", [("bad.jpg", BAD_BYTES, "image/jpeg")])
    no_exceptions(at)
    case = at.session_state["case"]
    assert case.images[0].analysis.status.value == "error"
    at.radio(key=f"case_dec_{cid}_0").set_value("unusable")  # an unreadable image signs as unusable
    at.button(key=f"case_save_{cid}_0").click().run()
    at.text_input(key="case_reviewer").input("Dr. A. Karim")
    at.button(key="case_sign").click().run()
    no_exceptions(at)
    assert case.status is CaseStatus.SIGNED
    assert any("could not be saved to the history folder" in e.value for e in at.error)
    assert at.button(key="case_save_history") is not None and len(at.download_button) == 3


def test_an_open_case_is_kept_as_a_draft_and_continued_after_a_reload(app_env, tmp_path, monkeypatch):
    """With the history on, every change to an open case is saved, so a reload loses no decision;
    Case history lists the draft and continues it in Case review."""
    from core.case import CaseStatus, Decision
    from core.history import CaseStore

    from app.cases import DB_NAME

    history = tmp_path / "history"
    monkeypatch.setenv("LEUKOSCOPE_HISTORY", str(history))
    at, cid = case_with_history("BM-2026-003", [(SAMPLE_A.name, SAMPLE_A.read_bytes(), "image/jpeg")])
    at.radio(key=f"case_dec_{cid}_0").set_value(Decision.UNUSABLE.value)
    at.button(key=f"case_save_{cid}_0").click().run()
    no_exceptions(at)
    draft = CaseStore(history / DB_NAME).load(cid)  # the browser tab is gone; the draft is not
    assert draft.status is CaseStatus.OPEN and draft.images[0].review.decision is Decision.UNUSABLE
    hist = app("app_pages/7_History.py").run()
    no_exceptions(hist)
    hist.button(key=f"hist_continue_{cid}").click().run()
    assert hist.session_state["case"].case_id == cid and hist.session_state["case"].images[0].review


def test_two_sessions_never_see_each_others_case(app_env):
    one, two = app("app_pages/6_Case.py").run(), app("app_pages/6_Case.py").run()
    one.text_input(key="case_specimen").input("A-1")
    one.button(key="case_create").click().run()
    two.text_input(key="case_specimen").input("B-2")
    two.button(key="case_create").click().run()
    no_exceptions(one), no_exceptions(two)
    assert one.session_state["case"].specimen_id == "A-1" and two.session_state["case"].specimen_id == "B-2"
    assert "B-2" not in texts(one.run()) and "A-1" not in texts(two.run())


def test_what_pages_import_before_drawing_does_not_load_tensorflow():
    """The upload box must appear before TensorFlow's ~10 s import: every module a page imports
    before its first widget stays free of it (models load behind a spinner or in the background)."""
    code = ("import sys\n"
            "import app.common, app.inputs, app.imaging, app.models, core.explain, core.stain, core.predict\n"
            "import models.registry\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'torch', 'jax') if m in sys.modules)\n"
            "print('heavy=' + ','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "heavy=", out.stdout


def test_starting_the_app_asks_no_internet_service_for_an_address(monkeypatch):
    """Streamlit prints an "External URL" after asking checkip.amazonaws.com for the public
    address when the server listens on every interface; the shipped config listens on loopback
    only, so start-up makes no external request (and patient images stay off the network)."""
    import streamlit.config as st_config
    from streamlit import net_util
    from streamlit.web import bootstrap

    monkeypatch.chdir(ROOT)  # Streamlit reads ./.streamlit/config.toml, as `streamlit run` does here
    st_config.get_config_options(force_reparse=True)
    asked = []
    monkeypatch.setattr(net_util, "get_external_ip", lambda: asked.append(1) or None)
    try:
        assert st_config.get_option("server.address") in ("localhost", "127.0.0.1")
        bootstrap._print_url(is_running_hello=False)  # the start-up banner
    finally:
        st_config.get_config_options(force_reparse=True)
    assert not asked


def test_a_laptop_without_a_gpu_is_not_shown_a_cuda_failure():
    """TensorFlow logs "failed call to cuInit" when it finds no NVIDIA driver, which reads as an
    error on a machine that simply has no GPU; importing the app quiets it there."""
    import os

    from core import cuda_driver_present

    if cuda_driver_present():
        pytest.skip("an NVIDIA driver is present: TensorFlow's GPU errors are wanted on this machine")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-c", "import app, keras; keras.ops.ones((2,))"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "cuInit" not in out.stderr and "E0000" not in out.stderr, out.stderr[-2000:]
