"""Run dciodvfy (dicom3tools), the reference DICOM IOD validator, on a written file."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

DCIODVFY = "dciodvfy"


class ValidatorNotInstalledError(RuntimeError):
    """dciodvfy is missing: install the Debian package ``dicom3tools``."""


@dataclass(frozen=True)
class DciodvfyResult:
    """Messages of one dciodvfy run; ``ok`` means no errors (warnings are allowed)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def _readable_by_dciodvfy(path: Path, scratch: Path) -> Path:
    """``path``, or for a Deflated Explicit VR Little Endian file the same data set inflated.

    dicom3tools' dciodvfy reads the deflated stream as raw bytes and reports nothing but
    read errors; inflating changes the encoding only, so the IOD is judged unchanged.
    """
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

    from .reader import read_file_identity

    try:
        syntax = read_file_identity(path).transfer_syntax
    except Exception:  # noqa: BLE001 - not a Part 10 file: let dciodvfy say what is wrong
        return path
    if syntax != DeflatedExplicitVRLittleEndian:
        return path
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    inflated = scratch / path.name
    ds.save_as(inflated, enforce_file_format=True)
    return inflated


def dciodvfy(path: str | Path, *, timeout: float = 120.0) -> DciodvfyResult:
    """Validate ``path`` with dciodvfy and return its errors and warnings.

    dciodvfy writes its findings to stderr and always exits 0, so the outcome is read
    from the "Error -" and "Warning -" lines. A message spanning several lines (a
    module or sequence path after the message) is kept as one string.
    """
    exe = shutil.which(DCIODVFY)
    if exe is None:
        raise ValidatorNotInstalledError(
            "dciodvfy is not installed; install dicom3tools (apt-get install dicom3tools)"
        )
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file to validate: {path}")
    with tempfile.TemporaryDirectory(prefix="dciodvfy-") as scratch:
        readable = _readable_by_dciodvfy(path, Path(scratch))
        proc = subprocess.run(
            [exe, str(readable)], capture_output=True, text=True, errors="replace",
            timeout=timeout, check=False,
        )
    output = proc.stderr + proc.stdout
    errors: list[str] = []
    warnings: list[str] = []
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith("Error"):
            errors.append(line)
            current = errors
        elif line.startswith("Warning"):
            warnings.append(line)
            current = warnings
        elif current is not None and line[:1] in (" ", "\t") and line.strip():
            current[-1] += " " + line.strip()
        else:
            current = None
    return DciodvfyResult(errors=errors, warnings=warnings, output=output)
