"""Run network tests inside a private network namespace that has only loopback.

Why: Orthanc 1.10 has no bind-address option and listens on all interfaces, and a
dermpacs test must never talk to (or be reachable from) anything but itself. A fresh
network namespace has one interface, ``lo``, and no routes, so every server started in
it is reachable on 127.0.0.1 only, and every connection to any other address fails at
once (ENETUNREACH) without a packet leaving the machine.

Linux namespaces belong to a *thread*, not to the process:

* :func:`isolated_network` moves the calling thread only. Enter it from the main thread
  (pytest runs fixtures and tests there) *before* starting any server.
* Child processes (Orthanc, dcmtk ``storescp``) and threads (pynetdicom servers) started
  while inside inherit the namespace and stay in it, also after the block has exited;
  sockets keep the namespace they were created in.
* Threads that already existed before entering (e.g. a thread pool) are *not* inside.
* The namespace disappears when its last process, thread and socket are gone, so stop
  the servers within the block.

Creating a namespace needs CAP_SYS_ADMIN (the test runner runs as root);
:func:`isolation_unavailable_reason` says why it cannot be used, for ``pytest.skip``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import struct
from collections.abc import Iterator

__all__ = ["isolated_network", "isolation_unavailable_reason", "require_isolation", "free_port", "interfaces"]

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _loopback_up() -> None:
    """``ip link set lo up`` without a subprocess: SIOCSIFFLAGS on a socket made in the namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, ifreq))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


@contextlib.contextmanager
def isolated_network() -> Iterator[None]:
    """Move the calling thread into a new network namespace with only ``lo`` up; restore on exit.

    Enter from the main thread before starting servers (see the module docstring). On
    exit the thread returns to the namespace it came from (``setns`` on a descriptor of
    ``/proc/thread-self/ns/net`` saved on entry), also when the block raises.
    """
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        try:
            _loopback_up()
            yield
        finally:
            _check(_libc.setns(original, CLONE_NEWNET), "setns(original network namespace)")
    finally:
        os.close(original)


def isolation_unavailable_reason() -> str | None:
    """None if :func:`isolated_network` works here, else why not (for ``pytest.skip``)."""
    try:
        with isolated_network():
            pass
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOSYS):
            return f"cannot create a network namespace (needs root / CAP_SYS_ADMIN): {exc}"
        raise
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (bind port 0, read it, close).

    Another process may take it before the caller binds it; inside a fresh namespace
    nothing else is running, so that race is only among the test's own servers.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def interfaces() -> list[str]:
    """Names of the network interfaces the calling thread sees (``['lo']`` when isolated)."""
    return sorted(name for _, name in socket.if_nameindex())


def require_isolation(what: str) -> None:
    """Raise unless the calling thread sees only ``lo``: for servers that listen on all interfaces.

    Orthanc 1.10 and dcmtk storescp cannot bind to one address; started outside
    :func:`isolated_network` they would be reachable from the network.
    """
    seen = interfaces()
    if seen != ["lo"]:
        raise RuntimeError(
            f"{what} listens on all interfaces: start it inside tests.pacs.netns.isolated_network() "
            f"(this thread sees {', '.join(seen)})"
        )
