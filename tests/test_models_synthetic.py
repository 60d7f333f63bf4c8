"""Synthetic generator and paint_depigmentation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.facial.data import letterbox, letterbox_geometry, letterbox_mask
from models.facial.synthetic import (depigmentation_weight, generate_sample, paint_depigmentation, render_face,
                              sample_rng)


def test_generator_is_deterministic_by_seed():
    a = generate_sample(sample_rng(5, 3), 160, astronaut_fraction=0.0)
    b = generate_sample(sample_rng(5, 3), 160, astronaut_fraction=0.0)
    c = generate_sample(sample_rng(5, 4), 160, astronaut_fraction=0.0)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.lesion_mask, b.lesion_mask)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("uv", [False, True])
def test_sample_form_lesion_inside_skin_and_zero_background(uv):
    for i in range(4):
        s = render_face(192, 150, sample_rng(11, i), uv=uv, lesion_prob=1.0)
        assert s.image.dtype == np.uint8 and s.image.shape == (192, 150, 3)
        assert s.skin_mask.any() and s.lesion_mask.any()
        assert not (s.lesion_mask & ~s.skin_mask).any()
        assert (s.image[~s.skin_mask] == 0).all()


def test_depigmented_pixels_are_lighter_in_both_renderings():
    for uv in (False, True):
        s = render_face(256, 200, sample_rng(2, 0), uv=uv, fitzpatrick=4.0, lesion_prob=1.0,
                        painted_lesions=False)
        lum = s.image.astype(float).mean(axis=2)
        normal = s.skin_mask & ~cv2.dilate(s.lesion_mask.astype(np.uint8), np.ones((9, 9))).astype(bool)
        assert np.median(lum[s.lesion_mask]) > np.median(lum[normal]) + 25


def test_uv_rendering_differs_and_is_blue_violet():
    vis = render_face(192, 160, sample_rng(3, 1), uv=False)
    uv = render_face(192, 160, sample_rng(3, 1), uv=True)
    assert np.array_equal(vis.skin_mask, uv.skin_mask)  # same face, other light
    assert not np.array_equal(vis.image, uv.image)
    skin = uv.skin_mask & ~uv.lesion_mask
    mean_uv = uv.image[skin].mean(axis=0)
    mean_vis = vis.image[skin].mean(axis=0)
    assert mean_uv[2] > mean_uv[0] and mean_uv[2] > mean_uv[1]  # blue dominates under Wood's lamp
    assert mean_vis[0] > mean_vis[2]  # red dominates in visible light


def test_weight_threshold_defines_the_mask_and_borders_are_soft():
    region = np.zeros((200, 200), bool)
    cv2.ellipse(region.view(np.uint8), (100, 100), (80, 90), 0, 0, 360, 1, -1)
    w = depigmentation_weight(region, sample_rng(0, 0), n_patches=3)
    assert w.max() <= 1.0 and w.min() >= 0.0
    assert (w[~region] == 0).all()
    assert ((w > 0.05) & (w < 0.95)).sum() > 50  # a blended border exists


def _astronaut_face():
    from skimage import data

    img = data.astronaut()[60:190, 160:280].copy()
    skin = np.zeros(img.shape[:2], np.uint8)
    cv2.ellipse(skin, (62, 60), (42, 50), 0, 0, 360, 1, -1)
    return img, skin.astype(bool)


def test_paint_depigmentation_changes_only_pixels_near_the_mask():
    img, skin = _astronaut_face()
    out, lesion = paint_depigmentation(img, skin, np.random.default_rng(1), n_patches=2)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert lesion.any() and not (lesion & ~skin).any()
    changed = (out != img).any(axis=2)
    assert changed.any()
    near = cv2.dilate(lesion.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
    assert not (changed & ~near).any()  # soft border only around the patches
    assert not (changed & ~skin).any()
    lum_before = img.astype(float).mean(axis=2)[lesion].mean()
    lum_after = out.astype(float).mean(axis=2)[lesion].mean()
    assert lum_after > lum_before + 15  # depigmented: lighter
    ratio = out[lesion].astype(float).mean(axis=0)
    assert ratio[0] >= ratio[2]  # pinker-white, not blue
    # texture kept: the painted area is not flat
    assert out[lesion].astype(float).mean(axis=1).std() > 2.0


def test_paint_is_seeded_and_validates_input():
    img, skin = _astronaut_face()
    a = paint_depigmentation(img, skin, np.random.default_rng(9))
    b = paint_depigmentation(img, skin, np.random.default_rng(9))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    with pytest.raises(ValueError):
        paint_depigmentation(img.astype(np.float32), skin, np.random.default_rng(0))
    with pytest.raises(ValueError):
        paint_depigmentation(img, skin[:-1], np.random.default_rng(0))


def test_letterbox_keeps_aspect_and_pads_with_zero():
    img = np.full((300, 150, 3), 200, np.uint8)
    boxed, info = letterbox(img, 96)
    assert boxed.shape == (96, 96, 3)
    assert (info.h, info.w) == (96, 48) and (info.y0, info.x0) == (0, 24)
    assert (boxed[:, :24] == 0).all() and (boxed[:, 72:] == 0).all() and (boxed[:, 24:72] == 200).all()
    assert letterbox_geometry(100, 100, 50).scale == 0.5
    m = np.zeros((300, 150), bool)
    m[:150] = True
    assert letterbox_mask(m, 96)[:48, 24:72].all() and not letterbox_mask(m, 96)[48:].any()
