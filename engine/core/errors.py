"""The engine's exceptions: one small tree, each carrying the ids a caller needs.

The web layer maps them to HTTP statuses: ``NotFound`` 404, ``IllegalTransition`` and ``Conflict``
409, ``InvalidParams`` and ``CompileFailed`` 422.
"""

from __future__ import annotations

from collections.abc import Sequence

from dsl.errors import Diagnostic, FlowError


class EngineError(FlowError):
    """Base of every error the engine raises on purpose."""


class NotFound(EngineError):
    """No ``entity`` with this id (or name)."""

    def __init__(self, entity: str, id: str, hint: str = "") -> None:
        self.entity = entity
        self.id = id
        message = f"{entity} {id!r} does not exist"
        super().__init__(f"{message}; {hint}" if hint else message)


class IllegalTransition(EngineError):
    """The current status of ``entity`` ``id`` does not allow moving to ``target``."""

    def __init__(self, entity: str, id: str, current: str | None, target: str) -> None:
        self.entity = entity
        self.id = id
        self.current = current
        self.target = target
        super().__init__(
            f"{entity} {id} is {current or 'missing'}; it cannot become {target} from there"
        )


class InvalidParams(EngineError):
    """The params of a run do not fit the workflow's declared params; ``problems`` lists each one."""

    def __init__(self, problems: Sequence[str], workflow: str = "") -> None:
        self.problems = list(problems)
        self.workflow = workflow
        where = f" for workflow {workflow!r}" if workflow else ""
        super().__init__(f"invalid params{where}: " + "; ".join(self.problems))


class CompileFailed(EngineError):
    """The source did not compile; ``diagnostics`` are the compiler's (file:line:col, message)."""

    def __init__(self, diagnostics: Sequence[Diagnostic], filename: str = "") -> None:
        self.diagnostics = list(diagnostics)
        self.filename = filename
        errors = [d for d in self.diagnostics if d.is_error]
        first = f": {errors[0].message}" if errors else ""
        super().__init__(
            f"{filename or 'source'} has {len(errors)} error(s){first}; run `flow check` for details"
        )


class Conflict(EngineError):
    """The request collides with existing state (for example an idempotency key reused differently)."""
