"""The third, independent prick-test painter: the spec its truth promises (sizes, ratios, labels)."""
import numpy as np
import pytest

from models.prick.third_painter import paint_arm


@pytest.mark.parametrize("index,size", [(0, (384, 512)), (1, (512, 384)), (2, (768, 1024)), (3, (1200, 1600))])
def test_arm_truth_follows_the_spec(index: int, size: tuple[int, int]) -> None:
    arm = paint_arm(11, index, size)
    assert arm.image.shape == size + (3,) and arm.image.dtype == np.uint8
    assert arm.label.shape == size and arm.label.dtype == np.uint8 and set(np.unique(arm.label)) == {0, 1, 2}
    assert 1 <= arm.fitzpatrick <= 6 and arm.background and arm.px_per_mm > 1.5
    wheals = sorted(s[2] for s in arm.sites)
    assert len(arm.sites) == 6 and 7.6 <= wheals[-1] <= 12.2 and 1.7 <= wheals[0] and wheals[-2] <= 4.8
    for x, y, wheal, flare in arm.sites:
        assert 0.04 <= (wheal / flare) ** 2 <= 0.09 and flare <= 40.5
        assert arm.label[int(round(y)), int(round(x))] == 2       # the puncture lies in its wheal
    # the label's flare u wheal holds at least the largest site's own flare u wheal
    largest = max(s[3] for s in arm.sites)
    assert (arm.label > 0).sum() >= 0.99 * np.pi * (largest * arm.px_per_mm / 2) ** 2


def test_deterministic_and_fitzpatrick() -> None:
    a, b = paint_arm(5, 7, (384, 512)), paint_arm(5, 7, (384, 512))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label) and a.sites == b.sites
    assert not np.array_equal(a.image, paint_arm(5, 8, (384, 512)).image)
    assert paint_arm(5, 7, (384, 512), fitzpatrick=6).fitzpatrick == 6
