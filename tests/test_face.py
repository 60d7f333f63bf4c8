"""Face box and face-skin mask on a real face photograph (scikit-image's astronaut)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from apps.demo_study import astronaut_portrait
from models.face import FaceMaskMethod, NoFaceFoundError, View, estimate_view


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return astronaut_portrait(708, 1060)


def test_facemesh_mask_covers_skin_and_excludes_eyes_and_mouth(face_masker, portrait):
    result = face_masker.mask(portrait)
    assert result.method is FaceMaskMethod.FACEMESH
    assert result.faces_found == 1
    mask = result.skin_mask
    assert mask.shape == portrait.shape[:2] and mask.dtype == bool
    right_eye, left_eye, nose, mouth_r, mouth_l = result.box.landmarks.round().astype(int)
    for x, y in (right_eye, left_eye):
        assert not mask[y, x], "an eye is inside the skin mask"
    mouth = ((mouth_r + mouth_l) / 2).round().astype(int)
    assert not mask[mouth[1], mouth[0]], "the mouth is inside the skin mask"
    # Cheeks (below the eyes, beside the nose) and the nose tip are skin.
    for x, y in (nose, (right_eye + (0, 60)), (left_eye + (0, 60))):
        assert mask[int(y), int(x)]
    # The mask lies inside its outline's bounding box and fills most of the detector box.
    x0, y0, x1, y1 = result.roi
    assert mask[y0:y1, x0:x1].sum() == mask.sum()
    box = result.box
    assert 0.4 < mask[box.y0 : box.y1, box.x0 : box.x1].mean() < 0.95


def test_mask_is_computed_at_full_resolution(face_masker, portrait):
    """Doubling the photograph doubles the outline: no low-resolution mask upsampled."""
    small = face_masker.mask(portrait)
    big = face_masker.mask(cv2.resize(portrait, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    assert big.skin_mask.shape == (2 * portrait.shape[0], 2 * portrait.shape[1])
    ratio = big.skin_mask.sum() / small.skin_mask.sum()
    assert 3.6 < ratio < 4.4
    assert np.allclose(big.outline_xy / 2, small.outline_xy, atol=6)


def test_foreshortened_face_falls_back_to_the_box_ellipse(face_masker, portrait):
    """A face squeezed to a third of its width (a stand-in for a profile) defeats FaceMesh."""
    squeezed = cv2.resize(portrait, (int(portrait.shape[1] * 0.35), portrait.shape[0]))
    canvas = np.full_like(portrait, 200)
    canvas[:, : squeezed.shape[1]] = squeezed
    result = face_masker.mask(canvas)
    assert result.method is FaceMaskMethod.BOX_ELLIPSE
    box = result.box
    inside = result.skin_mask[box.y0 : box.y1, box.x0 : box.x1].sum()
    assert inside > 0.4 * box.area and inside >= 0.95 * result.skin_mask.sum()
    for x, y in box.landmarks[:2].round().astype(int):
        assert not result.skin_mask[y, x]


def test_no_face_raises_a_clear_error(face_masker):
    from skimage import data

    with pytest.raises(NoFaceFoundError, match="no face"):
        face_masker.mask(np.ascontiguousarray(data.coffee()))


def test_several_faces_the_largest_is_analysed(face_masker, portrait, caplog):
    canvas = np.full((1060, 1500, 3), 200, np.uint8)
    canvas[:, :708] = portrait
    small = cv2.resize(portrait, (354, 530))
    canvas[200:730, 1000:1354] = small
    with caplog.at_level("DEBUG"):
        result = face_masker.mask(canvas)
    assert result.faces_found == 2
    assert result.box.x1 < 708, "the smaller face was analysed"
    assert "largest" in caplog.text


@pytest.mark.parametrize(
    ("nose_x", "view"), [(-30.0, View.LEFT), (0.0, View.FRONTAL), (30.0, View.RIGHT)]
)
def test_view_from_the_nose_offset(nose_x, view):
    landmarks = np.array([[-40, 0], [40, 0], [nose_x, 40], [-30, 80], [30, 80]], dtype=float) + 500
    assert estimate_view(landmarks) is view


def test_features_cut_out_box_by_box_equal_one_dilation_of_the_whole_face():
    """The eyes, brows and lips are dilated each in its own box (speed); the mask must be
    the one a dilation of the whole face's raster gives, pixel for pixel."""
    import types

    from models.face import FaceSkinMasker

    rng = np.random.default_rng(3)
    t = np.linspace(0, 2 * np.pi, 60, endpoint=False)
    outline = np.stack([600 + 420 * np.cos(t), 700 + 560 * np.sin(t)], 1) + rng.normal(0, 0.3, (60, 2))
    features = [np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1) + rng.uniform(-0.5, 0.5, (60, 2))
                for cx, cy, rx, ry in ((450, 560, 90, 40), (750, 560, 90, 40), (600, 980, 150, 60), (590, 300, 60, 30))]
    box = types.SimpleNamespace(x0=180, y0=140, x1=1020, y1=1260)
    me = types.SimpleNamespace(feature_margin=0.015)
    mask, (x0, y0, x1, y1) = FaceSkinMasker._rasterise(me, outline, features, 1300, 1500, box)

    ref = np.zeros((1500, 1300), np.uint8)
    roi = ref[y0:y1, x0:x1]

    def fixed(poly):
        return np.round((poly - (x0, y0)) * 16).astype(np.int32).reshape(-1, 1, 2)

    cv2.fillPoly(roi, [fixed(outline)], 1, lineType=cv2.LINE_8, shift=4)
    holes = np.zeros_like(roi)
    cv2.fillPoly(holes, [fixed(f) for f in features], 1, lineType=cv2.LINE_8, shift=4)
    margin = max(1, int(round(0.015 * (box.y1 - box.y0))))
    holes = cv2.dilate(holes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1)))
    roi[holes.astype(bool)] = 0
    assert np.array_equal(mask, ref.astype(bool))
    assert 0 < mask.sum() < cv2.contourArea(outline.astype(np.float32))
