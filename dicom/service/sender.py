"""The result sender: delivers the outbox (SEG, SR, ...) to the destination, with retries.

Semantics (the store keeps the state, so a restart resumes where it stopped):

* Every due outbox item is sent: C-STORE to ``config.destination`` (a batch dealt over
  ``sender.associations`` concurrent associations), or STOW-RS when the destination is a
  DICOMweb URL.
* Delivered (C-STORE status 0x0000 or a warning 0xB000/0xB006/0xB007; STOW listed in
  ReferencedSOPSequence) -> ``store.mark_sent``; the job is done when all its items are.
* Anything else (refused association, nothing listening, failure status, HTTP error)
  -> ``store.mark_send_failed`` with a retry time ``now + backoff_delay(attempt)``, or
  None after ``config.sender.max_attempts`` attempts, which fails the job
  (``dermpacs retry`` puts it back).
* A result file that is missing or not DICOM fails its item at once: retrying cannot help.

The sender runs in its own thread (``run``); a slow or dead destination never blocks
receiving or analysing. Timeouts bound every network wait.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pydicom
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, UID
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.presentation import build_context

from dicom.reader import FileIdentity, read_file_identity

from .config import Destination, SenderConfig, ServiceConfig
from .health import ComponentHealth, HealthBoard
from .store import JobStore, OutboxItem
from .transport import LOW_LATENCY_HANDLERS

LOG = logging.getLogger("dermpacs.sender")

SUCCESS_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})
MAX_CONTEXTS = 128  # presentation contexts per association (odd IDs 1..255)
NETWORK_TIMEOUT_S = 30.0
IDLE_POLL_S = 2.0  # with nothing due, look for new results this often (a wake event is faster)
BATCH = 50


def backoff_delay(attempt: int, sender: SenderConfig) -> float:
    """Seconds before retry number ``attempt`` (1-based): initial * 2**(attempt-1), capped."""
    exponent = max(attempt - 1, 0)
    if exponent > 60:  # 2**61 * anything positive is past any sane cap
        return float(sender.backoff_max_s)
    return float(min(sender.backoff_initial_s * 2**exponent, sender.backoff_max_s))


@dataclass
class _Loaded:
    """An outbox item whose file has been checked; the whole dataset is read only if needed."""

    item: OutboxItem
    identity: FileIdentity  # from the file meta: a deflated SEG is not inflated to check it

    @property
    def transfer_syntax(self) -> UID:
        return self.identity.transfer_syntax

    @property
    def dataset(self) -> Dataset:
        return pydicom.dcmread(self.item.path)


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class ResultSender:
    """Sends due outbox items to ``config.destination``; safe to run in a thread."""

    def __init__(self, config: ServiceConfig, store: JobStore, health: HealthBoard | None = None) -> None:
        # send_c_store(path) then streams the file's encoded data set in PDU-sized chunks instead
        # of decoding it (only this sender sends paths in a dermpacs process; see _as_sent).
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
        self.config = config
        self.store = store
        self.destination: Destination = config.destination
        self._warned_destinations: set[str] = set()
        # the loop itself (outbox unreadable: DB locked, disk full) and the destination (down, refusing)
        self.loop_health = ComponentHealth("sender", config.fault_backoff_initial_s, config.fault_backoff_max_s, health)
        self.destination_health = ComponentHealth(f"destination {self.destination.describe()}",
                                                  config.sender.backoff_initial_s, config.sender.backoff_max_s, health)

    # -- the loop -------------------------------------------------------------------------
    def run(self, stop: threading.Event, wake: threading.Event | None = None) -> None:
        """Send what is due, then sleep until the next retry time, a wake-up, or stop."""
        LOG.info("sending results to %s", self.destination.describe())
        while not stop.is_set():
            try:
                self.send_due()
                next_time = self.store.next_outbox_time()
                self.loop_health.ok()
            except Exception as exc:  # noqa: BLE001 - keep the thread alive, backing off; the state is in the store
                self._sleep(self.loop_health.failed(exc), stop, None)
                continue
            timeout = IDLE_POLL_S if next_time is None else min(max(next_time - time.time(), 0.0), IDLE_POLL_S)
            self._sleep(timeout, stop, wake)

    @staticmethod
    def _sleep(timeout: float, stop: threading.Event, wake: threading.Event | None) -> None:
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if wake is None:
                stop.wait(left)
                continue
            if wake.wait(min(left, 0.1)):
                wake.clear()
                return

    def send_due(self, now: float | None = None) -> int:
        """Send every outbox item due at ``now``; return how many were delivered."""
        now = time.time() if now is None else now
        tried: set[int] = set()
        delivered = 0
        while True:
            due = [i for i in self.store.due_outbox(now, limit=len(tried) + BATCH) if i.id not in tried]
            if not due:
                return delivered
            batch = due[:BATCH]
            tried.update(item.id for item in batch)
            delivered += self._send_batch(batch, now)

    # -- one batch ------------------------------------------------------------------------
    def _fail(self, item: OutboxItem, error: str, now: float, permanent: bool = False) -> None:
        attempt = item.attempts + 1
        if permanent or attempt >= self.config.sender.max_attempts:
            retry_at = None
        else:
            retry_at = now + backoff_delay(attempt, self.config.sender)
        # per item at INFO: the destination's state change is the one WARNING/ERROR line (destination_health)
        LOG.log(logging.WARNING if retry_at is None else logging.INFO,
                "result %s (job %d) not delivered, attempt %d: %s%s", item.sop_instance_uid, item.job_id,
                attempt, error, "; giving up" if retry_at is None else f"; retry in {retry_at - now:.0f} s")
        self.store.mark_send_failed(item, _short(error), retry_at)

    def _sent(self, item: OutboxItem, status: str) -> None:
        LOG.info("result %s (job %d) delivered to %s: %s", item.sop_instance_uid, item.job_id,
                 self.destination.describe(), status)
        self.store.mark_sent(item, status)

    def _send_batch(self, items: list[OutboxItem], now: float) -> int:
        here = self.destination.describe()
        loaded: list[_Loaded] = []
        for item in items:
            if item.destination != here and item.destination not in self._warned_destinations:
                self._warned_destinations.add(item.destination)
                LOG.warning("outbox items queued for %s now go to the configured %s", item.destination, here)
            if not item.path.is_file():
                self._fail(item, f"result file missing: {item.path}", now, permanent=True)
                continue
            try:
                identity = read_file_identity(item.path)
                if identity.sop_instance_uid != item.sop_instance_uid:
                    raise ValueError(f"file holds SOP Instance UID {identity.sop_instance_uid}, "
                                     f"not {item.sop_instance_uid}")
            except Exception as exc:  # noqa: BLE001 - a broken file will not mend by waiting
                self._fail(item, f"result file unreadable: {item.path}: {type(exc).__name__}: {exc}", now,
                           permanent=True)
                continue
            loaded.append(_Loaded(item, identity))
        if not loaded:
            return 0
        if self.destination.stow_url:
            return self._stow(loaded, now)
        return self._c_store(loaded, now)

    # -- DIMSE ----------------------------------------------------------------------------
    def _ssl_context(self) -> ssl.SSLContext:
        cafile = str(self.destination.ca_certificates) if self.destination.ca_certificates else None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        own = self.config.tls
        if own.certificate is not None and own.private_key is not None:  # our identity, if the peer asks
            context.load_cert_chain(str(own.certificate), str(own.private_key))
        return context

    @staticmethod
    def _contexts(loaded: list[_Loaded]) -> list[Any]:
        """Per SOP class, the files' own syntax in a context of its own, plus a fallback.

        On its own, the stored syntax (Deflated for SEGs) cannot lose to a peer's preference
        among several in one context: when accepted, the file goes as stored. For data
        pynetdicom can re-encode (little endian, not encapsulated), a second context offers
        Explicit/Implicit VR Little Endian for peers that refuse the first.
        """
        wanted: OrderedDict[tuple[str, tuple[str, ...]], None] = OrderedDict()
        for entry in loaded:
            sop_class = entry.identity.sop_class_uid
            ts = entry.transfer_syntax
            wanted[(sop_class, (ts,))] = None
            if not ts.is_encapsulated and ts.is_little_endian:
                fallback = tuple(t for t in (ExplicitVRLittleEndian, ImplicitVRLittleEndian) if t != ts)
                wanted[(sop_class, fallback)] = None
        return [build_context(sop_class, list(syntaxes)) for sop_class, syntaxes in wanted]

    def _c_store(self, loaded: list[_Loaded], now: float) -> int:
        """Deal the batch round-robin over up to ``sender.associations`` concurrent associations.

        A PACS takes tens of milliseconds to file each object (Orthanc: ~25 ms for a SEG);
        two associations let it file two at once instead of making each result wait.
        """
        lanes = max(1, min(self.config.sender.associations, len(loaded)))
        if lanes == 1:
            return self._c_store_association(loaded, now)
        with ThreadPoolExecutor(lanes, thread_name_prefix="dermpacs-send") as pool:
            return sum(pool.map(lambda lane: self._c_store_association(loaded[lane::lanes], now), range(lanes)))

    def _c_store_association(self, loaded: list[_Loaded], now: float) -> int:
        dest = self.destination
        contexts = self._contexts(loaded)
        if len(contexts) > MAX_CONTEXTS:  # cannot happen with BATCH=50; the rest waits for the next batch
            contexts = contexts[:MAX_CONTEXTS]
        ae = AE(ae_title=self.config.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = NETWORK_TIMEOUT_S
        ae.requested_contexts = contexts
        kwargs: dict[str, Any] = {"ae_title": dest.ae_title, "evt_handlers": LOW_LATENCY_HANDLERS}
        if dest.tls:
            kwargs["tls_args"] = (self._ssl_context(), dest.host)
        try:
            assoc = ae.associate(dest.host, dest.port, **kwargs)
        except Exception as exc:  # noqa: BLE001 - e.g. a TLS context that cannot load
            assoc, error = None, f"cannot associate with {dest.describe()}: {type(exc).__name__}: {exc}"
        if assoc is None or not assoc.is_established:
            if assoc is not None:
                error = self._association_error(assoc)
            self.destination_health.failed(error)
            for entry in loaded:
                self._fail(entry.item, error, now)
            return 0

        delivered = 0
        try:
            for entry in loaded:
                if not assoc.is_established:
                    self._fail(entry.item, f"association with {dest.describe()} lost", now)
                    continue
                try:
                    rsp = assoc.send_c_store(self._as_sent(entry, assoc))
                except ValueError as exc:  # no accepted presentation context for this class/syntax
                    self._fail(entry.item, f"{dest.describe()} did not accept: {exc}", now)
                    continue
                except Exception as exc:  # noqa: BLE001 - encoding problems, association failure
                    self._fail(entry.item, f"C-STORE failed: {type(exc).__name__}: {exc}", now)
                    continue
                status = getattr(rsp, "Status", None)
                if status is None:
                    self._fail(entry.item, f"no C-STORE response from {dest.describe()} (timeout or abort)", now)
                elif int(status) in SUCCESS_STATUSES:
                    self.destination_health.ok()
                    self._sent(entry.item, f"0x{int(status):04X}")
                    delivered += 1
                else:
                    comment = getattr(rsp, "ErrorComment", "") or ""
                    self._fail(entry.item, f"C-STORE status 0x{int(status):04X} from {dest.describe()}"
                               + (f": {comment}" if comment else ""), now)
        finally:
            if assoc.is_established:
                assoc.release()
        return delivered

    @staticmethod
    def _as_sent(entry: _Loaded, assoc: Any) -> Dataset | str:
        """The file itself when the peer accepted its transfer syntax (streamed as stored, no
        decode and re-encode: measured ~10 ms saved per 3 MB SEG), else the dataset, which
        pynetdicom converts to the explicit or implicit syntax the peer accepted."""
        sop_class = entry.identity.sop_class_uid
        for context in assoc.accepted_contexts:
            if context.abstract_syntax == sop_class and context.transfer_syntax[0] == entry.transfer_syntax:
                return str(entry.item.path)
        return entry.dataset

    def _association_error(self, assoc: Any) -> str:
        dest = self.destination.describe()
        if assoc.is_rejected:
            rj = assoc.acceptor.primitive
            reason = getattr(rj, "reason_str", "") if rj is not None else ""
            result = getattr(rj, "result_str", "") if rj is not None else ""
            return f"association rejected by {dest}: {result} {reason}".strip()
        refused = [str(cx.abstract_syntax) for cx in getattr(assoc, "rejected_contexts", [])]
        if refused and not getattr(assoc, "accepted_contexts", []):  # pynetdicom then aborts it
            classes = ", ".join(sorted({UID(uid).name for uid in refused}))
            return f"{dest} did not accept any proposed presentation context ({classes})"
        if assoc.is_aborted:
            return f"association with {dest} aborted (nothing listening, TLS failure or peer abort)"
        return f"cannot associate with {dest}"

    # -- DICOMweb -------------------------------------------------------------------------
    def _stow(self, loaded: list[_Loaded], now: float) -> int:
        import requests
        from dicomweb_client import DICOMwebClient

        url = self.destination.stow_url
        assert url is not None
        session = requests.Session()
        if self.destination.ca_certificates:
            session.verify = str(self.destination.ca_certificates)
        own = self.config.tls
        if own.certificate is not None and own.private_key is not None:
            session.cert = (str(own.certificate), str(own.private_key))
        try:
            client = DICOMwebClient(url, session=session, timeout=(10, 120))
            client.set_http_retry_params(retry=False)  # the outbox retries, with its own backoff
            response = client.store_instances([entry.dataset for entry in loaded])
        except requests.HTTPError as exc:
            body = _stow_response(exc.response)
            if body is None:
                code = exc.response.status_code if exc.response is not None else "?"
                for entry in loaded:
                    self._fail(entry.item, f"STOW-RS to {url}: HTTP {code}", now)
                return 0
            return self._stow_outcome(loaded, body, now, f"HTTP {exc.response.status_code}", ok=False)
        except Exception as exc:  # noqa: BLE001 - connection refused, timeout, TLS, bad response
            self.destination_health.failed(f"STOW-RS to {url} failed: {type(exc).__name__}")
            for entry in loaded:
                self._fail(entry.item, f"STOW-RS to {url} failed: {type(exc).__name__}: {_short(str(exc), 200)}", now)
            return 0
        finally:
            session.close()
        self.destination_health.ok()
        return self._stow_outcome(loaded, response, now, "HTTP 2xx", ok=True)

    def _stow_outcome(self, loaded: list[_Loaded], response: Dataset, now: float, http: str, ok: bool) -> int:
        """Per instance: listed as stored -> sent; listed as failed, or not listed -> failed."""
        stored = {str(i.ReferencedSOPInstanceUID) for i in response.get("ReferencedSOPSequence", [])
                  if "ReferencedSOPInstanceUID" in i}
        failed = {str(i.ReferencedSOPInstanceUID): i.get("FailureReason")
                  for i in response.get("FailedSOPSequence", []) if "ReferencedSOPInstanceUID" in i}
        listed = bool(stored or failed)
        delivered = 0
        for entry in loaded:
            uid = entry.item.sop_instance_uid
            if uid in failed:
                reason = failed[uid]
                code = f"0x{int(reason):04X}" if reason is not None else "unknown"
                self._fail(entry.item, f"STOW-RS refused the instance: failure reason {code} ({http})", now)
            elif uid in stored or (ok and not listed):
                self._sent(entry.item, http)  # a success without a body: all stored
                delivered += 1
            else:
                self._fail(entry.item, f"STOW-RS response does not list the instance ({http})", now)
        return delivered


def _stow_response(response: Any) -> Dataset | None:
    """The DICOM JSON body of an HTTP error response (409: some instances failed), if any."""
    if response is None:
        return None
    try:
        if "json" in response.headers.get("Content-Type", ""):
            return Dataset.from_json(response.json())
    except Exception:  # noqa: BLE001
        return None
    return None


__all__ = ["ResultSender", "backoff_delay", "SUCCESS_STATUSES"]
