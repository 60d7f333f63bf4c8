"""`dermpacs worker` as a real process for the queue tests and benchmark: start, ready, SIGKILL, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .dermpacs import REPO


class WorkerProcess:
    """One `dermpacs worker` in its own process group and working folder."""

    def __init__(self, root: Path, name: str, config: Path, broker: str, shared: Path, apps: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.name, self.root = name, Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.log_path = self.root / f"{name}.log"
        self.args = [sys.executable, "-m", "dicom.cli", "worker", "--config", str(config), "--broker", broker,
                     "--shared-dir", str(shared), "--name", name, "--work-dir", str(self.root / "work"), "--no-gpu"]
        if apps:
            self.args += ["--apps", apps]
        self.env = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
        self.process: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(self.args, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                        env=self.env, start_new_session=True)
        log.close()
        return self

    def ready(self) -> bool:
        return self.log_path.exists() and f"celery@{self.name} ready" in self.log_path.read_text()

    def kill(self) -> None:
        """SIGKILL the worker and its app processes: a host that died."""
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
