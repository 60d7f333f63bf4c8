"""Step 3: face-skin mask at full resolution (FaceMesh; box-ellipse fallback for profiles),
refined along its edge where hair or background covers it (models.face_refine)."""

from __future__ import annotations

import dataclasses

import numpy as np
from monai.deploy.core import Fragment

from models.face import FaceSkinMasker
from models.face_refine import FaceSkinRefiner

from .base import StepOperator
from .cases import PhotoCase


class FaceSkinMaskStep:
    step_name = "face-skin mask"

    def __init__(self, masker: FaceSkinMasker | None = None, refiner: FaceSkinRefiner | None = None) -> None:
        self.masker = masker or FaceSkinMasker()
        self.refiner = refiner

    def process(self, case: PhotoCase) -> None:
        face = self.masker.mask(case.photo.pixels, case.findings.get("face_boxes"))
        if self.refiner is not None:
            x0, y0, x1, y1 = face.roi
            refined = self.refiner.refine(case.photo.pixels[y0:y1, x0:x1], face.skin_mask[y0:y1, x0:x1])
            if refined.hair_pixels or refined.background_pixels:
                mask = np.array(face.skin_mask, copy=True)
                mask[y0:y1, x0:x1] = refined.skin_mask
                face = dataclasses.replace(face, skin_mask=mask)
            case.summary["face_edge_refinement"] = {"hair_pixels_removed": refined.hair_pixels,
                                                    "background_pixels_removed": refined.background_pixels,
                                                    "applied": refined.applied}
        case.findings["face"] = face


class FaceSkinMaskOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, masker: FaceSkinMasker | None = None,
                 refiner: FaceSkinRefiner | None = None, **kwargs) -> None:
        super().__init__(fragment, *args, step=FaceSkinMaskStep(masker, refiner), **kwargs)
