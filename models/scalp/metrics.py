"""Scalp grading metrics as defined in SEEDS.md D (plain numpy).

- per indicator l: macro-F1_l = mean over grades k of F1_k = 2TP/(2TP+FP+FN). A grade
  that occurs neither in the truth nor in the predictions of that indicator has no F1
  (0/0) and is left out of the mean (scikit-learn's ``f1_score(average="macro")``
  convention); a grade in one of them only scores 0.
- overall macro-F1 = mean of the six macro-F1_l.
- Hamming accuracy = fraction of (image, indicator) pairs whose grade is exactly right.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_grades: int = 4) -> np.ndarray:
    """(K, K) counts, rows = true grade, columns = predicted grade."""
    t = np.asarray(truth, dtype=np.int64).ravel()
    p = np.asarray(pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"shape mismatch {t.shape} vs {p.shape}")
    if t.size and (t.min() < 0 or p.min() < 0 or t.max() >= num_grades or p.max() >= num_grades):
        raise ValueError(f"grades must be 0..{num_grades - 1}")
    return np.bincount(t * num_grades + p, minlength=num_grades * num_grades).reshape(num_grades, num_grades)


def per_grade_f1(cm: np.ndarray) -> np.ndarray:
    """F1 per grade from a confusion matrix; NaN where the grade is in neither truth nor prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    den = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)


def macro_f1(truth: np.ndarray, pred: np.ndarray, num_grades: int = 4) -> float:
    f = per_grade_f1(confusion_matrix(truth, pred, num_grades))
    return float(np.nanmean(f)) if np.isfinite(f).any() else float("nan")


def hamming_accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    t, p = np.asarray(truth), np.asarray(pred)
    if t.shape != p.shape:
        raise ValueError(f"shape mismatch {t.shape} vs {p.shape}")
    return float((t == p).mean())


def scalp_metrics(truth: np.ndarray, pred: np.ndarray, indicators: tuple[str, ...], num_grades: int = 4) -> dict:
    """All metrics for (N, L) grade arrays: per-indicator macro-F1 + confusion, overall, Hamming."""
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    per = {}
    for l, name in enumerate(indicators):
        cm = confusion_matrix(truth[:, l], pred[:, l], num_grades)
        f = per_grade_f1(cm)
        per[name] = {
            "macro_f1": float(np.nanmean(f)) if np.isfinite(f).any() else float("nan"),
            "f1_per_grade": [None if np.isnan(v) else float(v) for v in f],
            "accuracy": float((truth[:, l] == pred[:, l]).mean()) if len(truth) else float("nan"),
            "confusion_matrix": cm.tolist(),
            "support": np.bincount(truth[:, l], minlength=num_grades).tolist(),
        }
    return {
        "overall_macro_f1": float(np.mean([v["macro_f1"] for v in per.values()])),
        "hamming_accuracy": hamming_accuracy(truth, pred),
        "n_images": int(len(truth)),
        "per_indicator": per,
    }
