"""Quality flags of a facial or close-up measurement (models.quality)."""
from __future__ import annotations

import cv2
import numpy as np

from models.quality import (CloseUpQualityConfig, QualityConfig, assess_closeup_quality, assess_quality,
                            load_closeup_quality_config, load_quality_config)


def _face(size=400, lesion_rgb=(240, 228, 218), skin_rgb=(120, 80, 55), lesion_fraction=0.3, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.float32)
    skin = np.zeros((size, size), np.uint8)
    cv2.ellipse(skin, (size // 2, size // 2), (size // 3, size // 2 - 10), 0, 0, 360, 1, -1)
    skin = skin.astype(bool)
    img[skin] = skin_rgb
    lesion = skin.copy()
    lesion[:, int(size * (0.5 - 0.33 + 0.66 * lesion_fraction)):] = False
    img[lesion] = lesion_rgb
    img += rng.normal(0, 2, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), skin, lesion


def _keys(report):
    return {f.key for f in report.flags}


def test_a_good_photograph_is_not_flagged():
    img, skin, lesion = _face()
    r = assess_quality((2000, 1600), (400, 400, 1200, 1400), 1, img, skin, lesion)
    assert not r.flagged, r.as_dict()


def test_several_faces_small_face_and_small_image_are_flagged_in_words():
    img, skin, lesion = _face()
    r = assess_quality((500, 400), (300, 300, 360, 380), 3, img, skin, lesion)
    assert _keys(r) >= {"several-faces", "face-small", "image-small"}
    text = " ".join(r.as_dict()["reasons"])
    assert "3 faces found" in text and "largest" in text


def test_low_contrast_lesions_are_flagged():
    img, skin, lesion = _face(lesion_rgb=(236, 210, 190), skin_rgb=(230, 203, 183))
    r = assess_quality((2000, 1600), (400, 400, 1200, 1400), 1, img, skin, lesion)
    assert "low-contrast" in _keys(r)


def test_model_missing_an_obvious_extensive_lesion_is_flagged():
    img, skin, lesion = _face(lesion_fraction=0.7)
    r = assess_quality((2000, 1600), (400, 400, 1200, 1400), 1, img, skin, np.zeros_like(lesion))
    assert "model-vs-colour-rule" in _keys(r)
    assert r.values["colour_rule_f_vitiligo"] > 50


def test_shipped_quality_config_loads_and_matches_the_defaults():
    assert load_quality_config() == QualityConfig()


# -- close-ups ------------------------------------------------------------------------------------------
def _closeup(background=(60, 70, 80), size=400):
    """A forearm band of dark skin with a milky patch, on a given background."""
    img, skin, lesion = _face(size=size)
    img[~skin] = background
    return img, skin, lesion


def test_a_close_up_on_a_dark_background_is_not_flagged():
    img, skin, lesion = _closeup()
    r = assess_closeup_quality(img, skin, lesion)
    assert not r.flagged, r.as_dict()
    assert 0.3 < r.values["skin_fraction"] < 0.7


def test_a_close_up_on_a_white_sheet_says_the_background_may_be_counted():
    img, skin, lesion = _closeup(background=(235, 232, 228))
    r = assess_closeup_quality(img, skin, lesion)
    assert "light-background" in _keys(r)
    assert "as light as the lesions" in " ".join(r.as_dict()["reasons"])


def test_little_skin_and_a_tiny_close_up_are_flagged():
    img, skin, lesion = _closeup(size=200)
    few = np.zeros_like(skin)
    few[90:100, 90:100] = True
    r = assess_closeup_quality(img, few, lesion & few)
    assert {"little-skin", "image-small"} <= _keys(r)


def test_every_close_up_flag_has_an_sr_code_and_the_shipped_config_is_the_default():
    from dicom.codes import QUALITY_FLAG_CODES

    assert load_closeup_quality_config() == CloseUpQualityConfig()
    assert {"little-skin", "light-background", "image-small", "low-contrast", "model-vs-colour-rule"} <= set(QUALITY_FLAG_CODES)
