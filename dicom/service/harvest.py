"""Harvest corrections from the PACS: C-FIND the SEGs in studies dermpacs analysed, C-GET the new ones.

The routed path (the PACS forwards a clinician's SEG) needs a router; this one needs
nothing from the PACS but Query/Retrieve permission for dermpacs's AE title. Only the
studies in which dermpacs analysed a photograph are queried, only SEG series, and each
SEG is fetched once: the UIDs already seen (filed, refused, or dermpacs's own results) are
kept in ``<data_dir>/learning/harvested.json``. What is fetched is filed exactly like a
routed correction (``CorrectionFiler``), with origin "harvested".
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    SegmentationStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from dicom.seg import MANUFACTURER
from models.learning.dataset import case_id_for, make_private_dir, write_private

from .config import PHOTOGRAPH_SOP_CLASSES, Destination, ServiceConfig
from .corrections import CorrectionFiler, Outcome
from .store import JobStore

log = logging.getLogger("dermpacs.harvest")


class HarvestError(RuntimeError):
    """The PACS could not be queried; the message says why (no patient data)."""


@dataclass
class HarvestReport:
    studies: int = 0
    found: int = 0
    fetched: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def filed(self) -> int:
        return sum(o.filed for o in self.outcomes)

    def as_dict(self) -> dict:
        return {"studies_queried": self.studies, "seg_found": self.found, "seg_fetched": self.fetched,
                "filed": self.filed,
                "refused": [{"sop_instance_uid": o.seg_sop_instance_uid, "reason": o.reason}
                            for o in self.outcomes if not o.filed and not o.reason.startswith("made by dermpacs")]}


class Harvester:
    def __init__(self, config: ServiceConfig, store: JobStore) -> None:
        self.config = config
        self.store = store
        self.filer = CorrectionFiler(config, store, fetch_photograph=self._fetch_photograph)
        self._assoc = None
        self._received: list[Dataset] = []
        self._tmp_files: list[Path] = []
        self.pacs: Destination = config.learning.pacs or config.destination
        if self.pacs.stow_url:
            raise HarvestError("learning.pacs must be a DICOM node (AE@HOST:PORT) for C-FIND/C-GET")
        self.seen_path = self.filer.training_set.root / "harvested.json"

    def _seen(self) -> dict[str, str]:
        return json.loads(self.seen_path.read_text()) if self.seen_path.exists() else {}

    def collect(self) -> HarvestReport:
        report = HarvestReport()
        seen = self._seen()
        studies = self.store.analysed_studies()
        report.studies = len(studies)
        if not studies:
            return report
        received: list[Dataset] = []

        def on_store(event: evt.Event) -> int:
            ds = event.dataset
            ds.file_meta = event.file_meta
            received.append(ds)
            return 0x0000

        ae = AE(ae_title=self.config.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(SegmentationStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian,
                                                        DeflatedExplicitVRLittleEndian])
        roles = [build_role(SegmentationStorage, scp_role=True)]
        for sop_class in PHOTOGRAPH_SOP_CLASSES:  # a photograph the spool no longer holds (retention)
            ae.add_requested_context(sop_class, [JPEGBaseline8Bit, ExplicitVRLittleEndian, ImplicitVRLittleEndian])
            roles.append(build_role(sop_class, scp_role=True))
        assoc = ae.associate(self.pacs.host, self.pacs.port, ae_title=self.pacs.ae_title, ext_neg=roles,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        if not assoc.is_established:
            raise HarvestError(f"association with {self.pacs.describe()} refused or failed")
        try:
            wanted = []
            for study in studies:
                for series in self._find(assoc, "SERIES", StudyInstanceUID=study, Modality="SEG",
                                         SeriesInstanceUID=""):
                    for image in self._find(assoc, "IMAGE", StudyInstanceUID=study,
                                            SeriesInstanceUID=series.SeriesInstanceUID, SOPInstanceUID=""):
                        report.found += 1
                        uid = str(image.SOPInstanceUID)
                        if uid in seen or self.store.known_instance(uid):
                            continue  # fetched before, or routed in (filed or refused then)
                        wanted.append((study, series.SeriesInstanceUID, uid))
            for study, series_uid, sop_uid in wanted:
                query = Dataset()
                query.QueryRetrieveLevel = "IMAGE"
                query.StudyInstanceUID, query.SeriesInstanceUID, query.SOPInstanceUID = study, series_uid, sop_uid
                for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
                    if status is None:
                        raise HarvestError("the PACS did not answer the C-GET")
            report.fetched = len(received)
            self._assoc, self._received = assoc, received
            segs = list(received)
            for ds in segs:
                uid = str(ds.SOPInstanceUID)
                if str(ds.get("Manufacturer", "")).strip().lower() == MANUFACTURER:
                    seen[uid] = "dermpacs result"  # our own SEG: remembered, not a refusal
                    continue
                outcome = self.filer.file(ds, "harvested", calling_ae=self.pacs.ae_title)
                report.outcomes.append(outcome)
                seen[uid] = "filed" if outcome.filed else "refused"
        finally:
            self._assoc = None
            assoc.release()
            for tmp in self._tmp_files:
                tmp.unlink(missing_ok=True)
        make_private_dir(self.seen_path.parent)
        write_private(self.seen_path, json.dumps(seen, indent=1).encode())
        self.store.audit("corrections_harvested", pacs=self.pacs.describe(), **{
            k: v for k, v in report.as_dict().items() if k != "refused"})
        return report

    def _fetch_photograph(self, study: str, series: str, sop_uid: str) -> Path | None:
        """C-GET one analysed photograph into a private temporary file (deleted after the collect)."""
        if self._assoc is None:
            return None
        before = len(self._received)
        query = Dataset()
        query.QueryRetrieveLevel = "IMAGE"
        query.StudyInstanceUID, query.SeriesInstanceUID, query.SOPInstanceUID = study, series, sop_uid
        for status, _ in self._assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if status is None:
                return None
        photos = [ds for ds in self._received[before:] if str(ds.SOPInstanceUID) == sop_uid]
        if not photos:
            return None
        folder = make_private_dir(self.filer.training_set.root / ".fetched")
        path = folder / f"{case_id_for(sop_uid)}.dcm"
        buffer = io.BytesIO()
        photos[0].save_as(buffer, enforce_file_format=True)
        write_private(path, buffer.getvalue())
        self._tmp_files.append(path)
        return path

    @staticmethod
    def _find(assoc, level: str, **keys: str) -> list[Dataset]:
        query = Dataset()
        query.QueryRetrieveLevel = level
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        answers = []
        for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
            if status is None:
                raise HarvestError("the PACS did not answer the C-FIND")
            if status.Status in (0xFF00, 0xFF01) and identifier is not None:
                answers.append(identifier)
            elif status.Status not in (0x0000, 0xFF00, 0xFF01):
                raise HarvestError(f"C-FIND failed with status 0x{status.Status:04X}")
        return answers
