"""Vitiligo close-up app: DICOM close-up skin photographs in, DICOM SEG + TID 1500 SR out.

    python -m apps.vitiligo_lesion -i IN -o OUT [-m MODELS]

Pipeline: load photographs -> skin + vitiligo segmentation (U-Net/DeepLabv3, one pass)
-> lesion area % of visible skin, lesion count, RGB difference and CIEDE2000 against the
surrounding skin -> quality flags (``models/configs/vitiligo_lesion_quality.yaml`` or the
file named by DERMPACS_CLOSEUP_QUALITY_CONFIG) -> SEG -> SR -> overlay PNG -> results.json. The service routes every
photograph that is not a face, scalp or skin prick test here.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from holoscan.conditions import CountCondition
from monai.deploy.core import Application

from apps import runtime
from operators.closeup_segmentation import CloseUpSegmentationOperator
from operators.longitudinal_sites import SiteComparisonOperator
from operators.overlay_writer import OverlayWriterOperator
from operators.photo_loader import DicomPhotoLoaderOperator
from operators.quality_check import CloseUpQualityCheckOperator
from operators.results_writer import ResultsWriterOperator
from operators.seg_writer import SegWriterOperator
from operators.sr_writer import SrWriterOperator
from operators.vitiligo_severity import VitiligoSeverityOperator

log = logging.getLogger("dermpacs")
APP_NAME = "vitiligo close-up"
WEIGHTS_PATTERN = "vitiligo_lesion*.pt"
SHIPPED_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "weights" / "vitiligo_lesion_unet_mobilenetv3.pt"


def load_segmenter(model_path: str | None):
    """The segmenter for ``-m`` (or the shipped weights), loaded once per process."""
    from models.lesion.inference import CloseUpSegmenter

    return runtime.load_model(CloseUpSegmenter.load, model_path, SHIPPED_WEIGHTS, WEIGHTS_PATTERN)


class VitiligoLesionApp(Application):
    """A MONAI Deploy application; ``results`` holds the cases after ``run()``."""

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        input_folder, output_folder = Path(context.input_path), Path(context.output_path)
        segmenter = load_segmenter(context.model_path)
        algorithm = runtime.algorithm_identity(APP_NAME, segmenter)

        loader = DicomPhotoLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, name="photo_loader")
        segment = CloseUpSegmentationOperator(self, segmenter=segmenter, name="skin_vitiligo_segmentation")
        severity = VitiligoSeverityOperator(self, name="vitiligo_severity")
        from models.quality import load_closeup_quality_config

        quality = CloseUpQualityCheckOperator(
            self, config=load_closeup_quality_config(os.environ.get("DERMPACS_CLOSEUP_QUALITY_CONFIG")),
            name="quality_check")
        seg = SegWriterOperator(self, output_folder=output_folder, algorithm=algorithm, name="seg_writer")
        sr = SrWriterOperator(self, output_folder=output_folder, algorithm=algorithm, name="sr_writer")
        overlay = OverlayWriterOperator(self, output_folder=output_folder, name="overlay_writer")
        self.results = ResultsWriterOperator(
            self, output_folder=output_folder, app_name=APP_NAME, algorithm=algorithm,
            headline_key="lesion_percent_of_skin", headline_label="vitiligo % of visible skin", name="results_writer",
        )
        compare = SiteComparisonOperator(self, input_folder=input_folder, algorithm=algorithm, name="comparison")
        pipeline = [loader, segment, severity, quality, compare, seg, sr, overlay, self.results]
        runtime.chain(self, pipeline)


def main(argv: list[str] | None = None) -> int:
    return runtime.app_main(VitiligoLesionApp, argv)


if __name__ == "__main__":
    sys.exit(main())
