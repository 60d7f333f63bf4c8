"""Base of dermpacs operators: a plain step plus a MONAI Deploy (Holoscan) operator around it.

Every step receives the case list (list[PhotoCase]) and fills it in, so apps read as a
pipeline of ``add_flow`` calls. The step is a plain object (``process`` per case, optional
``finish`` once for all cases) that benchmarks, tests and a long-running service can call
without a Holoscan graph; the operator only moves the list along the graph.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from monai.deploy.core import Fragment, Operator, OperatorSpec

from .cases import PhotoCase

log = logging.getLogger("dermpacs")


class ExpectedFailure(Exception):
    """A photograph that cannot be analysed for a reason the user can act on."""


class Step(Protocol):
    step_name: str

    def process(self, case: PhotoCase) -> None: ...


def expected_failures() -> tuple[type[BaseException], ...]:
    """Exception types reported as a one-line reason, without a traceback."""
    from dicom.reader import PhotographError
    from models.face import NoFaceFoundError

    return (ExpectedFailure, PhotographError, NoFaceFoundError)


def run_step(step: Step, cases: list[PhotoCase]) -> None:
    """Apply ``step.process`` to each live case, timing it and containing its failures."""
    expected = expected_failures()
    for case in cases:
        if not case.ok:
            continue
        started = time.perf_counter()
        try:
            step.process(case)
        except expected as exc:
            case.fail(step.step_name, str(exc))
            log.error("%s: %s failed: %s", case.label(), step.step_name, exc)
        except Exception as exc:  # a bug or an unforeseen input: keep the other cases going
            case.fail(step.step_name, f"internal error in {step.step_name}: {type(exc).__name__}: {exc}")
            log.exception("%s: %s raised", case.label(), step.step_name)
        finally:
            case.timings[step.step_name] = time.perf_counter() - started
    finish = getattr(step, "finish", None)
    if finish is not None:
        finish(cases)


class StepOperator(Operator):
    """Receives ``cases``, runs its step over them, emits ``cases``."""

    port = "cases"

    def __init__(self, fragment: Fragment, *args, step: Step, **kwargs) -> None:
        self.step = step
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.port)
        spec.output(self.port)

    def compute(self, op_input, op_output, context) -> None:
        cases: list[PhotoCase] = op_input.receive(self.port)
        run_step(self.step, cases)
        op_output.emit(cases, self.port)
