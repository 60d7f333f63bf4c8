"""The spool: where received instances and results live on disk until delivered.

File names come from a hash of the SOP Instance UID, never from the UID itself, so a
crafted UID ("../../etc/passwd", 10 kB of dots) cannot choose or escape the path.
Writes are atomic and durable: temporary file, fsync, rename, fsync of the directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def is_valid_uid(value: object) -> bool:
    """A DICOM UID: digits and dots, no leading zeros in components, at most 64 characters."""
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_UID.match(value))


def fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> Path:
    """Write ``data`` so that ``path`` holds either nothing or all of it, even after a crash."""
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        fsync_directory(path.parent.parent)  # a new folder's own entry must be durable too
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


class Spool:
    """Received instances under ``<data_dir>/spool``; job folders under ``<data_dir>/jobs``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.instances = self.root / "spool"
        self.jobs = self.root / "jobs"
        for folder in (self.instances, self.jobs):
            folder.mkdir(parents=True, exist_ok=True)
        self.clean_partial_writes()

    def instance_path(self, sop_instance_uid: str, version: int = 1) -> Path:
        """Version 1 is ``<hash>.dcm``; a changed instance's later versions ``<hash>.v<n>.dcm``."""
        digest = hashlib.sha256(sop_instance_uid.encode("ascii", "replace")).hexdigest()
        return self.instances / digest[:2] / (f"{digest}.dcm" if version == 1 else f"{digest}.v{version}.dcm")

    def store(self, sop_instance_uid: str, data: bytes, version: int = 1) -> Path:
        return atomic_write(self.instance_path(sop_instance_uid, version), data)

    def job_folder(self, job_id: int, attempt: int) -> tuple[Path, Path]:
        """Fresh input and output folders for one run of a job."""
        base = self.jobs / f"{job_id:08d}" / f"attempt-{attempt}"
        if base.exists():  # a retried job counts attempts from 1 again: never mix in an earlier run's results
            shutil.rmtree(base)
        inputs, outputs = base / "in", base / "out"
        inputs.mkdir(parents=True, exist_ok=True)
        outputs.mkdir(parents=True, exist_ok=True)
        return inputs, outputs

    def clean_partial_writes(self) -> int:
        """Remove temporary files a crash left behind (never acknowledged, so nothing is lost)."""
        removed = 0
        for tmp in self.instances.rglob(".incoming-*.part"):
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed
