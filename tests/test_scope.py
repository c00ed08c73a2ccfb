"""The in-scope score (core.scope) and the out_of_scope status it gives."""
import json

import numpy as np

from conftest import SAMPLES
from core.scope import ScopeModel, choose_threshold, ensemble_ratio_limit, fit_scope, scope_path
from core.status import Status


def _clusters(rng, n=200, d=32):
    labels = np.repeat(np.arange(4), n // 4)
    centres = rng.normal(0, 5, (4, d))
    return centres[labels] + rng.normal(0, 1, (n, d)), labels, centres


def test_distance_is_small_near_training_classes_and_large_far_from_them(tmp_path):
    rng = np.random.default_rng(0)
    x, y, centres = _clusters(rng)
    scope = fit_scope(x, y, n_components=8)
    near = scope.distance(centres + rng.normal(0, 1, centres.shape))
    far = scope.distance(centres.mean(0) + rng.normal(0, 40, (4, x.shape[1])))
    assert near.max() < far.min()
    path = tmp_path / "m.scope.npz"
    ScopeModel(scope.mean, scope.components, scope.class_means, scope.precision, 3.0).save(path)
    back = ScopeModel.load(path)
    assert back.threshold == 3.0 and np.allclose(back.distance(x[:5]), scope.distance(x[:5]))
    assert scope_path(tmp_path / "a-b.weights.h5").name == "a-b.scope.npz"


def test_threshold_keeps_the_validated_share_in_scope():
    d = np.arange(1, 201, dtype=float)
    t = choose_threshold(d, val_in=0.99)
    assert (d <= t).mean() >= 0.99 and (d <= t - 1).mean() < 0.99


def test_an_ensemble_keeps_the_validated_share_in_scope_not_each_member():
    rng = np.random.default_rng(0)
    # Two members whose 0.5% tails fall on different images: refusing when either refuses would
    # refuse about 1% of the validation part.
    a, b = rng.uniform(0, 1, 1000), rng.uniform(0, 1, 1000)
    a[:5], b[5:10] = 1.2, 1.3
    assert (np.maximum(a, b) <= 1).mean() == 0.99
    limit = ensemble_ratio_limit([a, b], val_in=0.995)
    assert (np.maximum(a, b) <= limit).mean() >= 0.995 and limit == 1.2
    assert ensemble_ratio_limit([a / 2, b / 2], val_in=0.995) == 1.0  # never stricter than the members


def test_an_ensembles_scope_limit_is_read_from_its_meta(monkeypatch, tmp_path):
    from core.inference import load_predictor, predictor_meta_path

    (tmp_path / "mdx.meta.json").write_text(json.dumps({"model": "mdx", "scope": {"ratio_limit": 1.25}}))
    monkeypatch.setenv("LEUKOSCOPE_WEIGHTS", str(tmp_path))
    mdx = load_predictor("mdx")
    assert mdx.scope_limit == 1.25 and predictor_meta_path(mdx).name == "mdx.meta.json"
    assert load_predictor("mobilenetv2-baseline").scope_limit == 1.0


def test_an_image_beyond_the_threshold_is_out_of_scope_with_no_subtype(tiny_run, monkeypatch):
    from core.imageio import read_image
    from core.inference import load_predictor
    from core.predict import diagnose

    monkeypatch.setenv("LEUKOSCOPE_WEIGHTS", str(tiny_run))
    predictor = load_predictor("mobilenetv2-baseline")
    member = predictor.members[0]
    files = sorted((SAMPLES / "Original").rglob("*.jpg"))[:3]
    feats = member.predict_with_features([read_image(f) for f in files])[1]
    base = fit_scope(np.concatenate([feats] * 4) + np.random.default_rng(0).normal(0, 1e-3, (12, feats.shape[1])),
                     np.repeat(np.arange(4), 3), n_components=4)
    member.scope = ScopeModel(base.mean, base.components, base.class_means, base.precision, 1e-9)
    recs = diagnose(predictor, [(f.name, f.read_bytes()) for f in files])
    assert all(r.status is Status.OUT_OF_SCOPE and r.label is None and r.confidence is None for r in recs)
    assert all(r.message.startswith("A blood smear, but unlike any image") and r.message.count(".") == 1 and r.scope_ratio > 1 for r in recs)
    assert json.loads(json.dumps(recs[0].to_dict()))["status"] == "out_of_scope"
    predictor.scope_limit = 1e15  # the same member distances, under a (fitted) ensemble limit
    recs = diagnose(predictor, [(f.name, f.read_bytes()) for f in files])
    assert all(r.status in (Status.OK, Status.UNCERTAIN) and r.label for r in recs)
    predictor.scope_limit = 1.0
    member.scope = ScopeModel(base.mean, base.components, base.class_means, base.precision, 1e12)
    recs = diagnose(predictor, [(f.name, f.read_bytes()) for f in files])
    assert all(r.status in (Status.OK, Status.UNCERTAIN) and r.label for r in recs)
    member.scope = None


def test_status_is_one_closed_set_of_strings():
    assert [s.value for s in Status] == ["error", "rejected", "out_of_scope", "uncertain", "ok"]
    assert Status.OK == "ok" and str(Status.OUT_OF_SCOPE) == "out_of_scope"
    assert [s for s in Status if s.gives_subtype] == [Status.UNCERTAIN, Status.OK]
