"""Skin prick step: wheal and erythema masks of the whole photograph (U-Net, models.prick).

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
        from models.prick.inference import upsample_masks

        labels, info = self.segmenter.predict_boxed(case.photo.pixels)
        erythema, wheal = upsample_masks(labels, case.photo.pixels.shape[:2])
        case.findings["prick_erythema"] = erythema  # whole reaction, wheal included
        case.findings["prick_wheal"] = wheal
        case.findings["prick_model_scale"] = float(info.scale)  # model pixels per photo pixel


class SkinPrickSegmentationOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, segmenter, **kwargs) -> None:
        super().__init__(fragment, *args, step=SkinPrickSegmentationStep(segmenter), **kwargs)
