"""Step 4: lesion segmentation inside the face-skin ROI (DDRNet for facial vitiligo)."""

from __future__ import annotations

import numpy as np
from monai.deploy.core import Fragment

from .base import StepOperator
from .cases import PhotoCase


class LesionSegmentationStep:
    """Runs the segmenter on the masked ROI; the lesion mask never leaves the skin mask."""

    step_name = "lesion segmentation"

    def __init__(self, segmenter, threshold: float = 0.5) -> None:
        self.segmenter = segmenter
        self.threshold = threshold

    def process(self, case: PhotoCase) -> None:
        face = case.findings["face"]
        x0, y0, x1, y1 = face.roi
        roi_mask = face.skin_mask[y0:y1, x0:x1]
        probability = self.segmenter.predict(case.photo.pixels[y0:y1, x0:x1], roi_mask)
        case.findings["lesion_roi"] = (probability >= self.threshold) & roi_mask


class LesionSegmentationOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, segmenter, threshold: float = 0.5, **kwargs) -> None:
        super().__init__(fragment, *args, step=LesionSegmentationStep(segmenter, threshold), **kwargs)


def full_resolution(roi_mask: np.ndarray, roi: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """Place an ROI mask into a full-size boolean image."""
    x0, y0, x1, y1 = roi
    full = np.zeros(shape, dtype=bool)
    full[y0:y1, x0:x1] = roi_mask
    return full
