"""Two results per photograph (stand-ins for its SEG and SR), after an optional delay per photograph.

The delay (``DERMPACS_TEST_APP_DELAY_S``, seconds) keeps a job running long enough for the
queue tests to kill its worker mid-job. Each result names its source photograph and kind
in ImageComments (and each ``--option KEY=VALUE`` it was given, as ``option:KEY=VALUE``),
and gets a fresh SOP Instance UID on every run: a job analysed twice and sent twice would
show as two pairs at the PACS.
"""

import json
import os
import sys
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid


def main(argv: list[str]) -> int:
    inputs, outputs = Path(argv[argv.index("-i") + 1]), Path(argv[argv.index("-o") + 1])
    outputs.mkdir(parents=True, exist_ok=True)
    delay = float(os.environ.get("DERMPACS_TEST_APP_DELAY_S", "0"))
    options = "".join(f" option:{value}" for flag, value in zip(argv, argv[1:]) if flag == "--option")
    cases = []
    photos = [(path, pydicom.dcmread(path)) for path in sorted(inputs.iterdir()) if path.is_file()]  # read first
    for n, (path, ds) in enumerate(photos, start=1):
        time.sleep(delay)
        source_uid = ds.SOPInstanceUID
        for kind in ("SEG", "SR"):
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.SeriesInstanceUID = generate_uid()
            ds.ImageComments = f"source={source_uid} kind={kind}{options}"
            ds.save_as(outputs / f"{kind}_{n:03d}.dcm")
        cases.append({"source": path.name, "sop_instance_uid": source_uid, "status": "analysed", "error": None})
    (outputs / "results.json").write_text(json.dumps({
        "app": "pair", "algorithm": {"name": "pair", "version": "1", "weights_sha256": "0" * 64},
        "analysed": len(cases), "failed": 0, "cases": cases}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
