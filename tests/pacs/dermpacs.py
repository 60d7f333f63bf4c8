"""`dermpacs serve` as a real process for the service tests: start, SIGKILL, restart, status.

It runs in the test's network namespace (started from the thread that entered it), in its
own process group so a SIGKILL takes its app workers down with it, as a crash would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from .netns import free_port

REPO = Path(__file__).resolve().parents[2]


class DermpacsProcess:
    """One dermpacs node: its data dir survives restarts, as on a real server."""

    def __init__(self, workdir: Path, destination: str, port: int | None = None, **settings: Any) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.data_dir = self.workdir / "data"
        self.config = self.workdir / "dermpacs.yaml"
        config = {"bind_address": "127.0.0.1", "port": self.port, "data_dir": str(self.data_dir),
                  "destination": destination, "stable_seconds": 1, "poll_interval_s": 0.2,
                  "sender": {"max_attempts": 20, "backoff_initial_s": 0.5, "backoff_max_s": 2}}
        config.update(settings)
        self.config.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen | None = None
        self.log_path = self.workdir / "serve.log"
        self.starts = 0

    def start(self, timeout: float = 90) -> "DermpacsProcess":
        self.starts += 1
        log = open(self.log_path, "a")
        log.write(f"\n===== start {self.starts} =====\n")
        log.flush()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dicom.cli", "serve", "--config", str(self.config)],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dermpacs exited with {self.process.returncode}:\n{self.log_tail()}")
            if self.echo():
                return self
            time.sleep(0.3)
        raise TimeoutError(f"dermpacs did not answer C-ECHO:\n{self.log_tail()}")

    def echo(self, calling_ae: str = "ECHOSCU") -> bool:
        ae = AE(ae_title=calling_ae)
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.network_timeout = 5
        assoc = ae.associate("127.0.0.1", self.port, ae_title="DERMAI")
        if not assoc.is_established:
            return False
        status = assoc.send_c_echo()
        assoc.release()
        return bool(status) and status.Status == 0

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs, like a power cut."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dicom.cli", *args, "--config", str(self.config)],
                              cwd=REPO, capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json").stdout)

    def log_tail(self, chars: int = 6000) -> str:
        return self.log_path.read_text()[-chars:] if self.log_path.exists() else ""

    def __enter__(self) -> "DermpacsProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
