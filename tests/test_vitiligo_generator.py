"""Generator v2: what vitiligo looks like when photographed (models.facial.vitiligo_generator)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.skin_reference import rgb_to_lab
from models.facial.synthetic import sample_rng
from models.facial.vitiligo_generator import (SKIN_TYPE_WEIGHTS, extent_bin, extent_weights, generate_face_sample,
                                       sample_fitzpatrick, skin_type_of)


def _median_lab(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.median(rgb_to_lab(image[mask][:, None, :])[:, 0, :], axis=0)


@pytest.mark.parametrize("source", ["synthetic", "astronaut", "grace_hopper"])
@pytest.mark.parametrize("extent", [0.0, 0.02, 0.3, 0.8, 0.95])
def test_truth_covers_the_requested_extent(source, extent):
    s = generate_face_sample(sample_rng(3, int(extent * 100)), 256, uv=False, source=source, fitz=5.5,
                             extent=extent)
    measured = s.lesion_mask.sum() / s.skin_mask.sum()
    assert not (s.lesion_mask & ~s.skin_mask).any()
    # confetti macules can add a little on top of the thresholded field
    assert extent - 0.01 <= measured <= extent + 0.04, (source, extent, measured)


def test_lesion_colour_is_the_same_on_fair_and_dark_skin():
    """Milky white whatever the base skin: lesion L* differs little between types I and VI
    while the pigmented skin differs a lot."""
    lesion_l, skin_l = {}, {}
    for fitz in (1.2, 6.0):
        ls, ss = [], []
        for i in range(4):
            s = generate_face_sample(sample_rng(21, i), 256, uv=False, source="synthetic", fitz=fitz, extent=0.4)
            normal = s.skin_mask & ~cv2.dilate(s.lesion_mask.astype(np.uint8), np.ones((7, 7))).astype(bool)
            ls.append(_median_lab(s.image, s.lesion_mask)[0])
            ss.append(_median_lab(s.image, normal)[0])
        lesion_l[fitz], skin_l[fitz] = np.median(ls), np.median(ss)
    assert skin_l[1.2] - skin_l[6.0] > 40
    assert abs(lesion_l[1.2] - lesion_l[6.0]) < 15
    assert lesion_l[6.0] - skin_l[6.0] > 35  # high contrast on dark skin
    assert lesion_l[1.2] - skin_l[1.2] < 20  # low contrast on fair skin


def test_near_total_depigmentation_leaves_pigmented_islands():
    skin = np.zeros((300, 240), bool)
    cv2.ellipse(skin.view(np.uint8), (120, 150), (100, 130), 0, 0, 360, 1, -1)
    label, _colour = extent_weights(skin, sample_rng(4, 0), 0.92, midline_x=120.0)
    lesion = (label >= 0.5) & skin
    islands = skin & ~lesion
    n, _ = cv2.connectedComponents(islands.astype(np.uint8))
    assert 0.88 <= lesion.sum() / skin.sum() <= 0.96
    assert n - 1 >= 2, "residual pigment should form islands, not one rim"


def test_skin_types_weighted_towards_v_and_vi():
    rng = np.random.default_rng(0)
    types = np.array([skin_type_of(sample_fitzpatrick(rng)) for _ in range(3000)])
    shares = np.bincount(types, minlength=7)[1:] / types.size
    assert set(types) == {1, 2, 3, 4, 5, 6}
    expected = SKIN_TYPE_WEIGHTS / SKIN_TYPE_WEIGHTS.sum()
    assert np.abs(shares - expected).max() < 0.03
    assert shares[4] + shares[5] > 0.45


def test_portraits_are_recoloured_across_skin_types():
    light = generate_face_sample(sample_rng(8, 0), 256, uv=False, source="astronaut", fitz=1.2, extent=0.0)
    dark = generate_face_sample(sample_rng(8, 0), 256, uv=False, source="astronaut", fitz=6.0, extent=0.0)
    assert _median_lab(light.image, light.skin_mask)[0] - _median_lab(dark.image, dark.skin_mask)[0] > 30
    assert light.meta["skin_type"] == 1 and dark.meta["skin_type"] == 6


def test_v2_samples_are_deterministic():
    a = generate_face_sample(sample_rng(9, 2), 200)
    b = generate_face_sample(sample_rng(9, 2), 200)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.lesion_mask, b.lesion_mask)


def test_extent_bins():
    assert [extent_bin(p) for p in (0.0, 4.9, 5.0, 30.0, 60.0, 99.0)] == \
        ["0-5%", "0-5%", "5-25%", "25-50%", "50-95%", "50-95%"]
