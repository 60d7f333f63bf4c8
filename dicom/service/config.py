"""Service configuration: one typed place (dataclasses), loaded from YAML, overridden by flags.

Every field has an embedded default, so ``dermpacs serve`` runs with no file at all.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # no backslash, printable, 1-16 chars


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


def check_ae_title(value: str, key: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ConfigError(f"{key}: {value!r} is not a valid AE title (1-16 printable characters, no backslash)")
    return value


@dataclass(frozen=True)
class AllowedCaller:
    """A calling AE title that may associate, optionally only from one host (IP address)."""

    ae_title: str
    host: str | None = None

    @classmethod
    def parse(cls, text: str) -> "AllowedCaller":
        ae, _, host = text.partition("@")
        return cls(check_ae_title(ae, "allowed_callers"), host or None)


@dataclass(frozen=True)
class TlsConfig:
    certificate: Path | None = None  # server certificate (PEM); TLS is on when set
    private_key: Path | None = None
    ca_certificates: Path | None = None  # trusted CAs for client certificates
    require_client_certificate: bool = False

    @property
    def enabled(self) -> bool:
        return self.certificate is not None


@dataclass(frozen=True)
class Destination:
    """Where results go: a DICOM node (C-STORE) or a DICOMweb STOW-RS endpoint."""

    ae_title: str = "ORTHANC"
    host: str = "127.0.0.1"
    port: int = 4242
    stow_url: str | None = None  # e.g. http://pacs:8042/dicom-web ; used instead of C-STORE when set
    tls: bool = False
    ca_certificates: Path | None = None

    @classmethod
    def parse(cls, text: str) -> "Destination":
        """``AE@HOST:PORT`` or an http(s) DICOMweb base URL."""
        if text.startswith(("http://", "https://")):
            return cls(stow_url=text.rstrip("/"))
        match = re.fullmatch(r"([^@]+)@(.+):(\d+)", text)
        if not match:
            raise ConfigError(f"destination {text!r} is neither AE@HOST:PORT nor an http(s) URL")
        return cls(check_ae_title(match[1], "destination"), match[2], int(match[3]))

    def describe(self) -> str:
        return self.stow_url or f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class RoutingRule:
    """Match on header values (all given conditions must hold) -> the app that analyses it."""

    name: str
    app: str
    called_ae_title: str | None = None
    sop_class_uid: list[str] | None = None
    modality: list[str] | None = None
    body_part_examined: list[str] | None = None  # compared case-insensitively
    anatomic_region_code: list[str] | None = None  # "SCHEME:VALUE", e.g. "SCT:89545001"
    series_description_regex: str | None = None  # searched case-insensitively


@dataclass(frozen=True)
class AppConfig:
    """An analysis app: a module run as ``python -m MODULE -i IN -o OUT`` (MONAI Deploy style)."""

    module: str
    timeout_s: float = 600.0
    needs_gpu: bool = False  # queue: celery: only workers that declare a GPU take its jobs


@dataclass(frozen=True)
class SenderConfig:
    max_attempts: int = 8
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 600.0
    associations: int = 2  # concurrent C-STORE associations per batch of results


QUEUE_BACKENDS = ("local", "celery")


@dataclass(frozen=True)
class QueueConfig:
    """Where analyses run: ``local`` worker processes, or ``celery`` workers on other hosts.

    With ``celery`` only job ids travel through the broker; inputs and results go through
    ``shared_dir``, a folder every node mounts (NFS in production).
    """

    backend: str = "local"
    broker: str | None = None  # e.g. redis://queue.example.org:6379/0
    shared_dir: Path | None = None
    # Seconds an unacknowledged job stays invisible before the broker hands it to another
    # worker; None: the longest app timeout plus a margin (see celery_queue.visibility_timeout).
    visibility_timeout_s: float | None = None
    heartbeat_s: float = 15.0  # workers write their state this often
    worker_lost_after_s: float = 60.0  # no heartbeat for this long: its jobs go to another worker
    reconcile_interval_s: float = 60.0  # listener compares its running jobs with the broker this often
    restore_interval_s: float = 10.0  # workers look for unacknowledged jobs past the visibility timeout

    @property
    def celery(self) -> bool:
        return self.backend == "celery"


@dataclass(frozen=True)
class ServiceConfig:
    ae_title: str = "DERMAI"
    port: int = 11112
    bind_address: str = "0.0.0.0"
    data_dir: Path = Path("dermpacs-data")
    destination: Destination = field(default_factory=Destination)
    allowed_callers: list[AllowedCaller] = field(default_factory=list)  # empty: any caller
    tls: TlsConfig = field(default_factory=TlsConfig)
    stable_seconds: float = 10.0  # a series is handed to an app when quiet this long
    workers: int = 1
    job_max_attempts: int = 3  # an analysis interrupted by a crash is retried this often
    sender: SenderConfig = field(default_factory=SenderConfig)
    rules: list[RoutingRule] = field(default_factory=list)
    apps: dict[str, AppConfig] = field(default_factory=dict)
    poll_interval_s: float = 0.5
    queue: QueueConfig = field(default_factory=QueueConfig)

    @property
    def database(self) -> Path:
        return self.data_dir / "dermpacs.sqlite3"

    def validate(self) -> "ServiceConfig":
        check_ae_title(self.ae_title, "ae_title")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port: {self.port} is not a TCP port")
        if self.workers < 1:
            raise ConfigError("workers: at least 1")
        if not 1 <= self.sender.associations <= 8:
            raise ConfigError(f"sender.associations: {self.sender.associations} is not between 1 and 8")
        for rule in self.rules:
            if rule.app not in self.apps:
                raise ConfigError(f"rules[{rule.name}]: app {rule.app!r} is not defined under apps")
            if rule.series_description_regex:
                try:
                    re.compile(rule.series_description_regex)
                except re.error as exc:
                    raise ConfigError(f"rules[{rule.name}]: bad regex: {exc}") from exc
        if self.tls.enabled and self.tls.private_key is None:
            raise ConfigError("tls: a certificate needs its private_key")
        self._check_queue()
        return self

    def _check_queue(self) -> None:
        queue = self.queue
        if queue.backend not in QUEUE_BACKENDS:
            raise ConfigError(f"queue.backend: {queue.backend!r} is not one of {', '.join(QUEUE_BACKENDS)}")
        if not queue.celery:
            return
        if not queue.broker or not queue.broker.startswith(("redis://", "rediss://")):
            raise ConfigError(f"queue.broker: {queue.broker!r} is not a redis:// URL (needed by queue backend celery)")
        if queue.shared_dir is None:
            raise ConfigError("queue.shared_dir: a folder every node reaches (needed by queue backend celery)")
        longest = max((app.timeout_s for app in self.apps.values()), default=0.0)
        if queue.visibility_timeout_s is not None and queue.visibility_timeout_s <= longest:
            raise ConfigError(f"queue.visibility_timeout_s: {queue.visibility_timeout_s:g} must exceed the longest "
                              f"app timeout ({longest:g} s), or running jobs are handed out twice")
        if not 0 < queue.heartbeat_s < queue.worker_lost_after_s:
            raise ConfigError("queue.heartbeat_s: positive and below queue.worker_lost_after_s")


DEFAULT_CONFIG_FILE = Path(__file__).with_name("default_config.yaml")


def _build(cls: type, data: Any, key: str) -> Any:
    """Build a (nested) dataclass from YAML data, naming unknown keys in the error."""
    if not dataclasses.is_dataclass(cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{key}: expected a mapping")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"{key}: unknown setting(s) {sorted(unknown)}")
    values = {}
    for name, value in data.items():
        values[name] = _convert(known[name].type, value, f"{key}.{name}" if key else name)
    return cls(**values)


def _convert(type_hint: Any, value: Any, key: str) -> Any:
    hint = str(type_hint)
    if value is None:
        return None
    if key.endswith("destination") and isinstance(value, str):
        return Destination.parse(value)
    if hint.startswith("Destination"):
        return _build(Destination, value, key)
    if hint.startswith("TlsConfig"):
        tls = _build(TlsConfig, value, key)
        return dataclasses.replace(
            tls, **{f: Path(getattr(tls, f)) for f in ("certificate", "private_key", "ca_certificates") if getattr(tls, f)}
        )
    if hint.startswith("SenderConfig"):
        return _build(SenderConfig, value, key)
    if hint.startswith("QueueConfig"):
        queue = _build(QueueConfig, {"backend": value} if isinstance(value, str) else value, key)
        return dataclasses.replace(queue, shared_dir=Path(queue.shared_dir)) if queue.shared_dir else queue
    if hint.startswith("list[AllowedCaller]"):
        return [AllowedCaller.parse(v) if isinstance(v, str) else _build(AllowedCaller, v, key) for v in value]
    if hint.startswith("list[RoutingRule]"):
        return [_build(RoutingRule, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint.startswith("dict[str, AppConfig]"):
        return {name: _build(AppConfig, v, f"{key}.{name}") for name, v in value.items()}
    if hint.startswith("Path"):
        return Path(value)
    return value


def load_config(path: Path | None = None, **overrides: Any) -> ServiceConfig:
    """Embedded defaults, then the YAML file (if any), then non-None ``overrides`` (CLI flags)."""
    data: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG_FILE.read_text()) or {}
    if path is not None:
        user = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(user, dict):
            raise ConfigError(f"{path}: expected a YAML mapping")
        data.update(user)
    for key, value in overrides.items():
        if isinstance(value, dict):  # a section's flags (e.g. --queue/--broker) merge into it
            value = {k: v for k, v in value.items() if v is not None}
            if value:
                section = data.get(key)
                section = {"backend": section} if isinstance(section, str) else dict(section or {})
                data[key] = {**section, **value}
        elif value is not None:
            data[key] = value
    return _build(ServiceConfig, data, "").validate()
