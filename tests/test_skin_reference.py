"""Skin-relative input channels and the colour-rule baseline (models.skin_reference)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from models.facial.data import model_input
from models.skin_reference import (N_RELATIVE_CHANNELS, colour_rule_mask, otsu_threshold, rgb_to_lab,
                                   skin_reference, skin_relative_channels)


def _two_tone(lesion_fraction: float, skin_rgb=(90, 60, 42), lesion_rgb=(240, 228, 218), size=200, seed=0):
    """A square of skin with the left ``lesion_fraction`` of columns depigmented, plus noise."""
    rng = np.random.default_rng(seed)
    img = np.empty((size, size, 3), np.float32)
    img[:] = skin_rgb
    cut = int(round(size * lesion_fraction))
    img[:, :cut] = lesion_rgb
    img += rng.normal(0, 3, img.shape)
    lesion = np.zeros((size, size), bool)
    lesion[:, :cut] = True
    return np.clip(img, 0, 255).astype(np.uint8), np.ones((size, size), bool), lesion


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.85])
def test_reference_is_the_pigmented_skin_whatever_the_extent(fraction):
    img, skin, lesion = _two_tone(fraction)
    ref = skin_reference(img, skin)
    true_skin_l = float(np.median(rgb_to_lab(img[~lesion][:, None, :])[:, 0, 0]))
    assert abs(ref.lab[0] - true_skin_l) < 2.0, "the median would be the lesion at 85 %"
    rel = skin_relative_channels(img, skin, ref)
    assert np.median(rel[..., 0][lesion]) > 2.0  # ~ +55 L* on a 15-unit scale, clipped at 4
    assert abs(np.median(rel[..., 0][~lesion])) < 0.2


def test_channels_are_zero_outside_the_skin_and_input_has_eight_channels():
    img, skin, _ = _two_tone(0.3)
    skin[:, -20:] = False
    rel = skin_relative_channels(img, skin)
    assert rel.shape == (200, 200, N_RELATIVE_CHANNELS) and (rel[~skin] == 0).all()
    x = model_input(img, skin, skin_relative=True)
    assert x.shape == (3 + N_RELATIVE_CHANNELS, 200, 200) and x.dtype == torch.float32
    assert model_input(img, skin, skin_relative=False).shape == (3, 200, 200)


def test_colour_rule_finds_a_clear_lesion_and_always_splits_the_face():
    img, skin, lesion = _two_tone(0.4)
    pred = colour_rule_mask(img, skin)
    assert (pred == lesion).mean() > 0.99
    healthy, skin2, _ = _two_tone(0.0, seed=1)
    assert 0.2 < colour_rule_mask(healthy, skin2).mean() < 0.8, "the rule has no notion of 'no lesion'"


def test_otsu_threshold_between_two_modes():
    values = np.concatenate([np.full(100, 30.0), np.full(300, 80.0)])
    assert 30.0 <= otsu_threshold(values) < 80.0
