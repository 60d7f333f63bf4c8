"""Skin prick step: wheal and erythema masks and prick-site marks of the whole photograph (U-Net).

The photograph is letterboxed once to the model's input size; the two masks come back at
full resolution (``models.prick.inference.upsample_masks``).
"""

from __future__ import annotations

from monai.deploy.core import Fragment

from .base import StepOperator
from .cases import PhotoCase


class SkinPrickSegmentationStep:
    step_name = "wheal/erythema segmentation"

    def __init__(self, segmenter) -> None:
        self.segmenter = segmenter

    def process(self, case: PhotoCase) -> None:
        pred = self.segmenter.predict_panel(case.photo.pixels)
        case.findings["prick_erythema"] = pred.erythema  # whole reaction, wheal included
        case.findings["prick_wheal"] = pred.wheal
        case.findings["prick_site_marks"] = pred.site_marks_xy  # evidence for the panel grid
        case.findings["prick_model_scale"] = pred.model_scale  # model pixels per photo pixel


class SkinPrickSegmentationOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, segmenter, **kwargs) -> None:
        super().__init__(fragment, *args, step=SkinPrickSegmentationStep(segmenter), **kwargs)
