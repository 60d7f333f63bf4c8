"""The DICOM listener: a Storage SCP (and Verification SCP) that spools what it receives.

Association policy (checked on A-ASSOCIATE-RQ, before any data is accepted):

* Called AE title: must be ``config.ae_title`` or the ``called_ae_title`` of a routing
  rule (so rules can route on the called AE). Otherwise A-ASSOCIATE-RJ
  "called AE title not recognised".
* Calling AE title: if ``config.allowed_callers`` is not empty, the caller's AE title must
  be on it and, where an entry names a host, the connection must come from that address.
  Otherwise A-ASSOCIATE-RJ "calling AE title not recognised". An empty list admits any
  caller (rely on the network and TLS then).
* Presentation contexts: Verification, and C-STORE for ``config.accepted_sop_classes`` in the
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

* Reachability (``config.listener``): a new connection holds no association slot until its
  whole A-ASSOCIATE-RQ has arrived, which it must deliver within ``request_timeout_s``;
  at most ``max_pending_connections`` wait at once, and beyond that the oldest waiting one
  is dropped, so silent or slow sockets cannot lock an allowed caller out. Accepted
  associations are limited per peer address and in total (A-ASSOCIATE-RJ transient,
  "local limit exceeded").
* Size: a C-STORE data set larger than ``max_object_bytes`` is discarded as it arrives
  (never held whole in memory) and answered 0xA700.

Every refusal (a rejected association, a dropped connection, a failed TLS handshake, a
refused C-STORE) is logged and written to the audit trail (event ``rejected``) with the
reason, the calling AE title when known, and the peer address. Peer-supplied text is
escaped first (``logsafe.safe_text``).

A C-STORE is answered Success only after the encoded bytes are durable in the spool
(fsync) and the instance row is committed (synchronous=FULL): a success the PACS sees
is never lost. Duplicates (same SOP Instance UID, same bytes) are answered Success, audited,
and change nothing; the same UID with other content is kept as a new version (store.add_instance).
Logs carry UIDs and AE titles only, never patient data.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import logging
import select
import socket
import ssl
import struct
import threading
import time
from typing import Any, Callable

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from dicom.correction import SEG_ACCEPTED_TRANSFER_SYNTAXES, SEGMENTATION_STORAGE
from dicom.reader import SUPPORTED_SOP_CLASSES, SUPPORTED_TRANSFER_SYNTAXES

from .config import ListenerConfig, ServiceConfig, TlsConfig
from .health import ComponentHealth, HealthBoard
from .logsafe import safe_text
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
REJECT_LOCAL_LIMIT = (0x02, 0x03, 0x02)  # transient: try again later

TLS_HANDSHAKE_TIMEOUT_S = 10.0
_LOCK_STRIPES = 64


_short = safe_text
A_ASSOCIATE_RQ = 0x01
MAX_ASSOCIATE_RQ_BYTES = 64 * 1024  # a request with 128 contexts is ~40 kB; a bigger one is not waited for here


def await_associate_request(sock: socket.socket, timeout_s: float) -> str | None:
    """Wait until ``sock`` holds a whole A-ASSOCIATE-RQ PDU (peeked, not read); None when it does.

    Otherwise the reason to drop the connection. Until then the connection is not an
    association, so it holds none of pynetdicom's association slots. Over TLS only the
    first bytes are awaited (an SSL socket cannot peek).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"no complete A-ASSOCIATE-RQ within {timeout_s:g} s"
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return None
        try:
            readable, _, _ = select.select([sock], [], [], left)
        except (OSError, ValueError):
            return "connection closed before associating"
        if not readable:
            continue
        if isinstance(sock, ssl.SSLSocket):
            return None
        try:
            head = sock.recv(6, socket.MSG_PEEK)
            if not head:
                return "connection closed before associating"
            if len(head) == 6:
                if head[0] != A_ASSOCIATE_RQ:
                    return None  # pynetdicom answers anything else (an abort) at once
                need = 6 + struct.unpack(">I", head[2:6])[0]
                if need > MAX_ASSOCIATE_RQ_BYTES or len(sock.recv(need, socket.MSG_PEEK)) >= need:
                    return None  # complete (or too big to wait for: pynetdicom's ARTIM bounds it)
        except OSError:
            return "connection closed before associating"
        time.sleep(0.02)  # readable but incomplete: wait for more instead of peeking in a loop


class _PendingConnections:
    """Connections waiting for their A-ASSOCIATE-RQ; beyond ``limit`` the oldest is dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._waiting: dict[int, socket.socket] = {}  # insertion order = age
        self._dropped: set[int] = set()
        self._next = 0

    def enter(self, sock: socket.socket) -> int:
        with self._lock:
            ticket, self._next = self._next, self._next + 1
            while len(self._waiting) >= self.limit:
                oldest = next(iter(self._waiting))
                victim = self._waiting.pop(oldest)
                self._dropped.add(oldest)
                try:
                    victim.shutdown(socket.SHUT_RDWR)  # wakes its waiting thread
                except OSError:
                    pass
            self._waiting[ticket] = sock
            return ticket

    def leave(self, ticket: int) -> bool:
        """False when the connection was dropped to make room for a newer one."""
        with self._lock:
            self._waiting.pop(ticket, None)
            if ticket in self._dropped:
                self._dropped.discard(ticket)
                return False
            return True

    def drop_all(self) -> None:
        with self._lock:
            for sock in self._waiting.values():
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _RefusalThrottle:
    """Per peer address, the first ``burst`` dropped connections a minute are recorded one by
    one, the rest counted and recorded as one summary line: a peer that opens thousands of
    connections cannot turn each into a synchronous audit write (and so slow the job store
    that allowed callers' C-STOREs are committed to)."""

    window_s = 60.0

    def __init__(self, burst: int) -> None:
        self.burst = burst
        self._lock = threading.Lock()
        self._windows: dict[str, list[float]] = {}  # address -> [window start, recorded, suppressed]

    def admit(self, address: str) -> tuple[bool, tuple[str, int, float] | None]:
        """(record this one?, a summary of the previous window to record now, if any)."""
        now = time.monotonic()
        with self._lock:
            window = self._windows.get(address)
            summary = None
            if window is None or now - window[0] >= self.window_s:
                if window is not None and window[2]:
                    summary = (address, int(window[2]), self.window_s)
                window = self._windows[address] = [now, 0, 0]
                if len(self._windows) > 4096:  # forget quiet addresses
                    for key in [k for k, w in self._windows.items() if now - w[0] >= self.window_s and not w[2]]:
                        del self._windows[key]
            if window[1] < self.burst:
                window[1] += 1
                return True, summary
            window[2] += 1
            return False, summary

    def flush(self) -> list[tuple[str, int, float]]:
        with self._lock:
            out = [(address, int(w[2]), self.window_s) for address, w in self._windows.items() if w[2]]
            self._windows.clear()
        return out


class _BoundedDataSet(io.BytesIO):
    """A C-STORE data set buffer that stops holding bytes past ``limit`` (and counts them)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.received = 0

    @property
    def overflowed(self) -> bool:
        return self.received > self.limit

    def write(self, data: Any) -> int:  # type: ignore[override]
        self.received += len(data)
        if self.received > self.limit:
            if self.tell():
                self.seek(0)
                self.truncate()  # free what was held; the rest is counted, not kept
            return len(data)
        return super().write(data)


def limit_object_size(event: evt.Event, limit: int) -> None:
    """``EVT_CONN_OPEN`` handler: every DIMSE message of this association gets a bounded buffer."""
    dimse = event.assoc.dimse
    original = dimse.receive_primitive

    def receive_primitive(primitive: Any) -> None:
        if dimse.message is None:
            message = DIMSEMessage()
            message.data_set = _BoundedDataSet(limit)
            dimse.message = message
        original(primitive)

    dimse.receive_primitive = receive_primitive


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
    """pynetdicom's threaded server, gated: TLS handshake and the wait for the A-ASSOCIATE-RQ
    happen in the connection's own thread, bounded in time and number, before pynetdicom
    makes it an association (stock pynetdicom handshakes in the accept loop and counts a
    silent socket as an association for ``acse_timeout``)."""

    daemon_threads = True
    request_queue_size = 256  # listen backlog: a burst of connections must not drop an allowed caller's SYN
    handshake_timeout = TLS_HANDSHAKE_TIMEOUT_S
    limits: ListenerConfig = ListenerConfig()
    pending: _PendingConnections
    on_tls_failure: Callable[[tuple[str, int], Exception], None] | None = None
    on_dropped: Callable[[tuple[str, int], str], None] | None = None

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        return self.socket.accept()  # type: ignore[union-attr]

    @staticmethod
    def _close(request: Any) -> None:
        try:
            request.close()
        except OSError:
            pass

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        ticket = self.pending.enter(request)
        reason = None
        try:
            if self.ssl_context is not None:
                try:
                    request.settimeout(self.handshake_timeout)
                    request = self.ssl_context.wrap_socket(request, server_side=True)
                    request.settimeout(None)
                except (OSError, ValueError) as exc:
                    kept, ticket = self.pending.leave(ticket), -1
                    self._close(request)
                    if not kept and self.on_dropped is not None:
                        self.on_dropped(client_address, "dropped for a newer connection (too many waiting)")
                    elif kept and self.on_tls_failure is not None:
                        self.on_tls_failure(client_address, exc)
                    return
            reason = await_associate_request(request, self.limits.request_timeout_s)
        finally:
            if ticket >= 0 and not self.pending.leave(ticket):
                reason = f"dropped for a newer connection (more than {self.pending.limit} waiting to associate)"
        if reason is not None:
            self._close(request)
            if self.on_dropped is not None:
                self.on_dropped(client_address, reason)
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
        health: HealthBoard | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.spool = spool
        self.on_received = on_received
        # spool or job store unwritable (disk full, DB locked): one log line when it starts and one
        # when it ends, not a traceback per C-STORE; each refused C-STORE is still logged and audited
        self.storage_health = ComponentHealth("receiving", 1.0, 60.0, health)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._locks = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._drop_throttle = _RefusalThrottle(config.listener.refusals_recorded_per_minute)

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

        self._storage = {uid: frozenset(str(ts) for ts in SUPPORTED_TRANSFER_SYNTAXES)
                         for uid in config.accepted_sop_classes if uid in SUPPORTED_SOP_CLASSES}
        # Clinicians' corrected SEGs: filed for learning (dicom/service/corrections.py), never analysed.
        self._storage[SEGMENTATION_STORAGE] = frozenset(SEG_ACCEPTED_TRANSFER_SYNTAXES)
        self._ssl_context = server_ssl_context(config.tls) if config.tls.enabled else None

        ae = AE(ae_title=config.ae_title)
        ae.require_called_aet = False  # checked in _on_requested (ours or a rule's called AE)
        ae.require_calling_aet = []  # checked in _on_requested (with hosts)
        limits = config.listener
        ae.acse_timeout = limits.acse_timeout_s
        ae.dimse_timeout = limits.dimse_timeout_s
        ae.network_timeout = limits.network_timeout_s
        # Our own limits (per peer, total) are checked and audited in _on_requested; pynetdicom's
        # count also holds connections being torn down, so its check is only a backstop.
        ae.maximum_associations = 4 * limits.max_associations
        # 128 KiB PDUs (pynetdicom's default is 16382): three 1.1 MB photographs from dcmtk
        # storescu arrive in 49 ms instead of 55 (fewer PDUs to parse in Python), while one
        # PDU a peer sends stays bounded in memory (unlimited was no faster).
        ae.maximum_pdu_size = MAX_PDU_BYTES
        ae.add_supported_context(Verification)
        for sop_class in self._storage:
            ae.add_supported_context(sop_class, transfer_syntax_preference() if sop_class != SEGMENTATION_STORAGE
                                     else list(SEG_ACCEPTED_TRANSFER_SYNTAXES))
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
            (evt.EVT_CONN_OPEN, limit_object_size, [self.config.listener.max_object_bytes]),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_REJECTED, self._on_rejected_by_pynetdicom),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
            (evt.EVT_C_STORE, self._on_c_store),
        ]
        server = self.ae.make_server(
            (self.config.bind_address, self.config.port),
            evt_handlers=handlers,
            ssl_context=self._ssl_context,
            server_class=_Server,
        )
        server.on_tls_failure = self._on_tls_failure
        server.on_dropped = self._on_dropped
        server.limits = self.config.listener
        server.pending = _PendingConnections(self.config.listener.max_pending_connections)
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
        server.pending.drop_all()
        for summary in self._drop_throttle.flush():
            self._record_drop_summary(*summary)
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
    def _record_refusal(self, assoc: Any, reason: str) -> None:
        rq = assoc.requestor.primitive
        calling = _short(getattr(rq, "calling_ae_title", ""))
        called = _short(getattr(rq, "called_ae_title", ""))
        peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
        LOG.warning("association rejected (%s): calling %s called %s from %s", reason, calling, called, peer)
        try:
            self.store.audit("rejected", stage="association", reason=reason, calling_ae=calling,
                             called_ae=called, peer=peer)
        except Exception:  # noqa: BLE001 - the rejection must go out even if the audit cannot
            LOG.exception("could not audit a rejected association")

    def _reject(self, assoc: Any, rsd: tuple[int, int, int], reason: str) -> None:
        self._record_refusal(assoc, reason)
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
        else:
            reason = self._over_limit(assoc)
            if reason:
                self._reject(assoc, REJECT_LOCAL_LIMIT, reason)

    def _over_limit(self, assoc: Any) -> str | None:
        """'local limit exceeded: ...' when this association would pass a limit, else None."""
        limits = self.config.listener
        peer = _normalise_ip(assoc.requestor.address)
        others = [a for a in self.ae.active_associations
                  if a is not assoc and a.is_acceptor and not (a.is_rejected or a.is_aborted or a.is_released)
                  and a.requestor.primitive is not None]
        same_peer = sum(_normalise_ip(a.requestor.address) == peer for a in others)
        if same_peer >= limits.max_associations_per_peer:
            return f"local limit exceeded: {same_peer} associations from this peer"
        if len(others) >= limits.max_associations:
            return f"local limit exceeded: {len(others)} associations"
        return None

    def _on_rejected_by_pynetdicom(self, event: evt.Event) -> None:
        """pynetdicom's own rejections (its association limit, user identity): audited too."""
        assoc = event.assoc
        rj = assoc.acceptor.primitive
        rsd = (getattr(rj, "result", None), getattr(rj, "result_source", None), getattr(rj, "diagnostic", None))
        reason = getattr(rj, "reason_str", None) or f"rejected {rsd}"
        self._record_refusal(assoc, f"rejected by pynetdicom: {reason}")

    def _on_aborted(self, event: evt.Event) -> None:
        """An established association aborted (by the peer, or by pynetdicom on a message it
        cannot decode): audited, as an abort can discard a C-STORE the peer may think sent."""
        assoc = event.assoc
        if assoc.requestor.primitive is None:  # never associated: _on_conn_close reports it
            return
        peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
        calling = _short(getattr(assoc.requestor.primitive, "calling_ae_title", ""))
        LOG.warning("association from %s (%s) aborted", calling, peer)
        try:
            self.store.audit("aborted", stage="association", calling_ae=calling, peer=peer)
        except Exception:  # noqa: BLE001
            LOG.exception("could not audit an aborted association")

    def _on_conn_close(self, event: evt.Event) -> None:
        """A connection that ends without any answer to its request: pynetdicom could not decode
        the A-ASSOCIATE-RQ (e.g. control characters in an AE title) and dropped it. Audited."""
        assoc = event.assoc
        if assoc.acceptor.primitive is not None or assoc.is_rejected or assoc.is_established:
            return
        peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
        reason = "association request not understood (see the log)"
        LOG.warning("connection from %s closed: %s", peer, reason)
        try:
            self.store.audit("rejected", stage="association", reason=reason, peer=peer)
        except Exception:  # noqa: BLE001
            LOG.exception("could not audit a refused association request")

    def _on_dropped(self, client_address: tuple[str, int], reason: str) -> None:
        peer = f"{client_address[0]}:{client_address[1]}"
        record, summary = self._drop_throttle.admit(_normalise_ip(client_address[0]))
        if summary:
            self._record_drop_summary(*summary)
        if not record:
            return
        LOG.warning("connection from %s closed before association: %s", peer, reason)
        try:
            self.store.audit("rejected", stage="connection", reason=reason, peer=peer)
        except Exception:  # noqa: BLE001
            LOG.exception("could not audit a dropped connection")

    def _record_drop_summary(self, address: str, count: int, window_s: float) -> None:
        reason = f"{count} more connection(s) closed before association within {window_s:g} s (summarised)"
        LOG.warning("connections from %s: %s", address, reason)
        try:
            self.store.audit("rejected", stage="connection", reason=reason, peer=address, count=count)
        except Exception:  # noqa: BLE001
            LOG.exception("could not audit dropped connections")

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
        buffer = getattr(request, "DataSet", None)
        if isinstance(buffer, _BoundedDataSet) and buffer.overflowed:
            limit = self.config.listener.max_object_bytes
            uid = str(getattr(request, "AffectedSOPInstanceUID", "") or "")
            return self._failure(OUT_OF_RESOURCES, f"object of {buffer.received} bytes exceeds the limit of {limit}",
                                 calling=calling, peer=peer, sop=uid if is_valid_uid(uid) else None)

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
                current = self.store.current_digest(sop_uid)
                written = current is None or current[0] != digest  # new, or a changed version: keep it
                if current is None:
                    path = self.spool.store(sop_uid, data)
                elif written:
                    path = self.spool.store(sop_uid, data, version=current[1] + 1)
                else:
                    path = self.spool.instance_path(sop_uid)  # a duplicate: nothing written
            except Exception as exc:  # noqa: BLE001 - disk full, permissions, I/O error, DB locked
                self.storage_health.failed(exc)
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
                self.storage_health.failed(exc)
                if written:
                    path.unlink(missing_ok=True)  # nothing refers to it; a resend writes it again
                return self._failure(OUT_OF_RESOURCES, f"cannot record: {type(exc).__name__}", calling=calling,
                                     peer=peer, sop=sop_uid)

        self.storage_health.ok()
        elapsed_ms = (time.perf_counter() - started) * 1000
        if added == "duplicate":
            LOG.info("duplicate %s from %s (same content; kept the first copy) %.0f ms", sop_uid, calling, elapsed_ms)
            return SUCCESS
        if added == "new_version":
            LOG.warning("changed instance %s from %s: kept as version %d, its series is analysed again and earlier "
                        "results are superseded", sop_uid, calling, current[1] + 1 if current else 2)
        else:
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
