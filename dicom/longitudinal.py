"""Visits over time, without the network: tracking UIDs, the priors manifest, comparisons.

The service (dicom/service/priors.py) writes ``IN/priors/priors.json`` and the earlier
results beside the photographs; apps read them with :func:`read_priors` and never touch
the network. Tracking UIDs (DCM 112040) are the same in every visit of one patient and
one view: a UUID-derived UID (``2.25.<int>``) from an HMAC keyed with a per-patient key
that is itself an HMAC of issuer + patient ID under a site secret, so nobody without the
secret can tell whose UID it is or compute it from a patient ID.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset

log = logging.getLogger("dermpacs")

PRIORS_FOLDER = "priors"
"""Subfolder of a job's input folder with earlier results (never analysed as photographs)."""
MANIFEST_NAME = "priors.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def patient_key(secret: bytes, issuer: str, patient_id: str) -> str:
    """Pseudonymous key of one patient (hex HMAC-SHA256); the secret never leaves the service."""
    if not secret:
        raise ValueError("the tracking secret must not be empty")
    message = f"{issuer.strip()}\x1f{patient_id.strip()}".encode("utf-8")
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def tracking_uid(key: str, *parts: str) -> str:
    """Stable UID ``2.25.<uuid>`` for one finding of one patient (e.g. app + view)."""
    if not _HEX64.fullmatch(key):
        raise ValueError("tracking key must be 64 lowercase hexadecimal characters")
    digest = hmac.new(bytes.fromhex(key), "\x1f".join(parts).encode("utf-8"), hashlib.sha256).digest()
    return "2.25." + str(uuid.UUID(bytes=digest[:16], version=4).int)


def patient_identity(ds: Dataset) -> tuple[str, str]:
    """(Patient ID, Issuer of Patient ID) as stored, stripped; '' when absent."""
    return str(ds.get("PatientID", "") or "").strip(), str(ds.get("IssuerOfPatientID", "") or "").strip()


def dicom_date(value: str | None) -> dt.date | None:
    try:
        return dt.datetime.strptime(str(value or "")[:8], "%Y%m%d").date()
    except ValueError:
        return None


@dataclass(frozen=True)
class PriorStudy:
    """One earlier visit as fetched: its study, date and the result files found for it."""

    study_instance_uid: str
    study_date: str
    files: tuple[Path, ...]


@dataclass(frozen=True)
class Priors:
    """What the service found before the job ran (read from ``priors.json``)."""

    status: str  # "found" | "none" | "failed" | "skipped" | "absent"
    reason: str
    tracking_key: str | None
    studies: tuple[PriorStudy, ...] = ()

    @property
    def compared(self) -> bool:
        return self.status == "found" and bool(self.studies)


def read_priors(input_folder: Path) -> Priors:
    """The priors the service put into ``input_folder`` (status 'absent' when run by hand)."""
    folder = Path(input_folder) / PRIORS_FOLDER
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return Priors("absent", "no prior lookup was made (the app was not run by the dermpacs service)", None)
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError) as exc:
        return Priors("failed", f"the priors manifest is unreadable: {exc}", None)
    key = data.get("tracking_key")
    studies = tuple(
        PriorStudy(s["study_instance_uid"], s.get("study_date", ""),
                   tuple(folder / f for f in s.get("files", []) if (folder / f).is_file()))
        for s in data.get("studies", [])
    )
    return Priors(str(data.get("status", "failed")), str(data.get("reason", "")),
                  key if isinstance(key, str) and _HEX64.fullmatch(key) else None, studies)


def write_manifest(folder: Path, manifest: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / MANIFEST_NAME
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    tmp.replace(path)
    return path


def read_prior_dataset(path: Path) -> Dataset | None:
    try:
        return pydicom.dcmread(path)
    except Exception as exc:  # a damaged prior is skipped, never fatal
        log.warning("prior %s unreadable: %s", path.name, exc)
        return None


@dataclass(frozen=True)
class VisitContext:
    """This visit's place in the series (TID 1502) and what it was compared with; goes into every SR group."""

    order: int | None  # 1 = baseline; None: unknown (no lookup, or it failed): no time point is written
    baseline_date: dt.date | None = None
    previous_date: dt.date | None = None
    prior_reports: tuple[tuple[Any, Dataset], ...] = ()  # (concept Code, the earlier SR) referenced
    comment: str = ""  # e.g. "compared with 2 earlier visits" or why there is no comparison

    def __post_init__(self) -> None:
        if self.order is not None and (isinstance(self.order, bool) or self.order < 1):
            raise ValueError(f"time point order must be None or >= 1, got {self.order}")
        if len(self.comment) > 1024:
            raise ValueError("comment must be at most 1024 characters")
        for _, ds in self.prior_reports:
            if not isinstance(ds, Dataset) or "SOPInstanceUID" not in ds:
                raise TypeError("prior_reports must hold DICOM datasets of the earlier SRs")

    @property
    def time_point(self) -> str | None:
        if self.order is None:
            return None
        return "Baseline" if self.order == 1 else f"Visit {self.order}"
