"""The network namespace the PACS tests run in: only loopback inside, the old one restored after."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import threading

import pytest

from tests.pacs.netns import free_port, interfaces, isolated_network, isolation_unavailable_reason

_reason = isolation_unavailable_reason()
pytestmark = pytest.mark.skipif(_reason is not None, reason=_reason or "")

# RFC 5737 documentation address: never routed anywhere, even if isolation failed.
OUTSIDE = ("192.0.2.1", 9)


def _netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_only_loopback_inside_and_restored_after():
    before = _netns_inode()
    with isolated_network():
        inside = _netns_inode()
        assert inside != before
        assert interfaces() == ["lo"]
        port = free_port()
        with socket.create_server(("127.0.0.1", port)) as server:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                conn, _ = server.accept()
                conn.close()
        with pytest.raises(OSError) as info:
            socket.create_connection(OUTSIDE, timeout=2)
        assert info.value.errno == errno.ENETUNREACH
    assert _netns_inode() == before


def test_children_and_threads_started_inside_stay_inside():
    seen: list[int] = []
    release = threading.Event()

    def worker():
        seen.append(_netns_inode())
        release.wait(5)
        seen.append(_netns_inode())

    with isolated_network():
        inside = _netns_inode()
        child = subprocess.run(
            [sys.executable, "-c", "import socket; print(sorted(n for _, n in socket.if_nameindex()))"],
            capture_output=True, text=True, check=True,
        )
        thread = threading.Thread(target=worker)
        thread.start()
    release.set()  # the main thread has left; the worker reads its namespace again
    thread.join()
    assert child.stdout.strip() == "['lo']"
    assert seen == [inside, inside]
    assert _netns_inode() != inside


def test_restored_when_the_block_raises():
    before = _netns_inode()
    with pytest.raises(RuntimeError):
        with isolated_network():
            raise RuntimeError("boom")
    assert _netns_inode() == before


def test_servers_refuse_to_start_outside_the_namespace(tmp_path):
    """Orthanc and storescp listen on all interfaces: the harness starts them only when isolated."""
    from tests.pacs.dcmtk import StoreSCP
    from tests.pacs.orthanc import OrthancServer

    with pytest.raises(RuntimeError, match="isolated_network"):
        StoreSCP(tmp_path / "in").start()
    try:
        server = OrthancServer(tmp_path / "orthanc", 11112)
    except FileNotFoundError as exc:  # Orthanc not installed: nothing could start anyway
        pytest.skip(str(exc))
    with pytest.raises(RuntimeError, match="isolated_network"):
        server.start()
