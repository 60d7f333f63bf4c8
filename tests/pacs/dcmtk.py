"""dcmtk peers for network tests: ``storescp`` as a receiving node, ``storescu`` as a sender.

Why dcmtk: it is an independent DICOM implementation (Debian package ``dcmtk``), so a
test that passes against it does not merely show that pynetdicom agrees with itself.
Start these inside :func:`tests.pacs.netns.isolated_network`, on loopback only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from .netns import free_port, require_isolation

__all__ = ["StoreSCP", "dcmtk_environment", "storescu", "wait_for_port", "wait_until"]


def dcmtk_environment() -> dict[str, str]:
    """The environment for a DCMTK-based peer (storescp, storescu, Orthanc), Nagle disabled.

    DCMTK leaves Nagle's algorithm on unless TCP_NODELAY=1 is in its environment; then each
    of its small PDU writes (a C-STORE response, the last fragment of a data set) waits
    for the peer's delayed ACK, about 40 ms per message on Linux. deploy/orthanc sets it for
    Orthanc; the test peers get the same setting.
    """
    return {**os.environ, "TCP_NODELAY": "1"}


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate()`` until it returns a truthy value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_for_port(port: int, timeout: float = 10.0, process: subprocess.Popen | None = None) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:``port``.

    If ``process`` exits meanwhile (port taken, bad option), fail at once with its output.
    """

    def accepting() -> bool:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    wait_until(accepting, timeout, what=f"a listener on 127.0.0.1:{port}")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found: install the Debian package dcmtk")
    return path


class StoreSCP:
    """dcmtk ``storescp`` on 127.0.0.1 (a free port), storing what it receives in ``directory``.

    Accepts every storage SOP class (``-pm``) and transfer syntax (``+xa``), writes each
    instance as ``<SOPInstanceUID-derived name>.dcm`` in the transfer syntax it was sent
    in. Use as a context manager; :meth:`received` reads what has arrived.
    """

    def __init__(self, directory: str | Path, *, ae_title: str = "DERMAI", port: int | None = None):
        self.directory = Path(directory)
        self.ae_title = ae_title
        self.port = port or free_port()
        self.log_path = self.directory.parent / f"storescp-{self.port}.log"
        self._process: subprocess.Popen | None = None

    def start(self) -> "StoreSCP":
        """Start storescp (inside :func:`isolated_network`: it listens on all interfaces)."""
        require_isolation("storescp")
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self._process = subprocess.Popen(
            [_tool("storescp"), "-aet", self.ae_title, "-od", str(self.directory), "-pm", "+xa",
             "-fe", ".dcm", "-dhl", "-v", str(self.port)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dcmtk_environment(),
        )
        log.close()
        wait_for_port(self.port, process=self._process)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> "StoreSCP":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def received(self) -> dict[str, Dataset]:
        """SOP Instance UID -> dataset (no pixel data) of every complete file received so far.

        storescp writes files in place, so a file still being written is skipped (it
        fails to parse) and shows up on a later call.
        """
        out: dict[str, Dataset] = {}
        for path in sorted(self.directory.glob("*.dcm")):
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                out[str(ds.SOPInstanceUID)] = ds
            except Exception:  # partial file: not complete yet
                continue
        return out


# storescu proposes compressed transfer syntaxes only when told which one (one per run).
_PROPOSE = {
    "1.2.840.10008.1.2.4.50": "-xy",  # JPEG Baseline
    "1.2.840.10008.1.2.4.70": "-xs",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.90": "-xv",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "-xw",  # JPEG 2000
    "1.2.840.10008.1.2.4.80": "-xt",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "-xu",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.5": "-xr",  # RLE
    "1.2.840.10008.1.2.1.99": "-xd",  # Deflated
}


def storescu(
    port: int,
    files: Iterable[str | Path],
    *,
    calling_ae: str = "DERMAI",
    called_ae: str = "ORTHANC",
    timeout: float = 30.0,
) -> None:
    """Send ``files`` to 127.0.0.1:``port`` with dcmtk ``storescu``; raise if any store fails.

    ``-R`` proposes only the SOP classes of the files (without it storescu proposes a
    fixed list that lacks SEG, DESIGN.md). storescu proposes uncompressed transfer
    syntaxes only unless given one compressed syntax (``-xy`` for JPEG Baseline...),
    and otherwise fails to send a JPEG photograph ("unable to convert dataset"), so the
    files are sent in one run per transfer syntax.
    """
    groups: dict[str | None, list[str]] = {}
    for f in files:
        ts = str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        groups.setdefault(_PROPOSE.get(ts), []).append(str(f))
    for option, paths in groups.items():
        args = [_tool("storescu"), "-R", *([option] if option else []), "-aet", calling_ae,
                "-aec", called_ae, "-to", "10", "127.0.0.1", str(port), *paths]
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=dcmtk_environment())
        if result.returncode != 0 or "E:" in result.stderr:
            raise RuntimeError(f"storescu failed ({result.returncode}): {result.stderr or result.stdout}")
