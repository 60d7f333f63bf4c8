"""What every dermpacs app does around its pipeline: logging, allocator, models path, exit code."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
from pathlib import Path

from dicom import codes
from dicom.seg import AlgorithmIdentity

DERMPACS_VERSION = "0.1.0"
log = logging.getLogger("dermpacs")

# Exit codes of the app commands (documented in the README).
EXIT_OK = 0  # every input file analysed
EXIT_PARTIAL = 0  # some failed, results written for the others (details in results.json)
EXIT_NOTHING_ANALYSED = 1
EXIT_USAGE = 2


def run_application(app_class, argv: list[str] | None = None):
    """Build and run a MONAI Deploy application with ``argv`` (program name first).

    Holoscan reads ``sys.argv`` when built without arguments but drops the first item of an
    explicit list, which the SDK's own parser then drops again; setting ``sys.argv`` for the
    duration keeps ``-i/-o/-m`` parsing identical for the command line and in-process calls.
    """
    saved = sys.argv
    sys.argv = list(saved if argv is None else argv)
    try:
        app = app_class()
        app.run()
    finally:
        sys.argv = saved
    return app


def app_main(app_class, argv: list[str] | None = None) -> int:
    """What ``python -m apps.<name>`` does: run the app, exit non-zero when nothing was analysed."""
    configure_logging()
    tune_allocator()
    app = run_application(app_class, argv)
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
