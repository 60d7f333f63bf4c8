"""What every dermpacs app does around its pipeline: logging, allocator, models path, options, exit code."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

from dicom import codes
from dicom.seg import AlgorithmIdentity

DERMPACS_VERSION = "0.1.0"
log = logging.getLogger("dermpacs")

# Exit codes of the app commands (documented in the README).
EXIT_OK = 0  # every input file analysed
EXIT_PARTIAL = 0  # some failed, results written for the others (details in results.json)
EXIT_NOTHING_ANALYSED = 1
EXIT_USAGE = 2


OPTION_FLAG = "--option"
_OPTION_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class OptionError(ValueError):
    """A ``--option`` argument that is not ``KEY=VALUE``."""


@dataclass(frozen=True)
class AppOptions:
    """``--option KEY=VALUE`` settings of one run (a routing rule's ``app_options``, or typed by hand).

    MONAI Deploy's parser refuses arguments it does not know, so these are taken out of argv
    before it runs; an app lists the keys it understands in ``KNOWN_OPTIONS`` and reads them
    here. Options are generic per routing rule, so a key the app does not know is ignored
    with one warning rather than failing the job.
    """

    values: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.values.get(key, default)


def split_options(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """(argv without its ``--option KEY=VALUE`` / ``--option=KEY=VALUE`` items, the options; a repeated key: the last wins)."""
    rest: list[str] = []
    options: dict[str, str] = {}
    items = iter(argv)
    for item in items:
        if item == OPTION_FLAG:
            text = next(items, None)
            if text is None:
                raise OptionError(f"{OPTION_FLAG} needs KEY=VALUE")
        elif item.startswith(OPTION_FLAG + "="):
            text = item[len(OPTION_FLAG) + 1:]
        else:
            rest.append(item)
            continue
        key, equals, value = text.partition("=")
        if not equals or not _OPTION_KEY.match(key):
            raise OptionError(f"{OPTION_FLAG} {text!r}: expected KEY=VALUE with KEY a name (letters, digits, _)")
        options[key] = value
    return rest, options


def options_for(app_class, options: dict[str, str]) -> AppOptions:
    """The options ``app_class`` knows (its ``KNOWN_OPTIONS``); the others are logged once and dropped."""
    known = getattr(app_class, "KNOWN_OPTIONS", {})
    ignored = sorted(set(options) - set(known))
    if ignored:
        log.warning("option(s) %s ignored: this app knows %s", ", ".join(ignored),
                    ", ".join(sorted(known)) or "no options")
    return AppOptions(MappingProxyType({k: v for k, v in options.items() if k in known}))


def run_application(app_class, argv: list[str] | None = None):
    """Build and run a MONAI Deploy application with ``argv`` (program name first).

    Holoscan reads ``sys.argv`` when built without arguments but drops the first item of an
    explicit list, which the SDK's own parser then drops again; setting ``sys.argv`` for the
    duration keeps ``-i/-o/-m`` parsing identical for the command line and in-process calls.
    ``--option KEY=VALUE`` items are taken out first and given to the app as ``app.app_options``
    (an ``AppOptions``), read by its ``compose``.
    """
    rest, options = split_options(list(sys.argv if argv is None else argv))
    saved = sys.argv
    sys.argv = rest
    try:
        app = app_class()
        app.app_options = options_for(app_class, options)  # not ``options``: Holoscan's CLI options
        app.run()
    finally:
        sys.argv = saved
    return app


def app_main(app_class, argv: list[str] | None = None) -> int:
    """What ``python -m apps.<name>`` does: run the app, exit non-zero when nothing was analysed."""
    configure_logging()
    tune_allocator()
    try:
        app = run_application(app_class, argv)
    except OptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    cases = getattr(getattr(app, "results", None), "cases", [])
    if not cases:
        print("no input files found", file=sys.stderr)
        return EXIT_NOTHING_ANALYSED
    if not any(c.ok for c in cases):
        return EXIT_NOTHING_ANALYSED
    return EXIT_OK


def chain(app, operators: list) -> None:
    """Connect operators in a line through their ``cases`` ports: the app reads as a pipeline."""
    for upstream, downstream in zip(operators, operators[1:]):
        app.add_flow(upstream, downstream, {("cases", "cases")})


def tune_allocator() -> None:
    """Keep glibc from unmapping CNN activation buffers on every forward pass.

    Same effect as MALLOC_MMAP_MAX_=0 / MALLOC_TRIM_THRESHOLD_ / MALLOC_TOP_PAD_ (DESIGN.md:
    halves fp32 inference time), but applied from inside the process so it also holds when
    the app is started by a PACS service or a MAP runner that does not set them.
    """
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return
    try:
        libc = ctypes.CDLL(libc_name)
        m_trim_threshold, m_top_pad, m_mmap_max = -1, -2, -4
        libc.mallopt(m_mmap_max, 0)
        libc.mallopt(m_trim_threshold, 2**31 - 1)
        libc.mallopt(m_top_pad, 256 * 2**20)
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def configure_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("DERMPACS_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # highdicom narrates every attribute it copies at INFO.
    logging.getLogger("highdicom").setLevel(logging.WARNING)


def resolve_weights(model_path: str | os.PathLike | None, default: Path, pattern: str) -> Path:
    """The weights file an app should use: ``-m`` file, a match in a ``-m`` folder, else shipped."""
    if model_path:
        candidate = Path(model_path)
        if candidate.is_file():
            return candidate
        if candidate.is_dir():
            matches = sorted(candidate.glob(pattern)) or sorted(candidate.glob("*.pt"))
            if len(matches) == 1 or (matches and matches[0].match(pattern)):
                return matches[0]
    return default


_MODELS: dict[tuple, object] = {}


def load_model(loader, model_path: str | os.PathLike | None, shipped: Path, pattern: str):
    """The model for ``-m`` (or the shipped weights), loaded once per process and weights file.

    A service worker runs many jobs in one process: this keeps model loading out of the
    per-job path, while a replaced weights file (new modification time) is loaded afresh.
    """
    weights = resolve_weights(model_path, shipped, pattern).resolve()
    key = (loader, weights, weights.stat().st_mtime_ns)
    if key not in _MODELS:
        _MODELS[key] = loader(weights)
    return _MODELS[key]


def _model_card(model) -> str:
    """The card beside the weights: shipped ones in models/weights/, a node's own versions in its registry."""
    weights = getattr(model, "weights_path", None)
    if weights is None or Path(weights).resolve().parent == Path(__file__).resolve().parents[1] / "models" / "weights":
        return f"models/weights/{model.name}.md"
    return f"{Path(weights).resolve().parent.name}/{Path(weights).with_suffix('.md').name} in the node's model registry"


def algorithm_identity(app_name: str, model) -> AlgorithmIdentity:
    """What the SEG and SR say produced them: app, model version and weights hash."""
    return AlgorithmIdentity(
        name=f"dermpacs {app_name}"[:64],
        version=f"{DERMPACS_VERSION} {model.name} {model.version}"[:64],
        family=codes.ARTIFICIAL_INTELLIGENCE,
        weights_sha256=model.weights_sha256,
        description=f"{model.architecture}. Model card: {_model_card(model)}",
    )
