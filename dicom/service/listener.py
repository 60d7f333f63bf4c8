"""The DICOM listener: a Storage SCP (and Verification SCP) that spools what it receives.

Association policy (checked on A-ASSOCIATE-RQ, before any data is accepted):

* Called AE title: must be ``config.ae_title`` or the ``called_ae_title`` of a routing
  rule (so rules can route on the called AE). Otherwise A-ASSOCIATE-RJ
  "called AE title not recognised".
* Calling AE title: if ``config.allowed_callers`` is not empty, the caller's AE title must
  be on it and, where an entry names a host, the connection must come from that address.
  Otherwise A-ASSOCIATE-RJ "calling AE title not recognised". An empty list admits any
  caller (rely on the network and TLS then).
* Presentation contexts: Verification, and C-STORE for ``SUPPORTED_SOP_CLASSES`` in the
  ``SUPPORTED_TRANSFER_SYNTAXES`` (stored as received, never transcoded), and Segmentation
  Storage (clinicians' corrected SEGs: filed for learning by the scheduler, never
  analysed; ``dicom/service/corrections.py``). Other contexts
  are rejected; an association that proposes no acceptable context at all is rejected
  (permanent, no reason given) instead of being accepted with nothing to do.
* TLS (optional): the server certificate from ``config.tls``; with
  ``require_client_certificate`` the client must present one signed by
  ``ca_certificates``. The handshake runs in the connection's own thread with a timeout,
  so a client that connects and stays silent cannot stall the accept loop (stock
  pynetdicom handshakes in the accept loop, without a timeout).

Every rejection is written to the audit trail (event ``rejected``) with the reason, the
calling AE title and the peer address.

A C-STORE is answered Success only after the encoded bytes are durable in the spool
(fsync) and the instance row is committed (synchronous=FULL): a success the PACS sees
is never lost. Duplicates (same SOP Instance UID) are answered Success, audited, and
change nothing. Logs carry UIDs and AE titles only, never patient data.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import socket
import ssl
import threading
import time
from typing import Any, Callable

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from dicom.correction import SEG_ACCEPTED_TRANSFER_SYNTAXES, SEGMENTATION_STORAGE
from dicom.reader import SUPPORTED_SOP_CLASSES, SUPPORTED_TRANSFER_SYNTAXES

from .config import ServiceConfig, TlsConfig
from .router import routing_header
from .spool import Spool, is_valid_uid
from .store import JobStore, ReceivedInstance
from .transport import LOW_LATENCY_HANDLERS

LOG = logging.getLogger("dermpacs.listener")

# C-STORE response statuses (PS3.4 B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC210

# A-ASSOCIATE-RJ (result, source, diagnostic)
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_CALLED_AE = (0x01, 0x01, 0x07)
REJECT_NO_REASON = (0x01, 0x01, 0x01)

TLS_HANDSHAKE_TIMEOUT_S = 10.0
_LOCK_STRIPES = 64


def _short(value: object, limit: int = 80) -> str:
    """A peer-supplied value made safe for logs and the audit trail (bounded, printable)."""
    text = value if isinstance(value, str) else repr(value)
    text = text.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def _resolve_host(host: str) -> frozenset[str]:
    """The IP addresses a configured caller host stands for (an IP, or a name resolved once)."""
    try:
        return frozenset({str(ipaddress.ip_address(host))})
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as exc:
        raise ValueError(f"allowed_callers: cannot resolve host {host!r}: {exc}") from exc
    return frozenset(str(ipaddress.ip_address(info[4][0])) for info in infos)


def _normalise_ip(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


def server_ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """The listener's TLS context: TLS 1.2+, our certificate, optionally client certificates."""
    if tls.certificate is None or tls.private_key is None:
        raise ValueError("tls: certificate and private_key are both needed")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    if tls.ca_certificates is not None:
        context.load_verify_locations(cafile=str(tls.ca_certificates))
    if tls.require_client_certificate:
        if tls.ca_certificates is None:
            raise ValueError("tls: require_client_certificate needs ca_certificates")
        context.verify_mode = ssl.CERT_REQUIRED
    elif tls.ca_certificates is not None:
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


_PREFERENCE = [
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline: what cameras and PACS hold; taken as is
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.1.99",  # Deflated explicit VR little endian
    "1.2.840.10008.1.2.1",  # Explicit VR little endian
    "1.2.840.10008.1.2",  # Implicit VR little endian
]


def transfer_syntax_preference() -> list[str]:
    """SUPPORTED_TRANSFER_SYNTAXES in the order we pick when one context offers several.

    pynetdicom accepts the first of *our* list that the caller offers. Encapsulated
    syntaxes come first, so a caller that holds a JPEG photograph sends it unchanged
    instead of decoding it for us (callers usually propose one context per syntax,
    and then choose themselves).
    """
    supported = {str(ts) for ts in SUPPORTED_TRANSFER_SYNTAXES}
    return [ts for ts in _PREFERENCE if ts in supported] + sorted(supported - set(_PREFERENCE))


MAX_PDU_BYTES = 131072


class _Server(ThreadedAssociationServer):
    """pynetdicom's threaded server with the TLS handshake moved off the accept loop."""

    handshake_timeout = TLS_HANDSHAKE_TIMEOUT_S
    on_tls_failure: Callable[[tuple[str, int], Exception], None] | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        return self.socket.accept()  # type: ignore[union-attr]

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is not None:
            try:
                request.settimeout(self.handshake_timeout)
                request = self.ssl_context.wrap_socket(request, server_side=True)
                request.settimeout(None)
            except (OSError, ValueError) as exc:
                try:
                    request.close()
                except OSError:
                    pass
                if self.on_tls_failure is not None:
                    self.on_tls_failure(client_address, exc)
                return
        super().process_request_thread(request, client_address)


class DicomListener:
    """Storage + Verification SCP on ``config.bind_address:config.port`` (port 0: any free port)."""

    def __init__(
        self,
        config: ServiceConfig,
        store: JobStore,
        spool: Spool,
        on_received: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.spool = spool
        self.on_received = on_received
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]

        self.called_ae_titles = frozenset(
            {config.ae_title.strip()}
            | {r.called_ae_title.strip() for r in config.rules if r.called_ae_title}
        )
        # calling AE title -> allowed peer IPs (None: from any host)
        self._allowed: dict[str, set[str] | None] = {}
        for caller in config.allowed_callers:
            title = caller.ae_title.strip()
            if caller.host is None:
                self._allowed[title] = None
            elif title not in self._allowed or self._allowed[title] is not None:
                self._allowed.setdefault(title, set()).update(_resolve_host(caller.host))  # type: ignore[union-attr]

        self._storage = {uid: frozenset(str(ts) for ts in SUPPORTED_TRANSFER_SYNTAXES) for uid in SUPPORTED_SOP_CLASSES}
        # Clinicians' corrected SEGs: filed for learning (dicom/service/corrections.py), never analysed.
        self._storage[SEGMENTATION_STORAGE] = frozenset(SEG_ACCEPTED_TRANSFER_SYNTAXES)
        self._ssl_context = server_ssl_context(config.tls) if config.tls.enabled else None

        ae = AE(ae_title=config.ae_title)
        ae.require_called_aet = False  # checked in _on_requested (ours or a rule's called AE)
        ae.require_calling_aet = []  # checked in _on_requested (with hosts)
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.network_timeout = 60
        # 128 KiB PDUs (pynetdicom's default is 16382): three 1.1 MB photographs from dcmtk
        # storescu arrive in 49 ms instead of 55 (fewer PDUs to parse in Python), while one
        # PDU a peer sends stays bounded in memory (unlimited was no faster).
        ae.maximum_pdu_size = MAX_PDU_BYTES
        ae.add_supported_context(Verification)
        for sop_class in SUPPORTED_SOP_CLASSES:
            ae.add_supported_context(sop_class, transfer_syntax_preference())
        ae.add_supported_context(SEGMENTATION_STORAGE, list(SEG_ACCEPTED_TRANSFER_SYNTAXES))
        self.ae = ae
        self._acceptable = {str(cx.abstract_syntax): frozenset(str(ts) for ts in cx.transfer_syntax)
                            for cx in ae.supported_contexts}

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Bind and serve in a background thread; returns at once."""
        if self._server is not None:
            raise RuntimeError("listener already started")
        handlers = [
            *LOW_LATENCY_HANDLERS,
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_STORE, self._on_c_store),
        ]
        server = self.ae.make_server(
            (self.config.bind_address, self.config.port),
            evt_handlers=handlers,
            ssl_context=self._ssl_context,
            server_class=_Server,
        )
        server.on_tls_failure = self._on_tls_failure
        self.ae._servers.append(server)  # so ae.shutdown() and server.shutdown() know it
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1},  # stop() returns within 0.1 s
            name=f"dicom-listener:{server.server_address[1]}", daemon=True,
        )
        self._thread.start()
        self._server = server
        LOG.info(
            "listening as %s on %s:%d%s", self.config.ae_title, server.server_address[0], server.server_address[1],
            " (TLS)" if self._ssl_context else "",
        )

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting; let running associations finish (up to ``grace_s``), then abort them."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        deadline = time.monotonic() + grace_s
        while self.ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.02)
        for assoc in self.ae.active_associations:
            assoc.abort()
        if self._thread is not None:
            self._thread.join(timeout=grace_s)
        LOG.info("listener stopped")

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("listener not started")
        return int(self._server.server_address[1])

    # -- association policy ---------------------------------------------------------------
    def _reject(self, assoc: Any, rsd: tuple[int, int, int], reason: str) -> None:
        rq = assoc.requestor.primitive
        calling, called = _short(rq.calling_ae_title), _short(rq.called_ae_title)
        peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
        LOG.warning("association rejected (%s): calling %s called %s from %s", reason, calling, called, peer)
        try:
            self.store.audit("rejected", stage="association", reason=reason, calling_ae=calling,
                             called_ae=called, peer=peer)
        except Exception:  # noqa: BLE001 - the rejection must go out even if the audit cannot
            LOG.exception("could not audit a rejected association")
        assoc.acse.send_reject(*rsd)
        assoc.kill()  # waits for the peer to close (or the ARTIM timer), as pynetdicom's own rejection

    def _caller_allowed(self, calling: str, address: str) -> bool:
        if not self._allowed:
            return True
        if calling not in self._allowed:
            return False
        hosts = self._allowed[calling]
        return hosts is None or _normalise_ip(address) in hosts

    def _has_acceptable_context(self, assoc: Any) -> bool:
        for cx in assoc.requestor.primitive.presentation_context_definition_list:
            abstract = str(cx.abstract_syntax)
            offered = {str(ts) for ts in cx.transfer_syntax}
            if offered & self._acceptable.get(abstract, frozenset()):
                return True
        return False

    def _on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        rq = assoc.requestor.primitive
        calling = str(rq.calling_ae_title).strip()
        called = str(rq.called_ae_title).strip()
        if called not in self.called_ae_titles:
            self._reject(assoc, REJECT_CALLED_AE, "called AE title not recognised")
        elif not self._caller_allowed(calling, assoc.requestor.address):
            self._reject(assoc, REJECT_CALLING_AE, "calling AE title not recognised")
        elif not self._has_acceptable_context(assoc):
            self._reject(assoc, REJECT_NO_REASON, "no acceptable presentation context")

    def _on_tls_failure(self, client_address: tuple[str, int], exc: Exception) -> None:
        peer = f"{client_address[0]}:{client_address[1]}"
        reason = f"TLS handshake failed: {_short(str(exc) or type(exc).__name__, 160)}"
        LOG.warning("connection from %s refused: %s", peer, reason)
        try:
            self.store.audit("rejected", stage="tls", reason=reason, peer=peer)
        except Exception:  # noqa: BLE001
            LOG.exception("could not audit a TLS failure")

    # -- C-STORE --------------------------------------------------------------------------
    def _failure(self, status: int, reason: str, *, calling: str, peer: str, sop: str | None) -> Dataset:
        LOG.warning("C-STORE from %s (%s) refused 0x%04X: %s", calling, peer, status, reason)
        try:
            self.store.audit("rejected", sop=sop, stage="c-store", reason=reason, calling_ae=calling, peer=peer,
                             status=f"0x{status:04X}")
        except Exception:  # noqa: BLE001 - the answer to the peer matters more
            LOG.exception("could not audit a refused C-STORE")
        rsp = Dataset()
        rsp.Status = status
        rsp.ErrorComment = reason.replace("\\", "/")[:64]  # LO: no backslash (a value separator)
        return rsp

    def _on_c_store(self, event: evt.Event) -> Dataset | int:
        started = time.perf_counter()
        assoc = event.assoc
        calling = _short(str(assoc.requestor.primitive.calling_ae_title).strip(), 16)
        called = str(assoc.requestor.primitive.called_ae_title).strip()
        peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
        request = event.request

        # 1. decode (no pixel decoding: element values only), and check the identifying UIDs
        try:
            ds = event.dataset
            for _ in ds:  # convert every top-level element now, so a malformed one fails here
                pass
            header = routing_header(ds)
            uids = {kw: ds.get(kw) for kw in ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID")}
        except Exception as exc:  # noqa: BLE001 - anything undecodable is "cannot understand"
            return self._failure(CANNOT_UNDERSTAND, f"dataset cannot be decoded: {type(exc).__name__}",
                                 calling=calling, peer=peer, sop=None)
        uids = {kw: (str(v) if v is not None else None) for kw, v in uids.items()}
        sop_uid = uids["SOPInstanceUID"]
        bad = [kw for kw, value in uids.items() if not is_valid_uid(value)]
        if bad:
            details = ", ".join(f"{kw}={_short(uids[kw], 40)}" for kw in bad)
            return self._failure(CANNOT_UNDERSTAND, f"invalid or missing UID: {details}", calling=calling, peer=peer,
                                 sop=sop_uid if is_valid_uid(sop_uid) else None)
        assert sop_uid is not None
        if sop_uid != str(request.AffectedSOPInstanceUID):
            return self._failure(CANNOT_UNDERSTAND, "SOPInstanceUID differs from the C-STORE request",
                                 calling=calling, peer=peer, sop=sop_uid)
        if uids["SOPClassUID"] != str(request.AffectedSOPClassUID) or uids["SOPClassUID"] not in self._storage:
            return self._failure(DATASET_DOES_NOT_MATCH_SOP_CLASS,
                                 f"SOPClassUID {uids['SOPClassUID']} does not match the request",
                                 calling=calling, peer=peer, sop=sop_uid)

        # 2. spool the bytes as received, then commit the row; a success is only sent after both
        data = event.encoded_dataset()
        digest = hashlib.sha256(data).hexdigest()
        with self._lock_for(sop_uid):
            try:
                known = self.store.known_instance(sop_uid)
                path = self.spool.instance_path(sop_uid) if known else self.spool.store(sop_uid, data)
            except Exception as exc:  # noqa: BLE001 - disk full, permissions, I/O error, DB locked
                LOG.exception("cannot spool %s", sop_uid)
                return self._failure(OUT_OF_RESOURCES, f"cannot store: {type(exc).__name__}", calling=calling,
                                     peer=peer, sop=sop_uid)
            item = ReceivedInstance(
                sop_instance_uid=sop_uid,
                sop_class_uid=uids["SOPClassUID"] or "",
                study_instance_uid=uids["StudyInstanceUID"] or "",
                series_instance_uid=uids["SeriesInstanceUID"] or "",
                path=path,
                sha256=digest,
                size=len(data),
                calling_ae=calling,
                called_ae=called,
                peer=peer,
                header=header,
            )
            try:
                added = self.store.add_instance(item)
            except Exception as exc:  # noqa: BLE001
                LOG.exception("cannot record %s", sop_uid)
                if not known:
                    path.unlink(missing_ok=True)  # nothing refers to it; a resend writes it again
                return self._failure(OUT_OF_RESOURCES, f"cannot record: {type(exc).__name__}", calling=calling,
                                     peer=peer, sop=sop_uid)

        elapsed_ms = (time.perf_counter() - started) * 1000
        if not added:
            LOG.info("duplicate %s from %s (kept the first copy) %.0f ms", sop_uid, calling, elapsed_ms)
            return SUCCESS
        LOG.info("received %s series %s from %s, %d bytes, %.0f ms", sop_uid, item.series_instance_uid, calling,
                 len(data), elapsed_ms)
        if self.on_received is not None:
            try:
                self.on_received(item.series_instance_uid)
            except Exception:  # noqa: BLE001 - the instance is safely stored; the scheduler polls anyway
                LOG.exception("on_received callback failed")
        return SUCCESS

    def _lock_for(self, sop_uid: str) -> threading.Lock:
        """Receipts of one UID are serialised (check, write, record); different UIDs run in parallel."""
        digest = hashlib.blake2b(sop_uid.encode("ascii"), digest_size=4).digest()
        return self._locks[int.from_bytes(digest, "big") % _LOCK_STRIPES]


__all__ = ["DicomListener", "server_ssl_context"]
