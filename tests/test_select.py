"""Choosing the default on the validation part: the rule in core.select, on arrays and through the CLI."""
import json
import shutil

import numpy as np
import pytest

from conftest import SAMPLES
from core.select import choose, main, score_ensembles


def _probs(labels: np.ndarray, wrong: list[int], confidence: float = 0.9) -> np.ndarray:
    """(N, 4) probabilities right on every image except the indices in `wrong`."""
    pred = labels.copy()
    pred[wrong] = (labels[wrong] + 1) % 4
    p = np.full((len(labels), 4), (1 - confidence) / 3)
    p[np.arange(len(labels)), pred] = confidence
    return p


def test_rule_prefers_the_candidate_that_holds_on_grayscale_within_one_image():
    y = np.arange(40) % 4
    plain = {"acc": _probs(y, [0]), "robust": _probs(y, [0, 1]), "weak": _probs(y, [0, 1, 2])}
    gray = {"acc": _probs(y, list(range(10))), "robust": _probs(y, [0, 1]), "weak": _probs(y, [])}
    sizes = {"acc": 30, "robust": 30, "weak": 30}  # a 40 MiB budget leaves single networks only
    rows = score_ensembles(plain, gray, y, sizes, budget_mib=40)
    assert [r["members"] for r in rows] == [["acc"], ["robust"], ["weak"]]
    assert [r["n_errors"] for r in rows] == [1, 2, 3]
    # "robust" is one image behind and holds on grayscale; "weak" holds better still but is two behind.
    assert choose(rows)["members"] == ["robust"]
    assert choose([r for r in rows if r["members"] != ["robust"]])["members"] == ["acc"]
    ensembles = score_ensembles(plain, gray, y, sizes, budget_mib=90)
    assert len(ensembles) == 7 and all(0 <= r["log_loss"] for r in ensembles)


def test_rule_also_asks_the_candidate_to_hold_without_the_background():
    y = np.arange(40) % 4
    plain = {"session": _probs(y, [0]), "cell": _probs(y, [0, 1])}
    gray = {"session": _probs(y, [0]), "cell": _probs(y, [0, 1, 2])}
    neutral = {"session": _probs(y, list(range(8))), "cell": _probs(y, [0, 1, 2])}
    sizes = {"session": 30, "cell": 30}
    # Without the neutral-background copies, "session" wins on grayscale; with them, its robust
    # accuracy is its neutral-background one (32/40), below "cell"'s (37/40).
    assert choose(score_ensembles(plain, gray, y, sizes, budget_mib=40))["members"] == ["session"]
    rows = score_ensembles(plain, gray, y, sizes, budget_mib=40, neutral=neutral)
    assert {r["members"][0]: r["robust_accuracy"] for r in rows} == {"session": 32 / 40, "cell": 37 / 40}
    assert choose(rows)["members"] == ["cell"]


def test_budget_leaves_out_what_does_not_fit_and_an_empty_choice_is_an_error():
    y = np.arange(8) % 4
    plain = {"a": _probs(y, []), "b": _probs(y, [])}
    rows = score_ensembles(plain, plain, y, {"a": 30, "b": 30}, budget_mib=40)
    assert sorted(r["members"] for r in rows) == [["a"], ["b"]]
    with pytest.raises(ValueError, match="budget"):
        choose(score_ensembles(plain, plain, y, {"a": 30, "b": 30}, budget_mib=10))


def test_cli_scores_every_ensemble_of_the_candidates(tiny_run, tmp_path, samples_manifest, capsys):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    weights = "mobilenetv2-baseline.weights.h5"
    out = tmp_path / "selection.json"
    rc = main(["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--member", f"a={tiny_run / weights}",
               "--member", f"b={other / weights}", "--out", str(out)])
    assert rc == 0
    rec = json.loads(out.read_text())
    val = json.loads(samples_manifest.read_text())
    assert rec["split"] == "val" and rec["n_images"] == sum(1 for f in val["items"] if f["part"] == "val")
    assert sorted(r["members"] for r in rec["ensembles"]) == [["a"], ["a", "b"], ["b"]]
    assert rec["chosen"] in rec["ensembles"] and set(rec["candidates"]) == {"a", "b"}
    assert all(0 <= r["neutral_background_accuracy"] <= 1 for r in rec["ensembles"])
    assert len(rec["candidates"]["a"]["sha256"]) == 64 and "core.select" in rec["command"]


def test_cli_names_a_missing_weights_file(tmp_path, samples_manifest, capsys):
    rc = main(["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--member", f"x={tmp_path / 'no.h5'}",
               "--out", str(tmp_path / "s.json")])
    assert rc == 2 and "x: no weights file" in capsys.readouterr().err
    assert main(["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--member", "no-equals-sign",
                 "--out", str(tmp_path / "s.json")]) == 2
