"""Several browser sessions share one cached model: results must not interfere."""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from conftest import SAMPLES
from core.inference import load_predictor
from core.predict import diagnose


def test_concurrent_diagnoses_equal_single_session_results(tiny_weights_env):
    predictor = load_predictor("mobilenetv2-baseline")
    files = [(f.name, f.read_bytes()) for f in sorted((SAMPLES / "Original").rglob("*.jpg"))[:8]]
    expected = [diagnose(predictor, [f])[0] for f in files]
    models_before = [id(m.model) for m in predictor.members]
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda f: diagnose(predictor, [f])[0], files * 2))
    for exp, res in zip(expected * 2, got):
        assert res.file == exp.file and res.status == exp.status and res.label == exp.label
        if exp.probabilities:
            assert np.allclose(list(res.probabilities.values()), list(exp.probabilities.values()), atol=1e-5)
    assert [id(m.model) for m in predictor.members] == models_before  # shared, never reloaded


def test_diagnosis_writes_nothing_and_never_uses_the_name_as_a_path(tiny_weights_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    predictor = load_predictor("mobilenetv2-baseline")
    data = next((SAMPLES / "Original" / "Pre").iterdir()).read_bytes()
    names = ["../../etc/passwd.jpg", "$(rm -rf ~).jpg", "; touch pwned", "x" * 500]
    records = diagnose(predictor, [(n, data) for n in names])
    assert [r.file for r in records] == names
    assert os.listdir(tmp_path) == []
