"""Grad-CAM and Grad-CAM++ heat maps with tf-keras-vis (needs the TensorFlow backend).

Every zoo model is flat, so the last convolutional feature map is a layer of the model
itself; tf-keras-vis cannot see into a backbone nested as one layer.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np

from core.imageio import to_model_input
from models.architectures import feature_layer_name

METHODS = ("Grad-CAM", "Grad-CAM++")
_lock = threading.Lock()
_explainers: dict[tuple[int, str], object] = {}


class ExplainUnavailable(RuntimeError):
    """Grad-CAM cannot run here (e.g. a Keras backend other than TensorFlow)."""


def class_activation_map(model, rgb: np.ndarray, image_size: int, class_index: int,
                         method: str = "Grad-CAM") -> np.ndarray:
    """Heat map for one RGB uint8 image: (H, W) float32 in [0, 1], at the image's own size.

    `class_index` is the target class (0..3, the order of core.labels.CLASS_FOLDERS).
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ExplainUnavailable("Grad-CAM needs KERAS_BACKEND=tensorflow (tf-keras-vis).")
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
    from tf_keras_vis.utils.scores import CategoricalScore

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    x = to_model_input([rgb], image_size)
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


def overlay_heatmap(rgb: np.ndarray, heat: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Blend a jet-coloured heat map (H, W) in [0, 1] over an RGB uint8 image; returns RGB uint8."""
    colour = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(rgb, 1.0 - opacity, colour, opacity, 0.0)
