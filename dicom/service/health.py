"""Fault states of the node's loops: bounded back-off, one log line per change, shown by status.

A loop that fails (disk full, database locked, destination down) must neither spin nor
flood the log: ``ComponentHealth.failed`` returns the next wait (doubling up to a maximum)
and logs only when the component goes from ok to failing (with the traceback, once) and
``ok`` logs once when it recovers. The states are written to ``<data_dir>/health.json``
for ``dermpacs status``. That file is allocated once at start-up and then rewritten in
place, so it can still be updated when the disk is full or the job store is locked —
exactly when it matters.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from .logsafe import safe_text

log = logging.getLogger("dermpacs.health")

HEALTH_FILE = "health.json"
_SIZE = 4096


class HealthBoard:
    """The node's component states, kept in a fixed-size file rewritten in place."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / HEALTH_FILE
        self._lock = threading.Lock()
        self._states: dict[str, dict[str, Any]] = {}
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.posix_fallocate(self._fd, 0, _SIZE)  # the blocks exist from now on
        except OSError as exc:
            log.warning("cannot preallocate %s: %s", self.path.name, exc)
        self._write()

    def set(self, component: str, state: str, **details: Any) -> None:
        with self._lock:
            self._states[component] = {"state": state, "since": time.time(), **details}
            self._write()

    def _write(self) -> None:
        document = {"pid": os.getpid(), "updated": time.time(), "components": self._states}
        data = json.dumps(document, sort_keys=True).encode()
        if len(data) >= _SIZE:  # keep it valid JSON: drop the details, keep the states
            slim = {name: {"state": s["state"], "since": s["since"]} for name, s in self._states.items()}
            data = json.dumps({**document, "components": slim}).encode()[: _SIZE - 1]
        try:
            os.pwrite(self._fd, data.ljust(_SIZE, b" "), 0)
        except OSError as exc:  # never let reporting break the loop it reports on
            log.debug("cannot write %s: %s", self.path.name, exc)

    def close(self) -> None:
        with self._lock:
            self._states = {name: {**s, "state": "stopped"} for name, s in self._states.items()}
            self._write()
            os.close(self._fd)


def read_health(data_dir: Path) -> dict[str, Any] | None:
    """The states the running (or last) node wrote, with ``running`` (its process is alive)."""
    try:
        document = json.loads((Path(data_dir) / HEALTH_FILE).read_text().strip() or "null")
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    try:
        os.kill(int(document.get("pid", 0)), 0)
        document["running"] = True
    except (OSError, ValueError):
        document["running"] = False
    return document


class ComponentHealth:
    """One loop's fault state and back-off.

    Thread-safe: the sender's concurrent associations report to one destination's health, and
    a state change must be logged once (two lanes succeeding together logged "recovered" twice).
    """

    def __init__(self, name: str, initial_s: float, maximum_s: float, board: HealthBoard | None = None) -> None:
        self.name, self.initial_s, self.maximum_s, self.board = name, initial_s, maximum_s, board
        self._lock = threading.Lock()
        self.failures = 0
        self.first_failure: float | None = None
        if board is not None:
            board.set(name, "ok")

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def delay(self) -> float:
        return min(self.initial_s * 2 ** min(self.failures - 1, 30), self.maximum_s)

    def failed(self, error: BaseException | str) -> float:
        """Record a failed round; the seconds to wait before the next. Logs only the first."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        text = safe_text(text, 300)
        with self._lock:
            self.failures += 1
            if self.failures == 1:
                self.first_failure = time.time()
                log.error("%s failing: %s; retrying with back-off (%g s, up to %g s)", self.name, text,
                          self.initial_s, self.maximum_s, exc_info=isinstance(error, BaseException))
            delay = self.delay()
            if self.board is not None:
                self.board.set(self.name, "failing", error=text, failures=self.failures,
                               next_try_s=round(delay, 3), failing_since=self.first_failure)
        return delay

    def ok(self) -> None:
        with self._lock:
            if self.failures:
                log.warning("%s recovered after %d failed attempt(s) over %.0f s", self.name, self.failures,
                            time.time() - (self.first_failure or time.time()))
                self.failures, self.first_failure = 0, None
                if self.board is not None:
                    self.board.set(self.name, "ok")


__all__ = ["ComponentHealth", "HealthBoard", "read_health"]
