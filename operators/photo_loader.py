"""Step 1: read every file of the input folder as a DICOM photograph (one case per file)."""

from __future__ import annotations

import logging
from pathlib import Path

from monai.deploy.core import Fragment, Operator, OperatorSpec

from dicom.longitudinal import PRIORS_FOLDER

from .base import run_step
from .cases import PhotoCase

log = logging.getLogger("dermpacs")

# Files a PACS export or a DICOM folder carries that are not photographs to analyse.
_IGNORED_NAMES = {"DICOMDIR", "results.json"}


def list_input_files(folder: Path) -> list[PhotoCase]:
    """One case per regular file under ``folder`` (recursively, sorted, hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    priors = folder / PRIORS_FOLDER  # earlier results the service fetched: read by the comparison step
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name not in _IGNORED_NAMES
        and priors not in p.parents
    )
    return [PhotoCase(source=p) for p in files]


class PhotoLoadStep:
    """Decodes pixels once (RGB uint8); unsupported inputs fail their own case only."""

    step_name = "load photograph"

    def __init__(self, max_pixels: int = 100_000_000) -> None:
        self.max_pixels = max_pixels

    def process(self, case: PhotoCase) -> None:
        from dicom.reader import read_photograph

        case.photo = read_photograph(case.source, max_pixels=self.max_pixels)


class DicomPhotoLoaderOperator(Operator):
    """Source operator: input folder -> ``cases`` (list[PhotoCase]) with photographs decoded."""

    def __init__(self, fragment: Fragment, *args, input_folder: Path, **kwargs) -> None:
        self.input_folder = Path(input_folder)
        self.step = PhotoLoadStep()
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("cases")

    def compute(self, op_input, op_output, context) -> None:
        cases = list_input_files(self.input_folder)
        log.info("%d file(s) in the input folder", len(cases))
        run_step(self.step, cases)
        op_output.emit(cases, "cases")
