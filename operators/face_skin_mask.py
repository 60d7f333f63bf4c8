"""Step 3: face-skin mask at full resolution (FaceMesh; box-ellipse fallback for profiles)."""

from __future__ import annotations

from monai.deploy.core import Fragment

from models.face import FaceSkinMasker

from .base import StepOperator
from .cases import PhotoCase


class FaceSkinMaskStep:
    step_name = "face-skin mask"

    def __init__(self, masker: FaceSkinMasker | None = None) -> None:
        self.masker = masker or FaceSkinMasker()

    def process(self, case: PhotoCase) -> None:
        case.findings["face"] = self.masker.mask(case.photo.pixels, case.findings.get("face_boxes"))


class FaceSkinMaskOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, masker: FaceSkinMasker | None = None, **kwargs) -> None:
        super().__init__(fragment, *args, step=FaceSkinMaskStep(masker), **kwargs)
