"""What a `.flowtest` file says, as frozen values (no engine, no I/O).

Expressions are kept as the spec's JSON trees (``dsl.lowering.lower``), ready for
``dsl.evaluator.evaluate``; every statement carries the ``Span`` its diagnostics point at.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from dsl.spec import Span

Expr = dict[str, Any]

# What one attempt of a mocked step does.
OutcomeKind = Literal["output", "fail", "approve", "reject", "timeout"]


@dataclass(frozen=True)
class Outcome:
    """One entry of a mock: ``output EXPR``, ``fail "CLASS" ["message"]``, ``approve``/``reject``
    (an approval answered, with an optional comment) or ``timeout`` (an approval left unanswered).

    ``times`` is how many attempts it covers (``x2``); the last outcome of a mock covers every
    attempt after it.
    """

    kind: OutcomeKind
    span: Span
    output: Expr | None = None
    error_class: str | None = None
    message: str | None = None
    comment: str | None = None
    times: int = 1


# Which task of a step a mock answers: the step itself, or its compensation (`mock charge.compensate`).
MockTarget = Literal["step", "compensate"]


@dataclass(frozen=True)
class Mock:
    step: str
    target: MockTarget
    outcomes: tuple[Outcome, ...]
    span: Span
    step_span: Span
    # `mock resize[2]: ...` answers only that item of a fan-out (it wins over `mock resize`).
    item: int | None = None

    @property
    def label(self) -> str:
        name = self.step if self.item is None else f"{self.step}[{self.item}]"
        return name if self.target == "step" else f"{name}.compensate"


# `expect status completed`, `expect compensated [a, b]`, `expect skipped [c]`, `expect EXPR`.
ExpectKind = Literal["status", "compensated", "skipped", "expr"]


@dataclass(frozen=True)
class Expectation:
    kind: ExpectKind
    span: Span
    source: str
    status: str | None = None
    steps: tuple[tuple[str, Span], ...] = ()
    expr: Expr | None = None


@dataclass(frozen=True)
class FlowTest:
    """One `test "name" { ... }` block."""

    name: str
    span: Span
    workflow: str | None = None
    workflow_span: Span | None = None
    params: Expr | None = None
    params_span: Span | None = None
    secrets: Expr | None = None
    start_at: str | None = None
    # `fire schedule [N]`: the run is the N-th (1-based) schedule's first fire after the start.
    fire: int | None = None
    fire_span: Span | None = None
    mocks: tuple[Mock, ...] = ()
    expectations: tuple[Expectation, ...] = ()


@dataclass(frozen=True)
class FlowTestFile:
    """A whole `.flowtest` file: the `.flow` files it tests (paths relative to it) and its tests."""

    filename: str
    uses: tuple[tuple[str, Span], ...] = ()
    tests: tuple[FlowTest, ...] = field(default_factory=tuple)
