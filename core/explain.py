"""Grad-CAM and Grad-CAM++ heat maps (need the TensorFlow backend).

Every zoo model is flat, so the last convolutional feature map is a layer of the model
itself; tf-keras-vis cannot see into a backbone nested as one layer.

Grad-CAM++ runs through tf-keras-vis. Grad-CAM, which the Diagnose page draws for every
upload, runs as one compiled `tf.function` per model (features and pre-softmax logits in
one forward pass, their gradient in one backward pass): tf-keras-vis runs the network
eagerly, which on a 2-core CPU costs ~0.5 s an image against ~0.1 s compiled. The tests
hold the compiled map to tf-keras-vis' `Gradcam` on the same model.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np

from core.errors import LeukoScopeError
from core.imageio import to_model_input

# Keras (and so TensorFlow, ~10 s) is imported only when a map is drawn: the pages import METHODS
# before they draw their upload box.
METHODS = ("Grad-CAM", "Grad-CAM++")
_lock = threading.Lock()
_explainers: dict[tuple[int, str], object] = {}
_compiled: dict[int, object] = {}


class ExplainUnavailable(LeukoScopeError, RuntimeError):
    """Grad-CAM cannot run here (e.g. a Keras backend other than TensorFlow)."""


def class_activation_map(model, rgb: np.ndarray, image_size: int, class_index: int,
                         method: str = "Grad-CAM") -> np.ndarray:
    """Heat map for one RGB uint8 image: (H, W) float32 in [0, 1], at the image's own size.

    `class_index` is the target class (0..3, the order of core.labels.CLASS_FOLDERS).
    """
    import keras

    from models.architectures import feature_layer_name

    if keras.backend.backend() != "tensorflow":
        raise ExplainUnavailable("Grad-CAM needs KERAS_BACKEND=tensorflow (tf-keras-vis).")
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    x = to_model_input([rgb], image_size)
    if method == "Grad-CAM":
        heat = _normalise(np.asarray(_grad_cam_function(model)(x, np.int32(class_index)))[0])
        return cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    with _lock:
        key = (id(model), method)
        if key not in _explainers:
            # Cloning (so the shared model keeps its softmax) is the slow part: once per model.
            cls = Gradcam if method == "Grad-CAM" else GradcamPlusPlus
            _explainers[key] = cls(model, model_modifier=ReplaceToLinear(), clone=True)
        cam = _explainers[key](
            CategoricalScore([int(class_index)]), x, penultimate_layer=feature_layer_name(model),
            seek_penultimate_conv_layer=False, normalize_cam=True,
        )
    heat = np.nan_to_num(np.asarray(cam[0], dtype=np.float32))
    return cv2.resize(heat, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)


def _grad_cam_function(model):
    """The model's compiled Grad-CAM: (x (B, S, S, 3) float32, class index) -> (B, h, w) raw maps.

    The score is the class's logit (the `logits` layer, before the softmax), as in
    tf-keras-vis with `ReplaceToLinear`; the channel weights are the spatial means of its
    gradient with respect to the last convolutional feature map.
    """
    import keras
    import tensorflow as tf

    from models.architectures import feature_layer_name

    with _lock:
        fn = _compiled.get(id(model))
        if fn is not None:
            return fn
        taps = keras.Model(model.inputs, [model.get_layer(feature_layer_name(model)).output,
                                          model.get_layer("logits").output])
        size = model.inputs[0].shape[1]

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32),
                                      tf.TensorSpec([], tf.int32)])
        def grad_cam(x, class_index):
            with tf.GradientTape() as tape:
                fmap, logits = taps(x, training=False)
                score = tf.gather(logits, class_index, axis=1)
            grads = tape.gradient(score, fmap)
            weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
            return tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1))

        _compiled[id(model)] = grad_cam
        return grad_cam


def _normalise(cam: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] like tf-keras-vis' `normalize_cam` (a flat map stays all zeros)."""
    cam = np.nan_to_num(cam.astype(np.float32))
    span = float(cam.max() - cam.min())
    return (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)


def overlay_heatmap(rgb: np.ndarray, heat: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Blend a jet-coloured heat map (H, W) in [0, 1] over an RGB uint8 image; returns RGB uint8."""
    colour = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1.0 - opacity, colour, opacity, 0.0)
