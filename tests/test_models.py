import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import ROOT, SAMPLES
from core.imageio import read_image
from core.labels import N_CLASSES
from models.architectures import feature_layer_name
from models.registry import REGISTRY, build, find_weights, get_spec, how_to_get, is_available

PAPER_SIX = {"vgg19", "inceptionv3", "mobilenetv2", "xception", "densenet201", "seresnet152"}


def test_registry_lists_the_papers_models_in_both_modes_and_the_ensembles():
    for fam in PAPER_SIX | {"densenet121", "efficientnetb7"}:
        assert get_spec(f"{fam}-baseline").mode == "baseline"
        assert get_spec(f"{fam}-tl").mode == "tl"
    assert REGISTRY["dex"].members == ("densenet121-baseline", "efficientnetb7-baseline", "xception-baseline")
    assert REGISTRY["mdx"].members == ("densenet121-baseline", "mobilenetv2-baseline")
    assert {s.family for s in REGISTRY.values() if s.in_paper and s.mode == "baseline"} == PAPER_SIX
    assert get_spec("seresnet152-tl").arch == "resnet152" and "ResNet152" in get_spec("seresnet152-tl").note
    with pytest.raises(KeyError, match="Unknown model"):
        get_spec("alexnet")


# One registry entry per network actually built: a family added to models/families.py is tested
# here without editing this file (the TL stand-ins, e.g. ResNet152 for SE-ResNet152, included).
ONE_ENTRY_PER_ARCH = sorted({s.arch: s.name for s in REGISTRY.values() if not s.is_ensemble}.values())


@pytest.mark.spread
@pytest.mark.parametrize("name", ONE_ENTRY_PER_ARCH)
def test_every_architecture_is_flat_with_a_4_way_softmax(name):
    model = build(name, N_CLASSES, input_size=96, imagenet_weights=False)
    assert model.output_shape == (None, N_CLASSES)
    # Flat: no layer is itself a model, and the feature map feeding the head is a 4-D conv output.
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)
    feat = model.get_layer(feature_layer_name(model))
    assert len(feat.output.shape) == 4
    x = np.random.default_rng(0).random((2, 96, 96, 3), dtype=np.float32)
    p = np.asarray(model(x, training=False))
    assert np.allclose(p.sum(1), 1, atol=1e-5)


@pytest.mark.spread
def test_se_resnet152_has_squeeze_excitation_in_every_block():
    model = build("seresnet152-baseline", N_CLASSES, input_size=64)
    se = [layer for layer in model.layers if layer.name.endswith("_se_scale")]
    assert len(se) == 3 + 8 + 36 + 3
    reduce = model.get_layer("conv2_block1_se_reduce")
    assert reduce.units == 256 // 16
    assert feature_layer_name(model) == "conv5_block3_out"


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    # KERAS_HOME is read once when keras is imported, so each case runs in a fresh process.
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.spread
def test_transfer_learning_reads_imagenet_weights_from_the_keras_cache(tmp_path):
    """The real weights="imagenet" path, offline: a file of the real name in $KERAS_HOME/models."""
    (tmp_path / "models").mkdir()
    fake = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(224, 224, 3))
    fake.save(str(tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"))
    np.save(tmp_path / "conv1.npy", fake.get_layer("Conv1").get_weights()[0])
    code = (
        "import json, numpy as np\n"
        "from models.registry import build\n"
        "m = build('mobilenetv2-tl', 4); t = build('mobilenetv2-tl', 4, fine_tune_layers=10)\n"
        f"same = bool(np.allclose(m.get_layer('Conv1').get_weights()[0], np.load({str(tmp_path / 'conv1.npy')!r})))\n"
        "print(json.dumps({'same': same, 'trainable': sorted({w.path.split('/')[0] for w in m.trainable_weights}),"
        " 'n_tuned': len(t.trainable_weights), 'n_frozen': len(m.trainable_weights)}))\n"
    )
    out = _run(code, {"KERAS_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["same"]  # the backbone carries the cached ImageNet file's weights
    assert res["trainable"] == ["logits"]  # feature extraction: only the new head trains
    assert res["n_tuned"] > res["n_frozen"]


@pytest.mark.spread
def test_tl_without_cached_weights_fails_clearly_offline(tmp_path, samples_manifest):
    out = subprocess.run(
        [sys.executable, "-m", "core.train", "--data", str(SAMPLES), "--manifest", str(samples_manifest),
         "--model", "mobilenetv2", "--mode", "tl",
         "--out", str(tmp_path / "run"), "--epochs", "1"],
        env={**os.environ, "KERAS_HOME": str(tmp_path)}, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 2
    assert "ImageNet weights" in out.stderr and "Traceback" not in out.stderr


def test_weights_lookup_and_how_to_get(tiny_weights_env, monkeypatch):
    assert find_weights("mobilenetv2-baseline") == tiny_weights_env / "mobilenetv2-baseline.weights.h5"
    assert is_available("mobilenetv2-baseline")
    assert not is_available("vgg19-tl")
    assert "core.train" in how_to_get("vgg19-tl") and "ImageNet" in how_to_get("vgg19-tl")


@pytest.mark.spread
@pytest.mark.slow
def test_weights_cross_keras_backends_both_ways(tiny_run, tmp_path, samples_manifest):
    """One JAX process (its start-up is the cost): it trains through the real CLI, and predicts with
    weights trained under TensorFlow; here, TensorFlow predicts the same and loads the JAX run."""
    pytest.importorskip("jax", reason="JAX not installed: no second Keras backend to check against")
    from core.inference import load_predictor

    files = sorted((SAMPLES / "Original" / "Early").iterdir())[:3]
    weights = tiny_run / "mobilenetv2-baseline.weights.h5"
    run = tmp_path / "jax_run"
    train_argv = ["--data", str(SAMPLES), "--manifest", str(samples_manifest), "--model", "mobilenetv2",
                  "--out", str(run), "--epochs", "1", "--batch-size", "8",
                  "--image-size", "64", "--verbose", "0"]  # 64 px: XLA compiles a smaller train step
    code = (
        "import sys, json; sys.path.insert(0, %r)\n"
        "from core.train import main; assert main(%r) == 0\n"
        "from core.inference import load_predictor; from core.imageio import read_image\n"
        "p = load_predictor('mobilenetv2-baseline', weights_path=%r)\n"
        "print(json.dumps(p.predict_proba([read_image(f) for f in %r]).tolist()))\n"
    ) % (str(ROOT), train_argv, str(weights), [str(f) for f in files])
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    jax_probs = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
    tf_probs = load_predictor("mobilenetv2-baseline", weights_path=weights).predict_proba(
        [read_image(f) for f in files])
    assert np.allclose(tf_probs, jax_probs, atol=1e-4)

    assert json.loads((run / "run.json").read_text())["keras_backend"] == "jax"
    probs = load_predictor("mobilenetv2-baseline", weights_path=run / "mobilenetv2-baseline.weights.h5") \
        .predict_proba([read_image(f) for f in files[:2]])
    assert probs.shape == (2, N_CLASSES) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_dihedral_views_are_the_8_rotations_and_reflections():
    from core.inference import dihedral_views

    img = np.arange(5 * 5 * 3, dtype=np.uint8).reshape(5, 5, 3)
    views = dihedral_views(img)
    assert len(views) == 8 and len({v.tobytes() for v in views}) == 8
    assert all(v.shape == img.shape and sorted(v.ravel()) == sorted(img.ravel()) for v in views)
    assert any(np.array_equal(v, img) for v in views)


@pytest.mark.spread
def test_eight_view_prediction_is_the_view_average_and_rotation_invariant(tiny_weights_env):
    from core.inference import dihedral_views, load_predictor

    one = load_predictor("mobilenetv2-baseline")
    eight = load_predictor("mobilenetv2-baseline", views=8)
    img = read_image(sorted((SAMPLES / "Original" / "Pro").glob("*.jpg"))[0])
    expected = one.predict_proba(dihedral_views(img)).mean(axis=0)
    np.testing.assert_allclose(eight.predict_proba([img])[0], expected, atol=1e-6)
    # The same 8 views in another order: a rotated smear gets the same diagnosis.
    np.testing.assert_allclose(eight.predict_proba([np.rot90(img).copy()])[0], expected, atol=1e-3)
    with pytest.raises(ValueError, match="views"):
        load_predictor("mobilenetv2-baseline", views=3).predict_proba([img])


def test_a_first_small_call_runs_eagerly_and_agrees_with_the_traced_graph(tiny_weights_env):
    """Tracing costs a fresh process about a second per network: its first small call runs
    eagerly, later calls (and every call after warm_up) run the traced graph, with the same answer."""
    from core.inference import load_predictor

    images = [read_image(f) for f in sorted((SAMPLES / "Original" / "Pre").iterdir())[:2]]
    member = load_predictor("mobilenetv2-baseline").members[0]
    first = member.predict_proba(images)
    assert member.model.predict_function is None  # nothing traced yet
    again = member.predict_proba(images)
    assert member.model.predict_function is not None
    assert np.allclose(first, again, atol=1e-5)

    warmed = load_predictor("mobilenetv2-baseline")
    warmed.warm_up(grad_cam=False)
    traced = warmed.members[0]._dual or warmed.members[0].model  # with an in-scope model, the dual-output one
    assert traced.predict_function is not None


def test_the_model_zoo_imports_nothing_of_the_library():
    """models/ is the zoo the library builds on: it takes the number of classes as an argument and
    defines the shared error base itself, so core/ can change without the zoo following."""
    import ast

    offenders = []
    for path in sorted((ROOT / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{path.name}: {n}" for n in names if n == "core" or n.startswith(("core.", "app"))]
    assert not offenders, offenders
