"""The shipped weights: within budget, runnable out of the box, and matching their committed evaluations."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, SAMPLES
from core.dataset import file_sha256
from core.imageio import read_image
from core.inference import load_predictor
from core.labels import CLASS_FOLDERS
from models.registry import SHIPPED_WEIGHTS_DIR, get_spec

DEFAULT_FILE = SHIPPED_WEIGHTS_DIR / "default.json"
RESULTS = ROOT / "benchmarks" / "results"
pytestmark = pytest.mark.skipif(not DEFAULT_FILE.is_file(), reason="no shipped weights in models/weights yet")


def test_committed_weights_fit_the_40_mib_budget():
    total = sum(p.stat().st_size for p in SHIPPED_WEIGHTS_DIR.glob("*.weights.h5"))
    assert 0 < total <= 40 * 2**20


@pytest.mark.spread
@pytest.mark.parametrize("name", ["default", "mdx"])
def test_shipped_models_predict_the_samples_out_of_the_box(name, monkeypatch):
    monkeypatch.delenv("LEUKOSCOPE_WEIGHTS", raising=False)
    predictor = load_predictor(name)
    assert all(Path(m.weights_path).parent == SHIPPED_WEIGHTS_DIR for m in predictor.members)
    files = sorted((SAMPLES / "Original").rglob("*.jpg"))
    truth = np.array([CLASS_FOLDERS.index(f.parent.name) for f in files])
    probs = predictor.predict_proba([read_image(f) for f in files])
    # The 20 samples come from the test part: a model as accurate as its evaluation says gets nearly all.
    assert (probs.argmax(1) == truth).mean() >= 0.9


def test_every_shipped_model_has_an_evaluation_of_exactly_these_weights():
    default = json.loads(DEFAULT_FILE.read_text())["model"]
    names = {p.name.replace(".weights.h5", "") for p in SHIPPED_WEIGHTS_DIR.glob("*.weights.h5")} | {"mdx", default}
    for name in names:
        res = json.loads((RESULTS / f"{name}.test.json").read_text())
        assert res["split"] == "test" and res["n_images"] == 876
        cm = np.array(res["confusion_matrix"])
        assert cm.sum() == 876 and np.trace(cm) / 876 == pytest.approx(res["accuracy"])
        members = get_spec(name).members or (name,)
        for m in members:
            assert res["weights_sha256"][m] == file_sha256(SHIPPED_WEIGHTS_DIR / f"{m}.weights.h5"), m
