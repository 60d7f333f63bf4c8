"""Face-edge refinement: hair over the oval's edge leaves the denominator, depigmented skin never does."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from models.face_refine import FaceSkinRefiner
from models.skin_reference import rgb_to_lab
from models.facial.synthetic import face_roi, paint_depigmentation
from models.facial.vitiligo_generator import portrait, recolour_skin


def _forehead_case(fitz: float):
    """Astronaut face ROI x3, recoloured, a lesion painted at the hairline and dark strands drawn
    from above the oval into it."""
    img, skin = portrait("astronaut")
    y0, y1, x0, x1 = face_roi(skin, 1.3)
    roi = cv2.resize(img[y0:y1, x0:x1], None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    rs = cv2.resize(skin[y0:y1, x0:x1].astype(np.uint8), None, fx=3, fy=3,
                    interpolation=cv2.INTER_NEAREST).astype(bool)
    rng = np.random.default_rng(0)
    roi = recolour_skin(roi, rs, fitz, rng)
    ys, xs = np.nonzero(rs)
    top, cx = ys.min(), int(xs.mean())
    weight = np.zeros(rs.shape, np.float32)
    cv2.circle(weight, (cx + 45, top + 30), 45, 1.0, -1)
    painted, lesion = paint_depigmentation(roi, rs, rng, weight=weight * rs, exposure=1.0,
                                           target_rgb=np.array([245, 232, 222], np.float32))
    strands = np.zeros(rs.shape, np.uint8)
    for k in range(18):
        x = cx - 120 + k * 6
        cv2.line(strands, (x, top - 15), (x + 20, top + 60), 1, 2)
    hair = strands.astype(bool) & rs & ~lesion
    painted[hair] = (25, 18, 14)
    return painted, rs, lesion, hair


@pytest.mark.parametrize("fitz", [1.5, 4.0, 6.0])
def test_hair_strands_leave_the_mask_and_the_lesion_stays(fitz):
    image, skin, lesion, hair = _forehead_case(fitz)
    refined = FaceSkinRefiner().refine(image, skin)
    assert refined.applied
    assert (hair & ~refined.skin_mask).sum() >= 0.6 * hair.sum()
    removed = skin & ~refined.skin_mask
    assert not (removed & lesion & (rgb_to_lab(image)[..., 0] > 70)).any(), "a light lesion pixel was cut"
    # the painted disc overlaps the astronaut's own fringe: those (dark) pixels may go
    assert (lesion & refined.skin_mask).sum() >= 0.9 * lesion.sum()
    assert removed.sum() < 0.15 * skin.sum()


def test_a_bare_face_keeps_its_geometric_mask_almost_whole():
    img, skin = portrait("grace_hopper")
    y0, y1, x0, x1 = face_roi(skin, 1.3)
    refined = FaceSkinRefiner().refine(img[y0:y1, x0:x1], skin[y0:y1, x0:x1])
    kept = refined.skin_mask.sum() / skin[y0:y1, x0:x1].sum()
    assert kept > 0.85
