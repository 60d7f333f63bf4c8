"""Writes a result, then fails the case at the overlay step (as on a full disk) once; then works.

The failure is armed by a file ``fail-once`` in the job's folder (``<job>/fail-once``).
"""

import json
import sys
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid


def main(argv: list[str]) -> int:
    inputs, outputs = Path(argv[argv.index("-i") + 1]), Path(argv[argv.index("-o") + 1])
    outputs.mkdir(parents=True, exist_ok=True)
    armed = inputs.parents[1] / "fail-once"
    fail = armed.exists()
    armed.unlink(missing_ok=True)
    cases = []
    for n, path in enumerate(sorted(inputs.iterdir()), start=1):
        ds = pydicom.dcmread(path)
        source_uid = ds.SOPInstanceUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        name = f"SEG_{n:03d}.dcm"
        ds.save_as(outputs / name)
        failed = fail and n == 1
        cases.append({"source": path.name, "sop_instance_uid": source_uid, "outputs": [name],
                      "status": "failed" if failed else "analysed", "failed_step": "overlay writer" if failed else None,
                      "error": "OSError: [Errno 28] No space left on device" if failed else None})
    (outputs / "results.json").write_text(json.dumps({
        "app": "partial", "algorithm": {"name": "partial", "version": "1", "weights_sha256": "0" * 64},
        "cases": cases}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
