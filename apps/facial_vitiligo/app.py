"""Facial vitiligo app: DICOM photographs in, DICOM SEG + TID 1500 SR (+ PNG previews) out.

    python -m apps.facial_vitiligo -i IN -o OUT [-m MODELS]

Pipeline: load photographs -> detect faces -> face-skin mask -> vitiligo segmentation
(DDRNet) -> F-Vitiligo -> quality flags -> comparison with earlier visits (IN/priors/,
change SEG) -> SEG -> SR -> overlay PNG -> results.json.

Which face to analyse when there are several, and the quality-flag thresholds, come from
``models/configs/facial_vitiligo_quality.yaml`` or the file named by
``DERMPACS_FACIAL_QUALITY_CONFIG``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path

from holoscan.conditions import CountCondition
from monai.deploy.core import Application

from apps import runtime
from operators.face_detection import FaceDetectionOperator
from operators.face_skin_mask import FaceSkinMaskOperator
from operators.facial_vitiligo_measurement import FacialVitiligoMeasurementOperator
from operators.lesion_segmentation import LesionSegmentationOperator
from operators.longitudinal_comparison import LongitudinalComparisonOperator
from operators.overlay_writer import OverlayWriterOperator
from operators.photo_loader import DicomPhotoLoaderOperator
from operators.quality_check import QualityCheckOperator
from operators.results_writer import ResultsWriterOperator
from operators.seg_writer import SegWriterOperator
from operators.sr_writer import SrWriterOperator

log = logging.getLogger("dermpacs")
APP_NAME = "facial vitiligo"
WEIGHTS_PATTERN = "facial_vitiligo*.pt"


SHIPPED_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "weights" / "facial_vitiligo_ddrnet23slim.pt"


def load_segmenter(model_path: str | None):
    """The segmenter for ``-m`` (or the shipped weights), loaded once per process."""
    from models.facial.inference import LesionSegmenter

    return runtime.load_model(LesionSegmenter.load, model_path, SHIPPED_WEIGHTS, WEIGHTS_PATTERN)


@functools.lru_cache(maxsize=1)
def face_masker():
    """RetinaFace + FaceMesh, built once per process (a service worker runs many jobs)."""
    from models.face import FaceSkinMasker

    return FaceSkinMasker()


@functools.lru_cache(maxsize=1)
def face_refiner():
    """Hair/background refinement of the oval's edge (selfie segmentation), once per process."""
    from models.face_refine import FaceSkinRefiner

    return FaceSkinRefiner()


class FacialVitiligoApp(Application):
    """A MONAI Deploy application; ``results`` holds the cases after ``run()``."""

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        input_folder, output_folder = Path(context.input_path), Path(context.output_path)
        segmenter = load_segmenter(context.model_path)
        algorithm = runtime.algorithm_identity(APP_NAME, segmenter)

        loader = DicomPhotoLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, name="photo_loader")
        from models.quality import load_quality_config

        quality_config = load_quality_config(os.environ.get("DERMPACS_FACIAL_QUALITY_CONFIG"))
        masker = face_masker()
        faces = FaceDetectionOperator(self, detector=masker.detector, face_rank=quality_config.face_rank,
                                      name="face_detection")
        refiner = face_refiner() if quality_config.refine_face_edge else None
        skin = FaceSkinMaskOperator(self, masker=masker, refiner=refiner, name="face_skin_mask")
        lesions = LesionSegmentationOperator(self, segmenter=segmenter, name="vitiligo_segmentation")
        measure = FacialVitiligoMeasurementOperator(self, name="f_vitiligo")
        quality = QualityCheckOperator(self, config=quality_config, name="quality_check")
        compare = LongitudinalComparisonOperator(
            self, input_folder=input_folder, output_folder=output_folder, algorithm=algorithm, masker=masker,
            name="comparison",
        )
        seg = SegWriterOperator(self, output_folder=output_folder, algorithm=algorithm, name="seg_writer")
        sr = SrWriterOperator(self, output_folder=output_folder, algorithm=algorithm, name="sr_writer")
        overlay = OverlayWriterOperator(self, output_folder=output_folder, name="overlay_writer")
        self.results = ResultsWriterOperator(
            self, output_folder=output_folder, app_name=APP_NAME, algorithm=algorithm,
            headline_key="f_vitiligo_percent", headline_label="F-Vitiligo %", name="results_writer",
        )
        pipeline = [loader, faces, skin, lesions, measure, quality, compare, seg, sr, overlay, self.results]
        runtime.chain(self, pipeline)


def main(argv: list[str] | None = None) -> int:
    return runtime.app_main(FacialVitiligoApp, argv)


if __name__ == "__main__":
    sys.exit(main())
