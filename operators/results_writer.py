"""Last step: ``results.json`` (machine-readable outcome per input file) and a printed summary.

A PACS service reads ``results.json`` to know what failed and why; people read the table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from monai.deploy.core import Fragment, Operator, OperatorSpec

from .cases import PhotoCase

log = logging.getLogger("dermpacs")


def case_record(case: PhotoCase, output_folder: Path) -> dict[str, Any]:
    photo = case.photo
    return {
        "source": case.source.name,
        "sop_instance_uid": getattr(photo, "sop_instance_uid", None),
        "series_instance_uid": getattr(photo, "series_instance_uid", None),
        "status": "analysed" if case.ok else "failed",
        "failed_step": case.failed_step,
        "error": case.error,
        "results": case.summary,
        "outputs": sorted({str(p.relative_to(output_folder)) for p in case.outputs}),
        "timings_s": {k: round(v, 4) for k, v in case.timings.items()},
    }


def write_results(cases: list[PhotoCase], output_folder: Path, app_name: str, algorithm: Any) -> dict[str, Any]:
    output_folder.mkdir(parents=True, exist_ok=True)
    report = {
        "app": app_name,
        "algorithm": {
            "name": algorithm.name,
            "version": algorithm.version,
            "weights_sha256": algorithm.weights_sha256,
        },
        "analysed": sum(c.ok for c in cases),
        "failed": sum(not c.ok for c in cases),
        "cases": [case_record(c, output_folder) for c in cases],
    }
    path = output_folder / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)
    return report


def print_summary(cases: list[PhotoCase], headline_key: str, headline_label: str) -> None:
    for case in cases:
        if case.ok:
            value = case.summary.get(headline_key)
            extra = case.summary.get("view")
            shown = f"{value:.2f}" if isinstance(value, float) else str(value)
            print(f"{case.source.name}: {headline_label} = {shown}" + (f" ({extra} view)" if extra else ""))
        else:
            print(f"{case.source.name}: FAILED at {case.failed_step}: {case.error}")


class ResultsWriterOperator(Operator):
    """Sink: writes results.json, prints one line per input file, keeps the cases for the caller."""

    def __init__(
        self, fragment: Fragment, *args, output_folder: Path, app_name: str, algorithm: Any,
        headline_key: str, headline_label: str, **kwargs,
    ) -> None:
        self.output_folder = Path(output_folder)
        self.app_name, self.algorithm = app_name, algorithm
        self.headline_key, self.headline_label = headline_key, headline_label
        self.cases: list[PhotoCase] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("cases")

    def compute(self, op_input, op_output, context) -> None:
        self.cases = op_input.receive("cases")
        write_results(self.cases, self.output_folder, self.app_name, self.algorithm)
        print_summary(self.cases, self.headline_key, self.headline_label)
