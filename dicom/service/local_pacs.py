"""A minimal storage SCP: the embedded stand-in for the PACS in `make demo` and in tests.

It accepts what dermpacs sends back (SEG, SR, and photographs for good measure), writes
each instance to a folder named by a hash of its UID, and lets the caller wait for N.
It also answers Study Root C-FIND (STUDY and SERIES level, exact matching) and C-GET
(SERIES level) over what it holds, so dermpacs can fetch a patient's earlier results
from it as from a real PACS (`make demo`'s follow-up visit).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pydicom import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    ComprehensiveSRStorage,
    Comprehensive3DSRStorage,
    EnhancedSRStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
    VLPhotographicImageStorage,
)

from .spool import atomic_write
from .transport import LOW_LATENCY_HANDLERS

ACCEPTED_SOP_CLASSES = (
    SegmentationStorage, Comprehensive3DSRStorage, ComprehensiveSRStorage, EnhancedSRStorage,
    VLPhotographicImageStorage, SecondaryCaptureImageStorage,
)
TRANSFER_SYNTAXES = [DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit]


class LocalStorageSCP:
    """Receive instances on 127.0.0.1; ``received`` maps SOP Instance UID -> file path."""

    def __init__(self, folder: Path, ae_title: str = "LOCALPACS", port: int = 0, host: str = "127.0.0.1",
                 match_issuer: bool = True) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ae_title, self.host, self.requested_port = ae_title, host, port
        self.received: dict[str, Path] = {}
        self.store_count = 0  # C-STOREs answered, duplicates included
        self.match_issuer = match_issuer  # False: like a PACS that does not index Issuer of Patient ID
        self.queries: list[str] = []  # "C-FIND STUDY", "C-GET SERIES", ... in order, for tests and the demo
        self._headers: dict[str, Dataset] = {}
        self._changed = threading.Condition()
        self._server = None

    def _on_store(self, event) -> int:
        ds = event.dataset
        uid = str(ds.SOPInstanceUID)
        path = self.folder / (hashlib.sha256(uid.encode()).hexdigest()[:24] + ".dcm")
        atomic_write(path, event.encoded_dataset())
        with self._changed:
            self.received[uid] = path
            self._headers[uid] = ds
            self.store_count += 1
            self._changed.notify_all()
        return 0x0000

    # -- query/retrieve over what was received ----------------------------------------------
    def _matching(self, query: Dataset, level: str) -> list[Dataset]:
        """One header per matching study (or series); keys compared exactly when given."""
        keys = ["PatientID", "StudyInstanceUID"] + (["IssuerOfPatientID"] if self.match_issuer else [])
        keys += ["Modality", "SeriesInstanceUID"] if level == "SERIES" else []
        group_by = "StudyInstanceUID" if level == "STUDY" else "SeriesInstanceUID"
        with self._changed:
            headers = list(self._headers.values())
        found: dict[str, Dataset] = {}
        for ds in headers:
            if all(not query.get(k) or str(query.get(k)) == str(ds.get(k, "")) for k in keys if k in query):
                found.setdefault(str(ds.get(group_by)), ds)
        return list(found.values())

    def _on_find(self, event):
        query = event.identifier
        level = str(query.get("QueryRetrieveLevel", ""))
        self.queries.append(f"C-FIND {level}")
        if level not in ("STUDY", "SERIES"):
            yield 0xA900, None
            return
        for ds in self._matching(query, level):
            answer = Dataset()
            answer.QueryRetrieveLevel = level
            for element in query:
                if element.keyword and element.keyword != "QueryRetrieveLevel":
                    setattr(answer, element.keyword, ds.get(element.keyword, ""))
            yield 0xFF00, answer

    def _on_get(self, event):
        query = event.identifier
        self.queries.append(f"C-GET {query.get('QueryRetrieveLevel', '')}")
        series = str(query.get("SeriesInstanceUID", ""))
        with self._changed:
            paths = [self.received[uid] for uid, ds in self._headers.items()
                     if str(ds.get("SeriesInstanceUID")) == series and series]
        import pydicom

        yield len(paths)
        for path in paths:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, pydicom.dcmread(path)

    def start(self) -> "LocalStorageSCP":
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        for sop_class in ACCEPTED_SOP_CLASSES:  # SCU role too: C-GET sends them back on the association
            ae.add_supported_context(sop_class, TRANSFER_SYNTAXES, scu_role=True, scp_role=True)
        self._server = ae.start_server((self.host, self.requested_port), block=False,
                                       evt_handlers=[*LOW_LATENCY_HANDLERS, (evt.EVT_C_STORE, self._on_store),
                                                     (evt.EVT_C_FIND, self._on_find), (evt.EVT_C_GET, self._on_get)])
        return self

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def address(self) -> str:
        """``AE@HOST:PORT``, the form dermpacs takes as --destination."""
        return f"{self.ae_title}@{self.host}:{self.port}"

    def snapshot(self) -> dict[str, Path]:
        """A copy of ``received`` that the receiving thread cannot change under the caller."""
        with self._changed:
            return dict(self.received)

    def wait_for(self, count: int, timeout_s: float) -> bool:
        """Block until ``count`` distinct instances have arrived (or the timeout passes)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while len(self.received) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> "LocalStorageSCP":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def send_instances(instances: Sequence[Path | Dataset], address: str, calling_ae: str = "LOCALPACS") -> list[int]:
    """C-STORE files (or datasets already read) to ``AE@HOST:PORT`` over one association, as a PACS would.

    Each instance is proposed in its own transfer syntax (JPEG stays JPEG). Returns the statuses.
    """
    import pydicom

    from .config import Destination

    destination = Destination.parse(address)
    datasets = [ds if isinstance(ds, Dataset) else pydicom.dcmread(ds) for ds in instances]
    ae = AE(ae_title=calling_ae)
    for sop_class, syntax in {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}:
        ae.add_requested_context(sop_class, [syntax])
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title,
                         evt_handlers=LOW_LATENCY_HANDLERS)
    if not assoc.is_established:
        raise ConnectionError(f"association with {address} was not established")
    try:
        statuses = []
        for ds in datasets:
            status = assoc.send_c_store(ds)
            statuses.append(int(getattr(status, "Status", 0xFFFF)))
        return statuses
    finally:
        assoc.release()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_echo(address: str, timeout_s: float, calling_ae: str = "LOCALPACS", alive=lambda: True) -> None:
    """Poll ``AE@HOST:PORT`` with C-ECHO until it answers; ``alive()`` False aborts early."""
    from pynetdicom.sop_class import Verification

    from .config import Destination

    import logging

    destination = Destination.parse(address)
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    deadline = time.monotonic() + timeout_s
    # Refused connections are expected while the node starts: not errors worth a log line.
    transport_log = logging.getLogger("pynetdicom.transport")
    saved_level = transport_log.level
    transport_log.setLevel(logging.CRITICAL)
    try:
        _poll_echo(ae, destination, deadline, address, alive)
    finally:
        transport_log.setLevel(saved_level)


def _poll_echo(ae, destination, deadline: float, address: str, alive) -> None:
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{address} is not running")
        assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
        if assoc.is_established:
            status = assoc.send_c_echo()
            assoc.release()
            if status and status.Status == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"{address} did not answer C-ECHO in time")
