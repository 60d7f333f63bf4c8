"""Close-up vitiligo: visible-skin region and lesion segmentation in one network pass.

The facial app's ``LesionSegmentationStep`` works inside a face ROI found by geometry
(``findings["face"]``); a close-up of any body site has no such geometry, so here the
network itself has a skin class: visible skin = skin or vitiligo (never a colour
threshold, so depigmented skin stays in the denominator). Fills ``findings["skin_mask"]``
and ``findings["lesion_mask"]`` (bool, full resolution, lesion inside skin).
"""

from __future__ import annotations

import numpy as np
from monai.deploy.core import Fragment

from .base import ExpectedFailure, StepOperator
from .cases import PhotoCase


class CloseUpSegmentationStep:
    step_name = "skin and vitiligo segmentation"

    def __init__(self, segmenter, threshold: float = 0.5, min_skin_fraction: float = 0.02) -> None:
        self.segmenter = segmenter
        self.threshold = threshold
        self.min_skin_fraction = min_skin_fraction

    def process(self, case: PhotoCase) -> None:
        skin, lesion = self.segmenter.predict(case.photo.pixels, self.threshold)
        if np.count_nonzero(skin) < self.min_skin_fraction * skin.size:
            raise ExpectedFailure(
                f"no skin found: visible skin covers less than {100 * self.min_skin_fraction:.0f}% of the image"
            )
        case.findings["skin_mask"] = skin
        case.findings["lesion_mask"] = lesion & skin


class CloseUpSegmentationOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, segmenter, threshold: float = 0.5, **kwargs) -> None:
        super().__init__(fragment, *args, step=CloseUpSegmentationStep(segmenter, threshold), **kwargs)
