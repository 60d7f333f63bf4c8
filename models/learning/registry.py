"""The node's model registry: shipped model, local candidates, which version each app runs.

Layout under ``<data_dir>/models`` (0700)::

    registry.json                 versions (id, app, version, weights SHA-256, state, evaluation)
                                  and, per app, the history of promoted ids (the last one is active)
    versions/<id>/NAME.pt|.yaml|.md   weights, exact config (with the version), model card
    active/<app> -> ../versions/<id>  what the service passes to the app as ``-m``

The ``active/<app>`` link is replaced atomically (rename of a new link), so a job
started during a promotion loads either the old or the new weights, never a mix; with no
link the app runs its shipped weights. The registry itself knows nothing of torch: the
checks that a candidate is better live in ``models.learning.finetune``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .dataset import make_private_dir, write_private

REPO = Path(__file__).resolve().parents[2]
SHIPPED_WEIGHTS = {
    "facial_vitiligo": REPO / "models" / "weights" / "facial_vitiligo_ddrnet23slim.pt",
    "vitiligo_lesion": REPO / "models" / "weights" / "vitiligo_lesion_unet_mobilenetv3.pt",
    "skin_prick": REPO / "models" / "weights" / "skin_prick_unet.pt",
}


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message says why."""


@dataclass(frozen=True)
class ModelVersion:
    id: str
    app: str
    name: str
    version: str
    weights: Path
    weights_sha256: str
    state: str  # shipped | candidate | active | retired
    created: str
    info: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "app": self.app, "name": self.name, "version": self.version,
                "weights": str(self.weights), "weights_sha256": self.weights_sha256, "state": self.state,
                "created": self.created, **{k: v for k, v in self.info.items() if k != "evaluation"},
                "evaluation": self.info.get("evaluation")}


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _yaml_identity(weights: Path) -> tuple[str, str]:
    import yaml

    data = yaml.safe_load(weights.with_suffix(".yaml").read_text()) or {}
    return str(data.get("name", weights.stem)), str(data.get("version", "0"))


class ModelRegistry:
    def __init__(self, models_dir: str | Path) -> None:
        self.root = Path(models_dir)
        self.versions_dir = self.root / "versions"
        self.active_dir = self.root / "active"
        self.index = self.root / "registry.json"

    # -- storage -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write of registry.json under an exclusive lock (CLI and trainer may race)."""
        make_private_dir(self.root)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self._read()
            yield data
            write_private(self.index, json.dumps(data, indent=2).encode())

    def _read(self) -> dict[str, Any]:
        if self.index.exists():
            return json.loads(self.index.read_text())
        return {"versions": {}, "history": {}}

    # -- queries -------------------------------------------------------------------------------
    def shipped(self, app: str) -> ModelVersion:
        weights = SHIPPED_WEIGHTS.get(app)
        if weights is None or not weights.exists():
            raise RegistryError(f"no shipped model for app {app!r}")
        name, version = _yaml_identity(weights)
        return ModelVersion(f"{app}-shipped", app, name, version, weights, _sha256(weights), "shipped", "", {})

    def _version(self, data: dict[str, Any], vid: str, active_ids: set[str]) -> ModelVersion:
        v = data["versions"][vid]
        state = "active" if vid in active_ids else v["state"]
        info = {k: x for k, x in v.items() if k not in ("id", "app", "name", "version", "weights",
                                                           "weights_sha256", "state", "created")}
        return ModelVersion(vid, v["app"], v["name"], v["version"], self.versions_dir / vid / v["weights"],
                            v["weights_sha256"], state, v["created"], info)

    def active_id(self, app: str, data: dict[str, Any] | None = None) -> str:
        history = (data or self._read())["history"].get(app, [])
        return history[-1] if history else f"{app}-shipped"

    def get(self, vid: str) -> ModelVersion:
        data = self._read()
        if vid.endswith("-shipped"):
            return self.shipped(vid[: -len("-shipped")])
        if vid not in data["versions"]:
            raise RegistryError(f"no model version {vid!r} (see `dermpacs models list`)")
        return self._version(data, vid, {self.active_id(data["versions"][vid]["app"], data)})

    def active(self, app: str) -> ModelVersion:
        return self.get(self.active_id(app))

    def list(self, app: str | None = None) -> list[ModelVersion]:
        data = self._read()
        apps = sorted({v["app"] for v in data["versions"].values()} | set(data["history"]) |
                      ({app} if app else set(SHIPPED_WEIGHTS)))
        out: list[ModelVersion] = []
        for a in apps:
            if app and a != app:
                continue
            active = self.active_id(a, data)
            try:
                shipped = self.shipped(a)
                out.append(shipped if active != shipped.id else
                           ModelVersion(**{**shipped.__dict__, "state": "active"}))
            except RegistryError:
                pass
            for vid in sorted((k for k, v in data["versions"].items() if v["app"] == a),
                              key=lambda k: data["versions"][k]["created"]):
                out.append(self._version(data, vid, {active}))
        return out

    # -- changes -------------------------------------------------------------------------------
    def add_candidate(self, app: str, weights: Path, info: dict[str, Any], card: str) -> ModelVersion:
        """Copy a trained model (weights + YAML beside it) in as a new candidate version."""
        with self._locked() as data:
            n = 1 + sum(1 for v in data["versions"].values() if v["app"] == app)
            vid = f"{app}-{n}"
            folder = make_private_dir(self.versions_dir / vid)
            for src in (weights, weights.with_suffix(".yaml")):
                shutil.copy2(src, folder / src.name)
                os.chmod(folder / src.name, 0o600)
            write_private(folder / f"{weights.stem}.md", card.encode())
            name, version = _yaml_identity(folder / weights.name)
            data["versions"][vid] = {
                "id": vid, "app": app, "name": name, "version": version, "weights": weights.name,
                "weights_sha256": _sha256(folder / weights.name), "state": "candidate",
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **info,
            }
        return self.get(vid)

    def next_version_number(self, app: str) -> int:
        return 1 + sum(1 for v in self._read()["versions"].values() if v["app"] == app)

    def update_info(self, vid: str, **info: Any) -> None:
        with self._locked() as data:
            data["versions"][vid].update(info)

    def activate(self, vid: str) -> ModelVersion:
        """Make ``vid`` the app's active version (the check that it may be is the caller's)."""
        with self._locked() as data:
            if vid not in data["versions"]:
                raise RegistryError(f"no model version {vid!r}")
            app = data["versions"][vid]["app"]
            history = data["history"].setdefault(app, [])
            if history and history[-1] == vid:
                raise RegistryError(f"{vid} is already active")
            self._point(app, vid)
            history.append(vid)
        return self.get(vid)

    def rollback(self, app: str) -> tuple[str, str]:
        """Back to the version active before the current one (the shipped model at the end). (from, to)."""
        with self._locked() as data:
            history = data["history"].get(app, [])
            if not history:
                raise RegistryError(f"{app}: the shipped model is active; nothing to roll back")
            current = history.pop()
            data["versions"][current]["state"] = "retired"
            target = history[-1] if history else None
            self._point(app, target)
        return current, target or f"{app}-shipped"

    def _point(self, app: str, vid: str | None) -> None:
        make_private_dir(self.active_dir)
        link = self.active_dir / app
        if vid is None:
            link.unlink(missing_ok=True)
            return
        tmp = self.active_dir / f".{app}.new"
        tmp.unlink(missing_ok=True)
        os.symlink(Path("..") / "versions" / vid, tmp)
        os.replace(tmp, link)
