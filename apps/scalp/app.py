"""Scalp app: DICOM scalp photographs in, a TID 1500 SR (+ results.json) out.

    python -m apps.scalp -i IN -o OUT [-m MODELS]

Pipeline: load photographs -> scalp grading (EfficientNet, six 4-class heads) -> SR -> results.json.
Nothing is segmented, so no SEG is written: the grades refer to the whole photograph; its
SR groups' outlines are rectangles inside it (operators/scalp_grading.py says why).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from holoscan.conditions import CountCondition
from monai.deploy.core import Application

from apps import runtime
from operators.photo_loader import DicomPhotoLoaderOperator
from operators.results_writer import ResultsWriterOperator
from operators.scalp_grading import ScalpGradingOperator
from operators.sr_writer import SrWriterOperator

log = logging.getLogger("dermpacs")
APP_NAME = "scalp"
WEIGHTS_PATTERN = "scalp*.pt"
SHIPPED_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "weights" / "scalp_efficientnet_b0.pt"


def load_grader(model_path: str | None):
    """The grader for ``-m`` (or the shipped weights), loaded once per process."""
    from models.scalp.inference import ScalpGrader

    return runtime.load_model(ScalpGrader.load, model_path, SHIPPED_WEIGHTS, WEIGHTS_PATTERN)


class ScalpApp(Application):
    """A MONAI Deploy application; ``results`` holds the cases after ``run()``."""

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        input_folder, output_folder = Path(context.input_path), Path(context.output_path)
        grader = load_grader(context.model_path)
        algorithm = runtime.algorithm_identity(APP_NAME, grader)

        loader = DicomPhotoLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, name="photo_loader")
        grading = ScalpGradingOperator(self, grader=grader, name="scalp_grading")
        sr = SrWriterOperator(self, output_folder=output_folder, algorithm=algorithm, name="sr_writer")
        self.results = ResultsWriterOperator(
            self, output_folder=output_folder, app_name=APP_NAME, algorithm=algorithm,
            headline_key="grade_summary", headline_label="grades", name="results_writer",
        )
        pipeline = [loader, grading, sr, self.results]
        runtime.chain(self, pipeline)


def main(argv: list[str] | None = None) -> int:
    return runtime.app_main(ScalpApp, argv)


if __name__ == "__main__":
    sys.exit(main())
