"""Writes, for every input file, a copy with a new SOP Instance UID (a 'result') and results.json.

results.json also holds the arguments the app was given after the program name (``argv``),
so a test sees what the service passed (``-m``, ``--option KEY=VALUE``)."""

import json
import sys
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid


def main(argv: list[str]) -> int:
    inputs, outputs = Path(argv[argv.index("-i") + 1]), Path(argv[argv.index("-o") + 1])
    outputs.mkdir(parents=True, exist_ok=True)
    cases = []
    for n, path in enumerate(sorted(inputs.iterdir()), start=1):
        ds = pydicom.dcmread(path)
        source_uid = ds.SOPInstanceUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.save_as(outputs / f"RESULT_{n:03d}.dcm")
        cases.append({"source": path.name, "sop_instance_uid": source_uid, "status": "analysed", "error": None})
    (outputs / "results.json").write_text(json.dumps({
        "app": "echo", "algorithm": {"name": "echo", "version": "1", "weights_sha256": "0" * 64},
        "analysed": len(cases), "failed": 0, "cases": cases, "argv": argv[1:]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
