"""Skin prick test app: DICOM photographs in, DICOM SEG + TID 1500 SR (+ PNG previews) out.

    python -m apps.skin_prick -i IN -o OUT [-m MODELS] [--option panel=NAME]

Pipeline: load photographs -> wheal/erythema/site-mark segmentation (U-Net, whole
photograph letterboxed to the model's input) -> reactions (areas, mean diameters,
wheal/erythema ratio) -> panel reading (when a panel applies: the grid fitted, every site
named by its allergen, positive / negative / not readable, controls, validity, mm from
Pixel Spacing or the panel's site spacing) -> SEG -> SR -> overlay PNG -> results.json.

Panels: YAML files in $DERMPACS_PRICK_PANELS (a folder, or one file that then reads every
photograph), else ``deploy/panels/``; chosen by Series Description / Protocol Name.
``--option panel=NAME`` (what the service passes for a routing rule with
``app_options: {panel: NAME}``) makes the panel of that ``name`` (case-insensitive) read
every photograph instead; a name no configured panel has fails each photograph with that
reason. results.json says which panel read a photograph and how it was chosen
(``panel``, ``panel_chosen_by``). Other options are ignored with a warning in the log.

A photograph without any reaction is analysed (status "analysed", result "analysed, no
reaction found", 0 reactions) but gets no SEG and no SR: an SR needs at least one group
with an outline for OHIF, and an empty SEG carries nothing.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from holoscan.conditions import CountCondition
from monai.deploy.core import Application

from apps import runtime
from operators.longitudinal_sites import SiteComparisonOperator
from operators.overlay_writer import OverlayWriterOperator
from operators.photo_loader import DicomPhotoLoaderOperator
from operators.results_writer import ResultsWriterOperator
from operators.seg_writer import SegWriterOperator
from operators.skin_prick_measurement import SkinPrickMeasurementOperator
from operators.skin_prick_panel import SkinPrickPanelOperator
from operators.skin_prick_segmentation import SkinPrickSegmentationOperator
from operators.sr_writer import SrWriterOperator

log = logging.getLogger("dermpacs")
APP_NAME = "skin prick test"
WEIGHTS_PATTERN = "skin_prick*.pt"

SHIPPED_WEIGHTS = Path(__file__).resolve().parents[2] / "models" / "weights" / "skin_prick_unet.pt"


def load_segmenter(model_path: str | None):
    """The segmenter for ``-m`` (or the shipped weights), loaded once per process."""
    from models.prick.inference import PrickSegmenter

    return runtime.load_model(PrickSegmenter.load, model_path, SHIPPED_WEIGHTS, WEIGHTS_PATTERN)


class SkinPrickApp(Application):
    """A MONAI Deploy application; ``results`` holds the cases after ``run()``."""

    KNOWN_OPTIONS = {"panel": "name of the panel that reads every photograph (overrides attribute matching)"}
    app_options = runtime.AppOptions()  # set per run by runtime.run_application from --option

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        input_folder, output_folder = Path(context.input_path), Path(context.output_path)
        segmenter = load_segmenter(context.model_path)
        algorithm = runtime.algorithm_identity(APP_NAME, segmenter)

        loader = DicomPhotoLoaderOperator(self, CountCondition(self, 1), input_folder=input_folder, name="photo_loader")
        segment = SkinPrickSegmentationOperator(self, segmenter=segmenter, name="wheal_erythema_segmentation")
        measure = SkinPrickMeasurementOperator(self, flare_edge=segmenter.config.flare_edge,
                                               name="prick_site_measurement")
        panel = SkinPrickPanelOperator(self, segmenter=segmenter, panel_name=self.app_options.get("panel"),
                                       name="prick_panel_reading")
        seg = SegWriterOperator(self, output_folder=output_folder, algorithm=algorithm, name="seg_writer")
        sr = SrWriterOperator(self, output_folder=output_folder, algorithm=algorithm, name="sr_writer")
        overlay = OverlayWriterOperator(self, output_folder=output_folder, name="overlay_writer")
        self.results = ResultsWriterOperator(
            self, output_folder=output_folder, app_name=APP_NAME, algorithm=algorithm,
            headline_key="result", headline_label="skin prick test", name="results_writer",
        )
        compare = SiteComparisonOperator(self, input_folder=input_folder, algorithm=algorithm, name="comparison")
        pipeline = [loader, segment, measure, panel, compare, seg, sr, overlay, self.results]
        runtime.chain(self, pipeline)


def main(argv: list[str] | None = None) -> int:
    return runtime.app_main(SkinPrickApp, argv)


if __name__ == "__main__":
    sys.exit(main())
