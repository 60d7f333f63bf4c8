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
_OPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # an app option's key (the app's --option KEY=VALUE)


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""


def check_ae_title(value: str, key: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ConfigError(f"{key}: {value!r} is not a valid AE title (1-16 printable characters, no backslash)")
    return value


def check_app_options(options: Any, key: str) -> dict[str, str]:
    """A rule's ``app_options``: names to one-line strings (they become the app's argv)."""
    if not isinstance(options, dict):
        raise ConfigError(f"{key}: expected a mapping of option names to strings, e.g. {{panel: Food}}")
    for name, value in options.items():
        if not isinstance(name, str) or not _OPTION_NAME.match(name):
            raise ConfigError(f"{key}: option name {name!r} is not a name (letters, digits, _; not starting with a digit)")
        if not isinstance(value, str):
            raise ConfigError(f"{key}.{name}: {value!r} is not a string (quote it in the YAML)")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
            raise ConfigError(f"{key}.{name}: control characters are not allowed")
    return options


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
    # Passed to the app as --option KEY=VALUE (e.g. {panel: Food} for skin_prick); what a key
    # means is the app's business, the service only checks that keys are names, values text.
    app_options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AppConfig:
    """An analysis app: a module run as ``python -m MODULE -i IN -o OUT`` (MONAI Deploy style)."""

    module: str
    timeout_s: float = 600.0
    needs_gpu: bool = False  # queue: celery: only workers that declare a GPU take its jobs
    # The app compares with the patient's earlier results: before it runs, the service
    # fetches them into IN/priors/ (dicom/service/priors.py). Names the app's SR
    # (ManufacturerModelName, e.g. "dermpacs facial vitiligo"); None: no priors.
    priors_model_name: str | None = None


@dataclass(frozen=True)
class PriorsConfig:
    """Where and how earlier results are looked up (C-FIND + C-GET, or QIDO-RS + WADO-RS from a DICOMweb URL) for apps that use priors."""

    source: Destination | None = None  # None: the destination (the PACS that receives results)
    timeout_s: float = 20.0  # per network operation and for the whole lookup of one job
    max_studies: int = 50  # earlier studies of the patient considered (most recent kept)
    # An earlier study of the same patient still being analysed or sent by this service
    # is waited for (at most this long) before the lookup, so its results are found.
    wait_for_earlier_s: float = 300.0
    # Site secret keying tracking UIDs and patient pseudonyms (HMAC-SHA256). Empty: a
    # random one is created once in data_dir/tracking.key. Keep it when moving servers,
    # or tracking UIDs of later visits stop matching earlier ones.
    tracking_secret: str = ""


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


#: The photograph classes a default route analyses; negotiation accepts exactly the configured
#: ``accepted_sop_classes`` (these by default), and ``validate`` insists that each has a rule
#: that takes any instance of it, so nothing accepted is left unrouted. Dermoscopic
#: Photography (77.1.7) and the multi-frame Secondary Captures (7.2, 7.4) are not here: no
#: shipped app is made for dermoscopy or for multi-frame objects, so they are refused at
#: negotiation. Add a class here (in the YAML) together with a rule for it to take it.
PHOTOGRAPH_SOP_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.5.1.4.1.1.77.1.4",  # VL Photographic Image Storage
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
)


@dataclass(frozen=True)
class ListenerConfig:
    """Limits that keep the node reachable for allowed callers whatever other peers do."""

    max_associations: int = 32  # accepted at once, all peers together
    max_associations_per_peer: int = 8  # accepted at once from one IP address
    max_pending_connections: int = 64  # connected, A-ASSOCIATE-RQ not yet complete; the oldest is dropped beyond
    request_timeout_s: float = 5.0  # a new connection must deliver its whole A-ASSOCIATE-RQ within this
    acse_timeout_s: float = 10.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 30.0  # an established association idle this long is aborted
    max_object_bytes: int = 100 * 2**20  # a 12-MP RGB photograph uncompressed is 36 MB; JPEG a few MB
    refusals_recorded_per_minute: int = 100  # per peer address, dropped connections one by one; the rest summarised


@dataclass(frozen=True)
class RetentionConfig:
    """What ``dermpacs purge`` removes: delivered work ``keep_days`` after delivery."""

    keep_days: float = 30.0


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
    learning_rate: float = 1e-4  # measured: with 3e-4 a 40-iteration fine-tune ended worse than its start
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
    queue: QueueConfig = field(default_factory=QueueConfig)
    accepted_sop_classes: list[str] = field(default_factory=lambda: list(PHOTOGRAPH_SOP_CLASSES))
    listener: ListenerConfig = field(default_factory=ListenerConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    fault_backoff_initial_s: float = 1.0  # scheduler: first wait after a failing round (disk full, DB locked)
    fault_backoff_max_s: float = 60.0
    learning: LearningConfig = field(default_factory=LearningConfig)
    priors: PriorsConfig = field(default_factory=PriorsConfig)

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
            check_app_options(rule.app_options, f"rules[{rule.name}].app_options")
        self._check_accepted_classes_are_routed()
        limits = self.listener
        if not 1 <= limits.max_associations_per_peer <= limits.max_associations:
            raise ConfigError("listener.max_associations_per_peer: between 1 and listener.max_associations")
        if limits.max_pending_connections < 1 or limits.request_timeout_s <= 0:
            raise ConfigError("listener: max_pending_connections and request_timeout_s must be positive")
        if limits.refusals_recorded_per_minute < 1:
            raise ConfigError("listener.refusals_recorded_per_minute: at least 1")
        if limits.max_object_bytes < 1024:
            raise ConfigError(f"listener.max_object_bytes: {limits.max_object_bytes} is too small")
        if self.retention.keep_days < 0:
            raise ConfigError("retention.keep_days: not negative")
        if not 0 < self.fault_backoff_initial_s <= self.fault_backoff_max_s:
            raise ConfigError("fault_backoff_initial_s: positive and at most fault_backoff_max_s")
        if self.tls.enabled and self.tls.private_key is None:
            raise ConfigError("tls: a certificate needs its private_key")
        self._check_queue()
        if self.priors.timeout_s <= 0 or self.priors.max_studies < 1:
            raise ConfigError("priors: timeout_s must be > 0 and max_studies >= 1")
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

    def _check_accepted_classes_are_routed(self) -> None:
        _check_accepted_classes(self)


def catch_all_rules(rules: list[RoutingRule], sop_class_uid: str) -> list[RoutingRule]:
    """Rules that take *every* instance of ``sop_class_uid`` (no condition but the SOP class)."""
    return [r for r in rules
            if not (r.called_ae_title or r.modality or r.body_part_examined or r.anatomic_region_code
                    or r.series_description_regex)
            and (not r.sop_class_uid or sop_class_uid in r.sop_class_uid)]


def _check_accepted_classes(config: "ServiceConfig") -> None:
    from dicom.reader import SUPPORTED_SOP_CLASSES

    if not config.accepted_sop_classes:
        raise ConfigError("accepted_sop_classes: at least one SOP class")
    for uid in config.accepted_sop_classes:
        if uid not in SUPPORTED_SOP_CLASSES:
            raise ConfigError(f"accepted_sop_classes: {uid} is not a photograph class the reader decodes")
        if not catch_all_rules(config.rules, uid):
            raise ConfigError(f"accepted_sop_classes: {uid} ({SUPPORTED_SOP_CLASSES[uid]}) has no rule that routes "
                              "every instance of it (a rule with only sop_class_uid); it would be left unrouted")


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
    if (key.endswith(("destination", "priors.source")) or hint.startswith("Destination")) and isinstance(value, str):
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
    if hint.startswith("PriorsConfig"):
        return _build(PriorsConfig, value, key)
    if hint.startswith("SenderConfig"):
        return _build(SenderConfig, value, key)
    if hint.startswith("QueueConfig"):
        queue = _build(QueueConfig, {"backend": value} if isinstance(value, str) else value, key)
        return dataclasses.replace(queue, shared_dir=Path(queue.shared_dir)) if queue.shared_dir else queue
    if hint.startswith("ListenerConfig"):
        return _build(ListenerConfig, value, key)
    if hint.startswith("RetentionConfig"):
        return _build(RetentionConfig, value, key)
    if hint.startswith("list[str]"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{key}: expected a list of strings")
        return list(value)
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
        if key == "queue" and isinstance(value, dict):  # --queue/--broker/--shared-dir merge into the section
            value = {k: v for k, v in value.items() if v is not None}
            if value:
                section = data.get(key)
                section = {"backend": section} if isinstance(section, str) else dict(section or {})
                data[key] = {**section, **value}
        elif value is not None:
            data[key] = value
    return _build(ServiceConfig, data, "").validate()
