"""What every app's end-to-end test does the same way: run the app, plant bad inputs, check the failures.

Each app (`python -m apps.<name> -i IN -o OUT`) must treat a folder the same way: a bad
file fails on its own with a one-line reason, the rest is still analysed, no patient
identifier reaches the logs or results.json, and a folder with nothing analysable exits
non-zero without writing DICOM. The app test files build their own good photographs and
keep their app-specific checks; these plain functions hold the parts that must not drift
apart between apps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from dicom.encode import DEMO_PATIENT, photograph_dataset, write_dataset

REPO = Path(__file__).resolve().parents[1]
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def run_app(module: str, input_folder: Path, output_folder: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run `python -m <module> -i IN -o OUT` in a fresh process, as a user would, capturing its output.

    A subprocess (not a call to main) so that exit codes, stderr and import-time behaviour are
    the real ones.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", module, "-i", str(input_folder), "-o", str(output_folder), *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def results_of(output_folder: Path) -> dict[str, Any]:
    """The app's results.json: the per-file statuses and numbers the tests compare against."""
    return json.loads((output_folder / "results.json").read_text())


def ct_dataset() -> pydicom.Dataset:
    """A valid DICOM file of the wrong class (CT Image Storage): the app must refuse it by its class."""
    ds = photograph_dataset(np.zeros((128, 128, 3), np.uint8), transfer_syntax=ExplicitVRLittleEndian)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    return ds


def write_bad_inputs(folder: Path, valid: Path, *, huge: bool = True, **photograph_kwargs: Any) -> dict[str, str]:
    """Write the bad inputs every app must refuse into ``folder``, next to its good photographs.

    ``valid`` is a good photograph whose first third becomes truncated.dcm. ``photograph_kwargs``
    (e.g. body_part) go to the photographs that are only wrong in size, so that size is the one
    reason to refuse them; ``huge`` adds a file claiming 40000 x 40000 pixels (an app that never
    reads such sizes can leave it out). Returns each file's name with a word its error must hold
    (lower case; "" where any one-line reason will do).
    """
    (folder / "notes.txt").write_text("not a DICOM file")
    data = valid.read_bytes()
    (folder / "truncated.dcm").write_bytes(data[: len(data) // 3])
    write_dataset(ct_dataset(), folder / "ct.dcm")
    tiny = photograph_dataset(np.full((32, 32, 3), 128, np.uint8), transfer_syntax=ExplicitVRLittleEndian,
                              **photograph_kwargs)
    write_dataset(tiny, folder / "tiny.dcm")
    expected = {
        "notes.txt": "not a dicom",
        "truncated.dcm": "",
        "ct.dcm": "ct image storage",
        "tiny.dcm": "at least 64 pixels",
    }
    if huge:
        big = photograph_dataset(np.zeros((64, 64, 3), np.uint8), transfer_syntax=ExplicitVRLittleEndian,
                                 **photograph_kwargs)
        big.Rows, big.Columns = 40000, 40000
        write_dataset(big, folder / "huge.dcm")
        expected["huge.dcm"] = "more than the limit"
    return expected


def assert_no_patient_identifiers(proc: subprocess.CompletedProcess, output_folder: Path) -> None:
    """The demo patient's name and ID appear neither in stdout, stderr nor results.json (logs may be shared)."""
    for where, text in (("stdout", proc.stdout), ("stderr", proc.stderr),
                        ("results.json", (output_folder / "results.json").read_text())):
        assert DEMO_PATIENT.name not in text and DEMO_PATIENT.patient_id not in text, f"patient identifier in {where}"


def assert_bad_inputs_fail_alone(
    proc: subprocess.CompletedProcess,
    output_folder: Path,
    expected_words: dict[str, str],
    analysed: tuple[str, ...] = (),
) -> dict[str, dict[str, Any]]:
    """Each bad file failed on its own with a one-line error holding its word; the good ones were analysed.

    A clinician reads these errors: no traceback, one line, a reason that names the problem, and
    no patient identifier anywhere. The run itself succeeds because something was analysed.
    Returns the cases by source file name for app-specific checks.
    """
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    cases = {c["source"]: c for c in results_of(output_folder)["cases"]}
    for name in analysed:
        assert cases[name]["status"] == "analysed", cases[name]
    for name, word in expected_words.items():
        assert cases[name]["status"] == "failed", name
        assert cases[name]["error"] and word in cases[name]["error"].lower(), (name, cases[name]["error"])
        assert "\n" not in cases[name]["error"]
    assert_no_patient_identifiers(proc, output_folder)
    return cases


def assert_nothing_analysable_fails(module: str, source_folder: Path, names: tuple[str, ...], work: Path) -> None:
    """Copy only bad files (``names`` from ``source_folder``) into ``work``/in and run the app on them.

    With nothing analysable the app must exit non-zero (a PACS router or script sees the failure),
    without a traceback, write no DICOM at all, and still write results.json saying 0 analysed.
    """
    only_bad = work / "in"
    only_bad.mkdir()
    for name in names:
        (only_bad / name).write_bytes((source_folder / name).read_bytes())
    proc = run_app(module, only_bad, work / "out")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert not list((work / "out").glob("*.dcm"))
    assert results_of(work / "out")["analysed"] == 0
