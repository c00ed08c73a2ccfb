"""Reinhard stain normalisation to the training images' statistics (torchstain, NumPy backend)."""
from __future__ import annotations

import numpy as np

from conftest import SAMPLES
from core.imageio import read_image
from core.stain import StainMethod, hue_shift, normalise


def _lab_means(rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(rgb).reshape(-1, 3).mean(axis=0)


def test_normalisation_undoes_most_of_a_hue_shift():
    rgb = read_image(SAMPLES / "Original" / "Pro" / "WBC-Malignant-Pro-613.jpg")
    shifted = hue_shift(rgb, 20)
    before = np.abs(_lab_means(shifted) - _lab_means(rgb))[1:].sum()  # a*, b*: the tint
    after = np.abs(_lab_means(normalise(shifted)) - _lab_means(normalise(rgb)))[1:].sum()
    assert before > 2 and after < before / 3
    assert normalise(rgb).shape == rgb.shape and normalise(rgb).dtype == np.uint8


def test_none_and_flat_images_pass_unchanged():
    rgb = read_image(SAMPLES / "Original" / "Benign" / "WBC-Benign-126.jpg")
    assert normalise(rgb, StainMethod.NONE) is rgb
    flat = np.full((50, 60, 3), 128, np.uint8)
    assert (normalise(flat) == flat).all()


def test_a_predictor_with_normalisation_sees_normalised_images(tiny_weights_env):
    from core.inference import load_predictor

    rgb = read_image(SAMPLES / "Original" / "Benign" / "WBC-Benign-126.jpg")
    plain = load_predictor("mobilenetv2-baseline")
    normed = load_predictor("mobilenetv2-baseline", stain="reinhard")
    assert normed.stain is StainMethod.REINHARD
    np.testing.assert_allclose(normed.predict_proba([rgb]), plain.predict_proba([normalise(rgb)]), atol=1e-6)
