"""Paper metrics against hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest

from models.metrics import (Confusion, background_iou, confusion, dice, f1, f_vitiligo, iou, miou,
                            precision, recall, segmentation_metrics)

# 2x4 arrays: pred has 3 positives, truth 2; overlap 1 -> TP 1, FP 2, FN 1, TN 4
PRED = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
TRUTH = np.array([[1, 0, 0, 1], [0, 0, 0, 0]], bool)


def test_confusion_counts():
    assert confusion(PRED, TRUTH) == Confusion(tp=1, fp=2, fn=1, tn=4)


def test_metrics_by_hand():
    c = confusion(PRED, TRUTH)
    assert precision(c) == pytest.approx(1 / 3)
    assert recall(c) == pytest.approx(1 / 2)
    assert f1(c) == pytest.approx(2 * 1 / (2 * 1 + 2 + 1))  # 0.4
    assert dice(c) == f1(c)
    assert iou(c) == pytest.approx(1 / 4)
    assert background_iou(c) == pytest.approx(4 / 7)
    assert miou(c) == pytest.approx((1 / 4 + 4 / 7) / 2)


def test_region_restricts_the_pixels():
    region = np.array([[1, 1, 1, 0], [0, 0, 0, 0]], bool)  # drops the FN at (0,3) and FP at (1,0)
    c = confusion(PRED, TRUTH, region)
    assert c == Confusion(tp=1, fp=1, fn=0, tn=1)
    m = segmentation_metrics(PRED, TRUTH, region)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(1.0)


def test_empty_conventions():
    empty = np.zeros((2, 2), bool)
    c = confusion(empty, empty)
    assert f1(c) == 1.0 and iou(c) == 1.0 and precision(c) == 1.0 and recall(c) == 1.0
    missed = confusion(empty, np.eye(2, dtype=bool))
    assert precision(missed) == 0.0 and recall(missed) == 0.0 and f1(missed) == 0.0
    spurious = confusion(np.eye(2, dtype=bool), empty)
    assert precision(spurious) == 0.0 and recall(spurious) == 0.0


def test_shape_mismatch_raises():
    with pytest.raises(ValueError):
        confusion(np.zeros((2, 2)), np.zeros((2, 3)))


def test_f_vitiligo_percent_inside_skin():
    skin = np.zeros((4, 5), bool)
    skin[:, :4] = True  # 16 skin pixels
    lesion = np.zeros((4, 5), bool)
    lesion[0, :] = True  # 4 inside skin + 1 outside (ignored)
    assert f_vitiligo(lesion, skin) == pytest.approx(100 * 4 / 16)
    assert f_vitiligo(lesion, np.zeros_like(skin)) == 0.0
