"""Logs (and warns with) each input's Series Description, as an app might, then acts like echo_app."""

import logging
import sys
import warnings

import pydicom

from apps.runtime import configure_logging
from tests.service_apps import echo_app


def main(argv: list[str]) -> int:
    configure_logging()  # what the real apps call: must not undo the worker's escaping
    inputs = argv[argv.index("-i") + 1]
    from pathlib import Path

    for path in sorted(Path(inputs).iterdir()):
        description = str(pydicom.dcmread(path, stop_before_pixels=True).SeriesDescription)
        logging.getLogger("dermpacs").info("analysing series %s", description)
        warnings.warn(f"odd series description {description}")
    return echo_app.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
