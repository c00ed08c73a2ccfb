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
    assert run["run_eagerly"] is True  # how it ran is recorded; it changes no hyperparameter
    lines = (tiny_run / "history.csv").read_text().splitlines()
    assert lines[0].startswith("epoch") and "epoch_seconds" in lines[0] and len(lines) == 2
    # Inference weights only (~2.26M float32 parameters = 9 MB), not the optimizer's moments too.
    assert 8e6 < (tiny_run / "mobilenetv2-baseline.weights.h5").stat().st_size < 11e6


@pytest.mark.spread
def test_resume_continues_from_the_last_epoch(tiny_run, tmp_path, samples_manifest):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = ["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--model", "mobilenetv2", "--out", str(run),
            "--batch-size", "8", "--eager", "--verbose", "0"]
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
    first = res["predictions"][0]  # calibrated for the reader, uncalibrated for soft voting elsewhere
    assert len(first["probabilities"]) == len(first["probabilities_uncalibrated"]) == 4
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["accuracy"] == pytest.approx(res["accuracy"], abs=1e-4)


@pytest.mark.spread
def test_time_budget_stops_training_and_anneals_the_learning_rate(tmp_path, samples_manifest):
    run = tmp_path / "budget"
    rc = train_main(["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--model", "mobilenetv2",
                     "--out", str(run), "--epochs", "50", "--batch-size", "8", "--lr", "1e-3",
                     "--lr-schedule", "cosine", "--time-budget", "1", "--workers", "2", "--eager", "--verbose", "0"])
    assert rc == 0
    rows = list(csv.DictReader((run / "history.csv").open()))
    # A 1 s budget ends after the first epoch (it alone takes longer), not after 50.
    assert len(rows) == 1 and float(rows[0]["learning_rate"]) == pytest.approx(1e-3, rel=1e-4)
    record = json.loads((run / "run.json").read_text())
    assert record["deviations_from_paper"]["time_budget_seconds"] == 1
    assert record["deviations_from_paper"]["stopped_by_time_budget"] == "after epoch 1 of 50"


def test_time_budget_schedule_follows_a_cosine_over_time():
    import keras

    from core.train import TimeBudget

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    cb = TimeBudget(100.0, lr=1e-3, alpha=0.01)
    cb.set_model(model)
    cb.on_train_begin()
    cb.on_epoch_begin(0)  # the budget starts with the first epoch, at the full rate
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-3)
    cb.t0 -= 50.0  # halfway through the budget
    cb.on_epoch_begin(1)
    halfway = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert halfway == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5), rel=1e-3)
    cb.t0 -= 40.0  # 90 s gone, epochs of 15 s: the next one would overrun
    cb._e0 -= 15.0
    cb.on_epoch_end(0, {})
    assert model.stop_training
    assert cb.stopped_after_epoch == 1


def test_a_deadline_at_the_papers_constant_rate_is_not_a_deviation_unless_it_ends_the_run():
    from dataclasses import replace

    from core.train import PAPER

    assert replace(PAPER, time_budget=420).deviations_from_paper() == {}
    assert replace(PAPER, time_budget=420, lr_schedule="cosine").deviations_from_paper() == {
        "time_budget_seconds": 420, "lr_schedule": "cosine"}


def test_evaluate_gate_uses_the_calibration_it_fits_and_saves(tiny_run, tmp_path, samples_manifest, monkeypatch):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    meta = run / "mobilenetv2-baseline.meta.json"
    meta.write_text(json.dumps(dict(json.loads(meta.read_text()), temperature=7.0, threshold=0.01)))  # stale
    out = tmp_path / "eval.json"
    assert evaluate_main(["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--run", str(run),
                          "--split", "test", "--calibrate", "--gate", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    fitted, gate = res["calibration"], res["gate"]
    assert (gate["temperature"], gate["threshold"]) == (fitted["temperature"], fitted["threshold"]) != (7.0, 0.01)
    assert sum(gate["counts"].values()) == res["n_images"]
    saved = json.loads(meta.read_text())
    assert (saved["temperature"], saved["threshold"]) == (fitted["temperature"], fitted["threshold"])


def test_evaluate_split_val_reports_the_validation_part(tiny_run, tmp_path, samples_manifest):
    out = tmp_path / "val.json"
    assert evaluate_main(["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--run", str(tiny_run),
                          "--split", "val", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    m = json.loads(samples_manifest.read_text())
    val_files = {it["file"] for it in m["items"] if it["part"] == "val"}
    assert res["split"] == "val" and {p["file"] for p in res["predictions"]} == val_files
    assert "temperature" not in res["calibration"]  # nothing is fitted on the part being measured


def test_evaluate_with_eight_views_is_labelled_and_keeps_the_calibration(tiny_run, tmp_path, samples_manifest,
                                                                         capsys):
    meta = tiny_run / "mobilenetv2-baseline.meta.json"
    before = meta.read_text()
    out = tmp_path / "v8.json"
    assert evaluate_main(["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--run", str(tiny_run),
                          "--split", "test", "--views", "8", "--calibrate", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["views"] == 8 and "--views 8" in res["command"] and res["n_images"] == 5
    assert meta.read_text() == before  # calibration fitted for one view is not overwritten
    assert "ignored" in capsys.readouterr().err


def test_evaluate_split_all_on_any_folder(tiny_weights_env, tmp_path):
    out = tmp_path / "all.json"
    assert evaluate_main(["--data", str(SAMPLES), "--model", "mobilenetv2-baseline", "--split", "all",
                          "--out", str(out)]) == 0
    assert json.loads(out.read_text())["n_images"] == 20


def test_evaluate_errors_are_plain(tmp_path, capsys):
    assert evaluate_main(["--data", str(tmp_path), "--model", "vgg19-tl", "--split", "all"]) == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.spread
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
    capsys.readouterr()
    assert predict_main(["--model", "mobilenetv2-baseline", "--views", "8", "--json", *files]) == 0
    eight = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in eight[2:]] == ["error", "error"] and len(eight) == 4


def test_predict_unknown_model_is_a_plain_error(capsys):
    assert predict_main(["--model", "alexnet", "x.jpg"]) == 2
    assert "Unknown model" in capsys.readouterr().err


@pytest.mark.spread
def test_two_stage_recipe_warms_up_the_head_then_fine_tunes_and_records_it(tmp_path, samples_manifest,
                                                                            lite0_cache, monkeypatch):
    from core.labels import N_CLASSES
    from models.convert import converted_path, imagenet_model
    from models.families import get_family
    from models.registry import build

    monkeypatch.setenv("KERAS_HOME", str(lite0_cache))
    run = tmp_path / "lite"
    args = ["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--model", "efficientnet_lite0",
            "--mode", "tl", "--recipe", "tl-two-stage", "--out", str(run), "--epochs", "1", "--image-size", "64",
            "--batch-size", "4", "--eager", "--verbose", "0"]
    assert train_main(args) == 0
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["0", "1", "2", "3"]  # 3 warm-up epochs, then 1 of fine-tuning
    record = json.loads((run / "run.json").read_text())
    assert record["hyperparameters"]["recipe"]["name"] == "tl-two-stage"
    assert record["hyperparameters"]["augment"] == "stain-robust" and record["hyperparameters"]["batch_size"] == 4
    assert record["deviations_from_paper"]["recipe"] == "tl-two-stage"
    assert record["command"].endswith(" -m core.train " + " ".join(args))  # the argv given, not pytest's
    # The kept weights left the ImageNet backbone (fine-tuned) and load into a plain build.
    model = build("efficientnet_lite0-tl", N_CLASSES, imagenet_weights=False, input_size=64)
    model.load_weights(str(run / "efficientnet_lite0-tl.weights.h5"))
    source = imagenet_model(get_family("efficientnet_lite0"))
    source.load_weights(str(converted_path(get_family("efficientnet_lite0"))))
    assert not np.allclose(model.get_layer("top_conv").get_weights()[0], source.get_layer("top_conv").get_weights()[0])
    # BatchNorm stayed in inference mode: its ImageNet statistics are untouched.
    np.testing.assert_array_equal(model.get_layer("top_bn").get_weights()[2], source.get_layer("top_bn").get_weights()[2])


def test_two_stage_recipe_needs_an_imagenet_backbone(tmp_path, samples_manifest, capsys):
    rc = train_main(["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--model", "mobilenetv2",
                     "--recipe", "tl-two-stage", "--out", str(tmp_path / "x"), "--verbose", "0"])
    assert rc == 2 and "--mode tl" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(__import__("core.cli", fromlist=["COMMANDS"]).COMMANDS))
def test_every_leukoscope_command_runs_its_tools_main(command, capsys):
    """`leukoscope X` reaches the same main as `python -m core.X` (help exits cleanly, or prints usage)."""
    from core.cli import main as cli_main

    try:
        rc = cli_main([command, "--help"])
    except SystemExit as exc:  # argparse's --help
        rc = exc.code
    out = capsys.readouterr()
    assert rc in (0, None) and "Traceback" not in out.err, out.err
    assert "--data" in out.out or "usage" in out.out.lower() or command == "i18n"


def test_leukoscope_refuses_an_unknown_command(capsys):
    from core.cli import main as cli_main

    assert cli_main(["nope"]) == 2 and "unknown command" in capsys.readouterr().err


def test_the_paper_preset_is_the_papers_protocol_and_deviations_are_recorded():
    from dataclasses import replace

    from core.paper import PAPER_PROTOCOL
    from core.train import PAPER, RECIPES, TrainConfig, build_parser, config_from_args

    assert (PAPER.learning_rate, PAPER.batch_size, PAPER.epochs, PAPER.patience, PAPER.image_size) == (
        PAPER_PROTOCOL["learning_rate"], PAPER_PROTOCOL["batch_size"], PAPER_PROTOCOL["max_epochs"],
        PAPER_PROTOCOL["early_stopping_patience"], PAPER_PROTOCOL["input_size"][0]) == (1e-4, 17, 25, 10, 132)
    assert PAPER.deviations_from_paper() == {}
    assert replace(PAPER, batch_size=32, seed=3).deviations_from_paper() == {"batch_size": 32}
    two = RECIPES["tl-two-stage"]
    assert two.two_stage and two.deviations_from_paper()["recipe"] == "tl-two-stage"
    # The session-robust recipe is the default's recipe with one change: what its augmentation does.
    robust = RECIPES["tl-session-robust"]
    assert replace(robust, name=two.name, description=two.description, augment=two.augment) == two
    assert robust.deviations_from_paper()["augment"] == "session-robust"
    assert robust.hyperparameters()["augment_config"]["background_p"] > 0
    # The scale-robust recipe is the session-robust one with a wider zoom, and nothing else.
    scale = RECIPES["tl-scale-robust"]
    assert replace(scale, name=robust.name, description=robust.description, augment=robust.augment) == robust
    zoom, robust_zoom = (r.hyperparameters()["augment_config"]["scale"] for r in (scale, robust))
    assert zoom[0] < robust_zoom[0] and zoom[1] > robust_zoom[1]
    assert {k: v for k, v in scale.hyperparameters()["augment_config"].items() if k != "scale"} == {
        k: v for k, v in robust.hyperparameters()["augment_config"].items() if k != "scale"}
    # Flags override single fields of the recipe; unset flags keep the recipe's values.
    args = build_parser().parse_args(["--model", "m", "--out", "o", "--recipe", "tl-two-stage", "--lr", "3e-4"])
    cfg = config_from_args(args)
    assert cfg.learning_rate == 3e-4 and cfg.image_size == 160 and cfg.warmup_epochs == 3
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)


def test_library_errors_share_one_base():
    from core.case import CaseError
    from core.dataset import DatasetError
    from core.errors import LeukoScopeError
    from core.explain import ExplainUnavailable
    from core.history import HistoryError
    from core.imageio import ImageError
    from core.inference import ModelUnavailable
    from core.segmentation_tools import LayoutError
    from core.stain import StainTargetMissing
    from models.convert import PretrainedUnavailable
    from models.torch_checkpoint import CheckpointError

    for cls in (CaseError, DatasetError, ExplainUnavailable, HistoryError, ImageError, ModelUnavailable, LayoutError,
                StainTargetMissing, PretrainedUnavailable, CheckpointError):
        assert issubclass(cls, LeukoScopeError), cls
    assert issubclass(ImageError, ValueError) and issubclass(ModelUnavailable, RuntimeError)  # old excepts hold


def _member_record(model: str, probs: list[list[float]], truth: list[str], **extra) -> dict:
    return {"model": model, "split": "test", "manifest_hash": "abc", "views": 1, "device": "GPU X",
            "training": {model: {"protocol": "paper"}}, "weights_sha256": {model: model[:3]},
            "predictions": [{"file": f"Original/{t}/{i}.jpg", "true": t, "probabilities": p,
                             "probabilities_uncalibrated": p} for i, (p, t) in enumerate(zip(probs, truth))],
            **extra}


def test_an_ensemble_is_scored_from_its_members_saved_probabilities(tmp_path, capsys):
    from core.evaluate import combine_evaluations

    truth = ["Benign", "Early", "Pre", "Pro"]
    dn = _member_record("densenet121-baseline", [[.9, .1, 0, 0], [.6, .4, 0, 0], [0, 0, 1, 0], [0, 0, .3, .7]], truth)
    mb = _member_record("mobilenetv2-baseline", [[.8, .2, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, .8, .2]], truth)
    rec = combine_evaluations("mdx", [dn, mb])
    assert rec["model"] == "mdx" and rec["n_images"] == 4
    assert [p["probabilities"] for p in rec["predictions"]][1] == [0.3, 0.7, 0.0, 0.0]  # the mean of the two
    assert rec["accuracy"] == 0.75  # image 3: 0.55 Pre vs 0.45 Pro
    assert rec["members"] == {"densenet121-baseline": 0.75, "mobilenetv2-baseline": 0.75}
    assert rec["training"] == {"densenet121-baseline": {"protocol": "paper"},
                               "mobilenetv2-baseline": {"protocol": "paper"}}
    with pytest.raises(ValueError, match="mdx is densenet121-baseline, mobilenetv2-baseline"):
        combine_evaluations("mdx", [dn, dn])
    with pytest.raises(ValueError, match="differ in split"):
        combine_evaluations("mdx", [dn, {**mb, "split": "val"}])
    with pytest.raises(ValueError, match="different images"):
        combine_evaluations("mdx", [dn, {**mb, "predictions": mb["predictions"][:3]}])
    old = {**mb, "predictions": [{k: v for k, v in p.items() if k != "probabilities_uncalibrated"}
                                 for p in mb["predictions"]]}
    with pytest.raises(ValueError, match="no uncalibrated probabilities"):
        combine_evaluations("mdx", [dn, old])
    files = []
    for r in (dn, mb):
        files.append(tmp_path / f"{r['model']}.json")
        files[-1].write_text(json.dumps(r))
    out = tmp_path / "mdx.json"
    assert evaluate_main(["--members", *map(str, files), "--ensemble", "mdx", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["accuracy"] == 0.75
    assert evaluate_main(["--members", str(files[0]), "--out", str(out)]) == 2
    assert "needs --ensemble" in capsys.readouterr().err


def test_git_commit_says_when_the_code_differs_from_the_commit(tmp_path, monkeypatch):
    import subprocess

    from core.provenance import git_commit

    monkeypatch.delenv("LEUKOSCOPE_GIT_COMMIT", raising=False)
    assert git_commit(tmp_path) == "unknown"  # not a checkout
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "a.py").write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("draft\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "c"], check=True)
    sha = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(tmp_path) == sha
    (tmp_path / "notes.md").write_text("edited\n")  # not code that makes results
    assert git_commit(tmp_path) == sha
    (tmp_path / "core" / "new.py").write_text("")  # a module the commit lacks
    assert git_commit(tmp_path) == sha + "+uncommitted"
    (tmp_path / "core" / "new.py").unlink()
    (tmp_path / "core" / "a.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == sha + "+uncommitted"
