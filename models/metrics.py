"""Segmentation metrics of the facial-vitiligo paper as plain numpy functions.

All metrics are computed over the face-skin region when a ``region`` mask is given
(the paper evaluates inside the face mask); pixels outside it are ignored. Conventions
for empty sets are explicit: if both prediction and truth are empty, F1/Dice/IoU/precision/
recall are 1.0 (a perfect "no lesion" answer), which keeps per-image means meaningful on
lesion-free photographs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: "Confusion") -> "Confusion":
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)


def confusion(pred: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None) -> Confusion:
    """Pixel confusion counts of binary masks, restricted to ``region`` if given."""
    p = np.asarray(pred, dtype=bool)
    t = np.asarray(truth, dtype=bool)
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch {p.shape} vs {t.shape}")
    if region is not None:
        r = np.asarray(region, dtype=bool)
        p, t = p[r], t[r]
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    tn = int(p.size - tp - fp - fn)
    return Confusion(tp, fp, fn, tn)


def _ratio(num: int, den: int) -> float:
    return 1.0 if den == 0 else num / den


def precision(c: Confusion) -> float:
    """TP / (TP + FP); nothing predicted: 1.0 if there was nothing to find, else 0.0."""
    if c.tp + c.fp == 0:
        return 1.0 if c.fn == 0 else 0.0
    return c.tp / (c.tp + c.fp)


def recall(c: Confusion) -> float:
    """TP / (TP + FN); nothing to find: 1.0 if nothing was predicted, else 0.0."""
    if c.tp + c.fn == 0:
        return 1.0 if c.fp == 0 else 0.0
    return c.tp / (c.tp + c.fn)


def f1(c: Confusion) -> float:
    """F1 = 2TP / (2TP + FP + FN); identical to Dice for binary masks."""
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def dice(c: Confusion) -> float:
    return f1(c)


def iou(c: Confusion) -> float:
    """Lesion IoU = TP / (TP + FP + FN)."""
    return _ratio(c.tp, c.tp + c.fp + c.fn)


def background_iou(c: Confusion) -> float:
    """IoU of the non-lesion class = TN / (TN + FP + FN)."""
    return _ratio(c.tn, c.tn + c.fp + c.fn)


def miou(c: Confusion) -> float:
    """Mean of lesion IoU and background IoU (the paper's mIoU, over the face)."""
    return 0.5 * (iou(c) + background_iou(c))


def f_vitiligo(lesion_mask: np.ndarray, skin_mask: np.ndarray) -> float:
    """F-Vitiligo in percent: vitiligo pixels inside the skin mask / skin pixels x 100."""
    skin = np.asarray(skin_mask, dtype=bool)
    n_skin = int(np.count_nonzero(skin))
    if n_skin == 0:
        return 0.0
    lesion = np.asarray(lesion_mask, dtype=bool)
    return 100.0 * int(np.count_nonzero(lesion & skin)) / n_skin


def segmentation_metrics(pred: np.ndarray, truth: np.ndarray,
                         region: np.ndarray | None = None) -> dict[str, float]:
    """All paper metrics (fractions in [0,1]) for one image or pooled confusion."""
    return metrics_from_confusion(confusion(pred, truth, region))


def metrics_from_confusion(c: Confusion) -> dict[str, float]:
    return {"f1": f1(c), "iou": iou(c), "miou": miou(c), "dice": dice(c),
            "precision": precision(c), "recall": recall(c)}


def spearman(x: "np.ndarray | list[float]", y: "np.ndarray | list[float]") -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant
    or fewer than 3 pairs (a rank correlation of 2 points says nothing)."""
    from scipy.stats import rankdata

    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    return float(np.corrcoef(ra, rb)[0, 1])
