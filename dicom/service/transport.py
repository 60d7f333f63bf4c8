"""TCP settings for every DICOM association dermpacs opens or accepts.

DIMSE writes a message's command set and data set as separate PDUs and then waits for
the peer's answer. With Nagle's algorithm on, the last small write waits for the peer's
delayed ACK (about 40 ms on Linux), so every C-STORE of a small object (an SR) and every
C-STORE response pays that stall. Measured on loopback: one 11 KB SR C-STORE took 47 ms,
6 ms with TCP_NODELAY. pynetdicom does not set it; these handlers do, on connection.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

from pynetdicom import evt

LOG = logging.getLogger("dermpacs.transport")


def set_tcp_nodelay(event: evt.Event) -> None:
    """``EVT_CONN_OPEN`` handler: send each PDU at once instead of waiting for the peer's ACK."""
    transport = getattr(event.assoc.dul, "socket", None)
    sock: Any = getattr(transport, "socket", None)
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # not TCP (e.g. a socket pair in a test); latency only, never fatal
        LOG.debug("TCP_NODELAY not set: %s", exc)


#: Pass as (part of) ``evt_handlers`` to ``AE.associate``, ``AE.start_server`` or ``AE.make_server``.
LOW_LATENCY_HANDLERS: list[tuple[Any, Any]] = [(evt.EVT_CONN_OPEN, set_tcp_nodelay)]

__all__ = ["LOW_LATENCY_HANDLERS", "set_tcp_nodelay"]
