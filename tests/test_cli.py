"""End to end through the CLIs: train (fixture), resume, evaluate, predict."""
import csv
import json
import shutil

import numpy as np
import pytest

from conftest import SAMPLES
from core.evaluate import main as evaluate_main
from core.predict import main as predict_main
from core.train import main as train_main


def test_train_writes_a_complete_run(tiny_run):
    run = json.loads((tiny_run / "run.json").read_text())
    for key in ("command", "git_commit", "manifest_hash", "hyperparameters", "keras_backend", "device",
                "seconds_per_epoch", "total_seconds", "deviations_from_paper"):
        assert key in run, key
    assert run["hyperparameters"]["learning_rate"] == 1e-4 and run["hyperparameters"]["batch_size"] == 8
    assert run["deviations_from_paper"] == {"batch_size": 8, "epochs_max": 1}
    lines = (tiny_run / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch") and "epoch_seconds" in lines[0] and len(lines) == 2
    # Inference weights only (~2.26M float32 parameters = 9 MB), not the optimizer's moments too.
    assert 8e6 < (tiny_run / "mobilenetv2-baseline.weights.h5").stat().st_size < 11e6


def test_resume_continues_from_the_last_epoch(tiny_run, tmp_path, samples_manifest):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = ["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--model", "mobilenetv2", "--out", str(run),
            "--batch-size", "8", "--verbose", "0"]
    assert train_main(args + ["--epochs", "2"]) == 2  # refuses to overwrite silently
    assert train_main(args + ["--epochs", "2", "--resume"]) == 0
    epochs = [row["epoch"] for row in csv.DictReader((run / "history.csv").open())]
    assert epochs == ["0", "1"]  # epoch 0 from the first session, epoch 1 from the resumed one


def test_evaluate_writes_full_metrics(tiny_run, tmp_path, samples_manifest, capsys):
    out = tmp_path / "eval.json"
    rc = evaluate_main(["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--run", str(tiny_run),
                        "--split", "test", "--out", str(out), "--robustness"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["n_images"] == 5 and len(res["predictions"]) == 5
    cm = np.array(res["confusion_matrix"])
    assert cm.shape == (4, 4) and cm.sum() == 5 and np.trace(cm) / 5 == pytest.approx(res["accuracy"])
    assert set(res["per_class"]["Benign"]) == {"precision", "recall", "f1", "specificity", "support"}
    assert {"ece_before", "ece_after", "temperature", "threshold"} <= set(res["calibration"])
    assert set(res["robustness"]) >= {"grayscale_accuracy", "colour_jitter_accuracy"}
    assert res["weights"]["mobilenetv2-baseline"].endswith("mobilenetv2-baseline.weights.h5")
    assert res["manifest_hash"]
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["accuracy"] == pytest.approx(res["accuracy"], abs=1e-4)


def test_evaluate_split_all_on_any_folder(tiny_weights_env, tmp_path):
    out = tmp_path / "all.json"
    assert evaluate_main(["--data", str(SAMPLES), "--model", "mobilenetv2-baseline", "--split", "all",
                          "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n_images"] == 20


def test_evaluate_errors_are_plain(tmp_path, capsys):
    assert evaluate_main(["--data", str(tmp_path), "--model", "vgg19-tl", "--split", "all"]) == 2
    assert "error:" in capsys.readouterr().err


def test_predict_cli_gives_one_record_per_file(tiny_weights_env, tmp_path, capsys):
    bad = tmp_path / "scan.jpg"
    bad.write_text("this is a text file")
    good = sorted((SAMPLES / "Original" / "Pro").iterdir())[:2]
    files = [str(f) for f in good] + [str(bad), str(tmp_path / "missing.png")]
    assert predict_main(["--model", "mobilenetv2-baseline", "--json", *files]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in records] == files
    assert [r["status"] for r in records[2:]] == ["error", "error"]
    assert all(r["status"] in {"ok", "uncertain", "rejected"} for r in records[:2])
    for r in records[:2]:
        if r["status"] != "rejected":
            assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
    out_csv = tmp_path / "out.csv"
    assert predict_main(["--model", "mobilenetv2-baseline", "--csv", str(out_csv), *files]) == 0
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 4 and rows[2]["status"] == "error"


def test_predict_unknown_model_is_a_plain_error(capsys):
    assert predict_main(["--model", "alexnet", "x.jpg"]) == 2
    assert "Unknown model" in capsys.readouterr().err
