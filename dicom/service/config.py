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


@dataclass(frozen=True)
class SenderConfig:
    max_attempts: int = 8
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 600.0
    associations: int = 2  # concurrent C-STORE associations per batch of results


@dataclass(frozen=True)
class AutoPromoteRule:
    """Promote a candidate without a person when it is better on the held-out corrections
    by at least ``min_improvement`` (mean Dice, 0-1) measured on at least ``min_cases`` photographs."""

    min_improvement: float = 0.05
    min_cases: int = 10


@dataclass(frozen=True)
class LearningConfig:
    """Learning from clinicians' corrected SEGs (``dermpacs learn``, ``dermpacs models``)."""

    holdout_percent: int = 20  # share of corrected photographs never trained on (fixed per photograph)
    retention_days: float | None = 365  # corrections (patient photographs) older than this are deleted
    iterations: int = 300  # fine-tuning steps from the active model
    learning_rate: float = 3e-4
    batch_size: int = 4
    input_size: int | None = None  # None: the active model's own input size
    synthetic_eval_samples: int = 12  # the generic suite a candidate must not forget
    replay_synthetic: float = 2.0  # synthetic samples mixed into fine-tuning, per local photograph (rehearsal)
    max_synthetic_drop: float = 0.05  # mean Dice a candidate may lose on the synthetic suite
    min_train_cases: int = 1
    auto_promote: AutoPromoteRule | None = None  # None: only a person promotes
    pacs: Destination | None = None  # where `learn collect` looks (C-FIND/C-GET); None: the destination


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
    learning: LearningConfig = field(default_factory=LearningConfig)

    @property
    def database(self) -> Path:
        return self.data_dir / "dermpacs.sqlite3"

    @property
    def models_dir(self) -> Path:
        """The model registry: versions, and ``active/<app>`` (what the apps load)."""
        return self.data_dir / "models"

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
        return self


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
    if (key.endswith("destination") or hint.startswith("Destination")) and isinstance(value, str):
        return Destination.parse(value)
    if hint.startswith("Destination"):
        return _build(Destination, value, key)
    if hint.startswith("TlsConfig"):
        tls = _build(TlsConfig, value, key)
        return dataclasses.replace(
            tls, **{f: Path(getattr(tls, f)) for f in ("certificate", "private_key", "ca_certificates") if getattr(tls, f)}
        )
    if hint.startswith("LearningConfig"):
        learning = _build(LearningConfig, value, key)
        if isinstance(learning.auto_promote, dict):
            learning = dataclasses.replace(learning, auto_promote=_build(AutoPromoteRule, learning.auto_promote,
                                                                         f"{key}.auto_promote"))
        if not 0 <= learning.holdout_percent <= 90:
            raise ConfigError(f"{key}.holdout_percent: {learning.holdout_percent} is not between 0 and 90")
        return learning
    if hint.startswith("SenderConfig"):
        return _build(SenderConfig, value, key)
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
        if value is not None:
            data[key] = value
    return _build(ServiceConfig, data, "").validate()
