"""Step 2: find faces (RetinaFace on a downscaled copy, boxes at full resolution)."""

from __future__ import annotations

import logging

from monai.deploy.core import Fragment

from models.face import FaceDetector, NoFaceFoundError

from .base import StepOperator
from .cases import PhotoCase

log = logging.getLogger("dermpacs")


class FaceDetectionStep:
    step_name = "face detection"

    def __init__(self, detector: FaceDetector | None = None, face_rank: int = 0) -> None:
        self.detector = detector or FaceDetector()
        self.face_rank = face_rank  # 0 = largest (models.quality.QualityConfig.face_rank)

    def process(self, case: PhotoCase) -> None:
        boxes = self.detector.detect(case.photo.pixels)
        if not boxes:
            raise NoFaceFoundError("no face found in the photograph")
        if len(boxes) > 1:
            rank = min(self.face_rank, len(boxes) - 1)
            log.warning("%s: %d faces found; analysing face %d by size (1 = largest)", case.label(), len(boxes),
                        rank + 1)
            # The mask step analyses the first box: put the configured one first.
            boxes = [boxes[rank], *boxes[:rank], *boxes[rank + 1:]]
        case.findings["face_boxes"] = boxes


class FaceDetectionOperator(StepOperator):
    def __init__(self, fragment: Fragment, *args, detector: FaceDetector | None = None, face_rank: int = 0,
                 **kwargs) -> None:
        super().__init__(fragment, *args, step=FaceDetectionStep(detector, face_rank), **kwargs)
