"""Fetch a patient's earlier dermpacs results from the PACS into a job's input folder.

Runs in the worker process just before an app that declares ``priors_model_name``, so a
slow PACS delays only that job, inside its own timeout, and never the scheduler. Steps:

1. The photographs' Patient ID and Issuer of Patient ID (all must agree; no ID: skipped).
2. C-FIND STUDY level on both; studies dated before this one (at most ``max_studies``).
3. C-FIND SERIES level per study, Modality SR and SEG; C-GET of those series.
   Where the source is a DICOMweb URL the same queries are QIDO-RS searches and the
   retrieves WADO-RS (``_DicomwebLookup``); everything below is shared.
4. Every retrieved file is checked again: same Patient ID **and** issuer, Manufacturer
   dermpacs, SR ManufacturerModelName (SEG ContentDescription) = the app's model name.
   Anything else is deleted and counted as rejected: a C-FIND that matched too much (an
   issuer the PACS does not index, a colliding name) can never hand over another
   patient's result.
5. For the earliest prior (the baseline) the photographs its SEGs were made on are
   retrieved too (C-GET SERIES), for the change map.

Whatever happens, ``IN/priors/priors.json`` says what was found or why nothing was, with
every query (level, matches, status, seconds) for the audit trail; it also carries the
patient's pseudonymous tracking key (dicom.longitudinal). This never raises: a failed
lookup means an analysis without comparison, not a lost result.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)
from pynetdicom import AE, build_role
from pynetdicom import evt
from pynetdicom.sop_class import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    VLPhotographicImageStorage,
)

from dicom.longitudinal import MANIFEST_NAME, PRIORS_FOLDER, patient_identity, patient_key, write_manifest
from dicom.seg import MANUFACTURER

from .config import Destination, PriorsConfig, ServiceConfig
from .spool import atomic_write
from .store import JobStore
from .transport import LOW_LATENCY_HANDLERS

log = logging.getLogger("dermpacs.priors")

_STORAGE = (Comprehensive3DSRStorage, ComprehensiveSRStorage, SegmentationStorage,
            VLPhotographicImageStorage, SecondaryCaptureImageStorage)
_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit]
PHOTO_CLASSES = {str(VLPhotographicImageStorage), str(SecondaryCaptureImageStorage)}


@dataclass(frozen=True)
class PriorsRequest:
    """Everything the worker needs for one lookup (picklable: crosses the process pipe)."""

    source: Destination
    calling_ae: str
    timeout_s: float
    max_studies: int
    model_name: str
    secret_hex: str
    database: str | None = None  # the job store, read-only, to wait for ``wait_for_jobs``
    wait_for_jobs: tuple[int, ...] = ()  # this patient's earlier jobs whose results are not yet delivered
    wait_for_earlier_s: float = 300.0
    client_certificate: tuple[str, str] | None = None  # (certificate, key) for an https DICOMweb source


def tracking_secret(config: ServiceConfig) -> bytes:
    """The site secret: from the config, else ``data_dir/tracking.key`` (created once, 0600)."""
    if config.priors.tracking_secret:
        return config.priors.tracking_secret.encode("utf-8")
    path = Path(config.data_dir) / "tracking.key"
    if not path.exists():
        atomic_write(path, secrets.token_hex(32).encode("ascii"))
        os.chmod(path, 0o600)
    return path.read_bytes().strip()


def priors_request(config: ServiceConfig, model_name: str, store: JobStore | None = None,
                   job_id: int | None = None, app: str | None = None) -> PriorsRequest:
    """What the worker needs; with a store, also the same patient's earlier jobs still in flight here."""
    priors: PriorsConfig = config.priors
    wait: tuple[int, ...] = ()
    if store is not None and job_id is not None and app is not None:
        earlier = store.unfinished_jobs(app, job_id)
        if earlier:
            mine = _job_patient(store, job_id)
            wait = tuple(j for j in earlier if mine is not None and _job_patient(store, j) == mine)
    own = config.tls
    certificate = ((str(own.certificate), str(own.private_key))
                   if own.certificate is not None and own.private_key is not None else None)
    return PriorsRequest(priors.source or config.destination, config.ae_title, float(priors.timeout_s),
                         int(priors.max_studies), model_name, tracking_secret(config).hex(),
                         str(config.database), wait, float(priors.wait_for_earlier_s), certificate)


def _job_patient(store: JobStore, job_id: int) -> tuple[str, str] | None:
    for row in store.job_instances(job_id):
        try:
            return patient_identity(pydicom.dcmread(row["path"], stop_before_pixels=True))
        except Exception:
            continue
    return None


def _wait_for_jobs(request: PriorsRequest) -> dict[str, Any]:
    """Wait until this patient's earlier jobs have delivered their results (or failed), bounded."""
    import sqlite3

    started = time.monotonic()
    pending = list(request.wait_for_jobs)
    db = sqlite3.connect(f"file:{request.database}?mode=ro", uri=True, timeout=10)
    try:
        while pending and time.monotonic() - started < request.wait_for_earlier_s:
            marks = ",".join("?" * len(pending))
            rows = db.execute(f"SELECT id, state FROM jobs WHERE id IN ({marks})", pending).fetchall()
            pending = [i for i, state in rows if state in ("queued", "running", "sending")]
            if pending:
                time.sleep(0.2)
    finally:
        db.close()
    return {"jobs": list(request.wait_for_jobs), "still_pending": pending,
            "seconds": round(time.monotonic() - started, 3)}


class _Lookup:
    """One lookup over DIMSE (C-FIND + C-GET): the checks, the audit records and the association.

    ``find`` and ``get_series`` are the only network operations ``fetch_priors`` uses;
    :class:`_DicomwebLookup` replaces them (and ``connect``/``close``) with QIDO-RS and
    WADO-RS, and inherits the deadline, the audit records and ``accept``.
    """

    def __init__(self, request: PriorsRequest, inputs: Path) -> None:
        self.request = request
        self.folder = Path(inputs) / PRIORS_FOLDER
        self.deadline = time.monotonic() + request.timeout_s
        self.queries: list[dict[str, Any]] = []
        self.rejected: dict[str, int] = {}
        self.assoc = None
        self._received: list[Path] = []

    # -- association ------------------------------------------------------------------
    def connect(self) -> None:
        source = self.request.source
        ae = AE(ae_title=self.request.calling_ae)
        left = self._left()
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = left
        ae.connection_timeout = left
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        for sop_class in _STORAGE:  # one context per syntax: the PACS sends each file as it is stored
            for syntax in _SYNTAXES:
                ae.add_requested_context(sop_class, [syntax])
        roles = [build_role(sop_class, scp_role=True) for sop_class in _STORAGE]
        started = time.monotonic()
        self.assoc = ae.associate(source.host, source.port, ae_title=source.ae_title, ext_neg=roles,
                                  evt_handlers=[*LOW_LATENCY_HANDLERS, (evt.EVT_C_STORE, self._on_store)])
        if not self.assoc.is_established:
            self._record("associate", None, "refused or unreachable", started)
            raise _LookupError(f"association with {source.describe()} failed (refused, unreachable or timed out)")

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _LookupError(f"the lookup took longer than priors.timeout_s ({self.request.timeout_s:g} s)")
        return left

    def _record(self, operation: str, level: str | None, status: str, started: float, **extra: Any) -> None:
        self.queries.append({"operation": operation, "level": level, "status": status,
                             "seconds": round(time.monotonic() - started, 3), **extra})

    # -- DIMSE ------------------------------------------------------------------------
    def find(self, level: str, keys: dict[str, Any], returned: tuple[str, ...]) -> list[Dataset]:
        query = Dataset()
        query.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        for keyword in returned:
            if keyword not in query:
                setattr(query, keyword, "")
        started = time.monotonic()
        self.assoc.dimse_timeout = self._left()
        matches: list[Dataset] = []
        final = None
        for status, identifier in self.assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            final = int(getattr(status, "Status", -1)) if status is not None and "Status" in status else None
            if final in (0xFF00, 0xFF01) and identifier is not None:
                matches.append(identifier)
        if not self.assoc.is_established or final is None:
            self._record("C-FIND", level, "no response (timed out or aborted)", started)
            raise _LookupError(f"C-FIND at {level} level got no response within the time left")
        if final != 0x0000:
            self._record("C-FIND", level, f"failed 0x{final:04X}", started)
            raise _LookupError(f"C-FIND at {level} level failed with status 0x{final:04X}")
        self._record("C-FIND", level, "success", started, matches=len(matches),
                     modality=keys.get("Modality"), study_instance_uid=keys.get("StudyInstanceUID"))
        return matches

    def get_series(self, study_uid: str, series_uid: str, target: Path) -> list[Path]:
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID, query.SeriesInstanceUID = study_uid, series_uid
        self._target, self._received = target, []
        started = time.monotonic()
        self.assoc.dimse_timeout = self._left()
        final = None
        for status, _identifier in self.assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if status is not None and "Status" in status:
                final = int(status.Status)
        ok = final in (0x0000, 0xB000)
        self._record("C-GET", "SERIES", "success" if ok else
                     ("no response" if final is None else f"status 0x{final:04X}"), started,
                     series_instance_uid=series_uid, instances=len(self._received))
        if final is None or not self.assoc.is_established:
            raise _LookupError("C-GET got no response within the time left")
        return list(self._received)

    def _on_store(self, event) -> int:
        ds = event.dataset
        uid = str(ds.SOPInstanceUID)
        path = self._target / (hashlib.sha256(uid.encode()).hexdigest()[:32] + ".dcm")
        atomic_write(path, event.encoded_dataset())
        self._received.append(path)
        return 0x0000

    # -- the checks that make another patient's result impossible ----------------------
    def accept(self, path: Path, patient: tuple[str, str]) -> Dataset | None:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            return self._reject(path, "unreadable")
        if patient_identity(ds) != patient:
            return self._reject(path, "other patient (Patient ID or issuer differs)")
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class in PHOTO_CLASSES:
            return ds
        if str(ds.get("Manufacturer", "")) != MANUFACTURER:
            return self._reject(path, "not made by dermpacs")
        product = str(ds.get("ManufacturerModelName", "") if ds.Modality == "SR" else ds.get("ContentDescription", ""))
        if product != self.request.model_name:
            return self._reject(path, "another dermpacs analysis")
        return ds

    def _reject(self, path: Path, why: str) -> None:
        path.unlink(missing_ok=True)
        self.rejected[why] = self.rejected.get(why, 0) + 1
        return None


class _DicomwebLookup(_Lookup):
    """The same lookup against a DICOMweb source: QIDO-RS for C-FIND, WADO-RS for C-GET.

    The client is built as the sender builds its STOW-RS client (same CA, same client
    certificate, no retries of its own); each request's connect and read timeouts are
    what is left of ``priors.timeout_s``, checked again before every request.
    """

    def connect(self) -> None:
        import requests

        self._session = requests.Session()
        self._session.trust_env = False  # a PACS on the hospital network, never through a proxy
        if self.request.source.ca_certificates:
            self._session.verify = str(self.request.source.ca_certificates)
        if self.request.client_certificate:
            self._session.cert = self.request.client_certificate

    def close(self) -> None:
        session = getattr(self, "_session", None)
        if session is not None:
            session.close()

    def _client(self):
        from dicomweb_client import DICOMwebClient

        left = self._left()
        client = DICOMwebClient(self.request.source.stow_url, session=self._session, timeout=(left, left))
        client.set_http_retry_params(retry=False)  # one try inside the budget: a failure means no comparison
        return client

    def _failed(self, operation: str, level: str, started: float, exc: Exception) -> "_LookupError":
        response = getattr(exc, "response", None)
        status = (f"HTTP {response.status_code}" if response is not None
                  else f"no response ({type(exc).__name__})")
        self._record(operation, level, status, started)
        return _LookupError(f"{operation} at {level} level against {self.request.source.describe()} failed: {status}")

    def find(self, level: str, keys: dict[str, Any], returned: tuple[str, ...]) -> list[Dataset]:
        # C-FIND semantics: a key with a value matches, an empty key is returned (includefield).
        filters = {k: v for k, v in keys.items() if v and k != "StudyInstanceUID"}
        fields = sorted({k for k, v in keys.items() if not v} | set(returned) | {"PatientID", "IssuerOfPatientID"})
        started = time.monotonic()
        try:
            client = self._client()
            if level == "STUDY":
                found = client.search_for_studies(search_filters=filters, fields=fields)
            else:
                found = client.search_for_series(study_instance_uid=keys["StudyInstanceUID"],
                                                 search_filters=filters, fields=fields)
            matches = [Dataset.from_json(item) for item in found or []]
        except _LookupError:
            raise
        except Exception as exc:  # noqa: BLE001 - refused, timed out, HTTP error, not DICOM JSON
            raise self._failed("QIDO-RS", level, started, exc) from None
        self._record("QIDO-RS", level, "success", started, matches=len(matches),
                     modality=keys.get("Modality"), study_instance_uid=keys.get("StudyInstanceUID"))
        return matches

    def get_series(self, study_uid: str, series_uid: str, target: Path) -> list[Path]:
        started = time.monotonic()
        received: list[Path] = []
        try:
            # As stored (JPEG photographs stay JPEG), as the C-GET path receives them.
            instances = self._client().retrieve_series(study_uid, series_uid,
                                                       media_types=(("application/dicom", "*"),))
            for ds in instances:
                path = target / (hashlib.sha256(str(ds.SOPInstanceUID).encode()).hexdigest()[:32] + ".dcm")
                buffer = io.BytesIO()
                pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
                atomic_write(path, buffer.getvalue())
                received.append(path)
        except _LookupError:
            for path in received:
                path.unlink(missing_ok=True)
            raise
        except Exception as exc:  # noqa: BLE001
            for path in received:
                path.unlink(missing_ok=True)
            raise self._failed("WADO-RS", "SERIES", started, exc) from None
        self._record("WADO-RS", "SERIES", "success", started, series_instance_uid=series_uid,
                     instances=len(received))
        return received


class _LookupError(Exception):
    pass


def _current_visit(inputs: Path) -> tuple[tuple[str, str] | None, str, str, str]:
    """(patient, study UID, study date+time) of the photographs; patient None if they disagree."""
    identities, studies = set(), set()
    for path in sorted(p for p in Path(inputs).iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        identities.add(patient_identity(ds))
        studies.add((str(ds.get("StudyInstanceUID", "")), str(ds.get("StudyDate", "") or ""),
                     str(ds.get("StudyTime", "") or "")))
    if len(identities) != 1 or len(studies) != 1:
        return None, "", "", f"{len(identities)} patients, {len(studies)} studies among the photographs"
    (study_uid, date, time_), = studies
    return next(iter(identities)), study_uid, date + time_, ""


def fetch_priors(request: PriorsRequest, inputs: Path) -> dict[str, Any]:
    """Look up and retrieve the priors of the job whose photographs are in ``inputs``.

    Writes and returns the manifest; never raises.
    """
    lookup = (_DicomwebLookup if request.source.stow_url else _Lookup)(request, inputs)
    manifest: dict[str, Any] = {"status": "none", "reason": "", "tracking_key": None,
                                "source": request.source.describe(), "studies": []}
    started = time.monotonic()
    try:
        patient, study_uid, when, why = _current_visit(Path(inputs))
        if patient is None:
            manifest.update(status="skipped", reason=why)
            return manifest
        if not patient[0]:
            manifest.update(status="skipped", reason="the photographs carry no Patient ID")
            return manifest
        manifest["tracking_key"] = patient_key(bytes.fromhex(request.secret_hex), patient[1], patient[0])
        if request.wait_for_jobs and request.database:
            manifest["waited_for_earlier_jobs"] = _wait_for_jobs(request)
            lookup.deadline = time.monotonic() + request.timeout_s  # the lookup's own budget starts now
        lookup.connect()
        keys = {"PatientID": patient[0], "IssuerOfPatientID": patient[1], "StudyInstanceUID": ""}
        studies = lookup.find("STUDY", keys, ("StudyDate", "StudyTime"))
        earlier = sorted(
            {(str(s.get("StudyDate", "") or "") + str(s.get("StudyTime", "") or ""), str(s.StudyInstanceUID))
             for s in studies
             if str(s.get("StudyInstanceUID", "")) != study_uid
             and patient_identity(s)[0] in ("", patient[0])
             and (str(s.get("StudyDate", "") or "") + str(s.get("StudyTime", "") or "")) < when}
        )[-request.max_studies:]
        baseline_photos_wanted = True
        for when_prior, prior_uid in earlier:
            folder = lookup.folder / f"study-{len(manifest['studies']) + 1:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            files: list[Path] = []
            photo_series: set[str] = set()
            for modality in ("SR", "SEG"):
                series = lookup.find("SERIES", {"StudyInstanceUID": prior_uid, "Modality": modality,
                                                "SeriesInstanceUID": ""}, ("Manufacturer",))
                for s in series:
                    if str(s.get("Manufacturer", "") or MANUFACTURER) != MANUFACTURER:
                        continue  # another product's result: never fetched
                    for path in lookup.get_series(prior_uid, str(s.SeriesInstanceUID), folder):
                        ds = lookup.accept(path, patient)
                        if ds is None:
                            continue
                        files.append(path)
                        for ref in ds.get("ReferencedSeriesSequence", []) if modality == "SEG" else []:
                            photo_series.add(str(ref.SeriesInstanceUID))
            if not any(pydicom.dcmread(f, stop_before_pixels=True).Modality == "SR" for f in files):
                for f in files:
                    f.unlink(missing_ok=True)
                continue  # no result of this app in that study
            if baseline_photos_wanted:  # the baseline's photographs, for the change map
                for series_uid in sorted(photo_series):
                    for path in lookup.get_series(prior_uid, series_uid, folder):
                        if lookup.accept(path, patient) is not None:
                            files.append(path)
                baseline_photos_wanted = False
            manifest["studies"].append({
                "study_instance_uid": prior_uid, "study_date": when_prior[:8],
                "files": sorted(str(f.relative_to(lookup.folder)) for f in files),
            })
        found = len(manifest["studies"])
        manifest.update(status="found" if found else "none",
                        reason=f"{found} earlier visit(s) with results" if found else "no earlier results of this analysis")
    except _LookupError as exc:
        manifest.update(status="failed", reason=str(exc), studies=[])
    except Exception as exc:  # a bug or a peer's oddity must not cost the result
        log.exception("prior lookup failed")
        manifest.update(status="failed", reason=f"{type(exc).__name__}: {exc}", studies=[])
    finally:
        try:
            lookup.close()
        except Exception:
            pass
        manifest.update(queries=lookup.queries, rejected=lookup.rejected,
                        seconds=round(time.monotonic() - started, 3))
        if manifest["status"] == "failed":  # half-fetched files are not used
            for path in lookup.folder.rglob("*.dcm"):
                path.unlink(missing_ok=True)
        write_manifest(lookup.folder, manifest)
    log.info("priors: %s (%s) in %.2f s", manifest["status"], manifest["reason"], manifest["seconds"])
    return manifest


__all__ = ["PriorsRequest", "fetch_priors", "priors_request", "tracking_secret", "MANIFEST_NAME"]
