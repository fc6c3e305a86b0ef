"""What a step handler is given and may raise: the task context and the handler errors.

Handlers (``workers.handlers``) import this module, never the registry or the consumer, so that
the registry can import every built-in handler at the top.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from dsl.errors import FlowError
from engine.core.contracts import Failure, TaskMessage
from engine.settings import Settings

LOG_LEVELS = ("debug", "info", "warning", "error")
_MASK = "***"


class HandlerError(FlowError):
    """An expected failure of a handler, carried as a ``Failure`` record."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class InvalidInput(HandlerError):
    """The task's input cannot be processed; another attempt would fail the same way."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(Failure(type="invalid_input", message=message, retryable=False, details=details))


class UnknownTaskType(FlowError, LookupError):
    """No handler is registered for a task type."""


@dataclass
class TaskContext:
    """What a handler gets: the message, the settings, the resolved payload, secrets, a log, a deadline.

    ``deadline`` is an instant of ``clock`` (None: no deadline). ``logs`` collects the entries
    that go back in the ResultMessage; ``log`` masks every secret value before storing the entry.
    """

    message: TaskMessage
    settings: Settings
    payload: dict[str, Any]
    secrets: Mapping[str, str] = field(default_factory=dict)
    deadline: float | None = None
    registry: "HandlerLookup | None" = None
    # The clock ``deadline`` is read on: the worker's, which stops while the process is paused.
    clock: Callable[[], float] = time.monotonic
    raw_payload: dict[str, Any] | None = None  # before resolution: tells which values were secret
    logs: list[dict[str, Any]] = field(default_factory=list)

    def log(self, level: str, message: str, **data: Any) -> None:
        """Record a log entry for this attempt (secret values are masked)."""
        if level not in LOG_LEVELS:
            level = "info"
        self.logs.append(
            {"level": level, "message": self.mask(message), "data": self.mask(data), "time": time.time()}
        )

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without a deadline."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - self.clock())

    def mask(self, value: Any) -> Any:
        """``value`` with every occurrence of a secret value replaced by ``***``."""
        # Short secrets would mask unrelated text ("1", "a"); they are masked only as whole values.
        secrets = [s for s in self.secrets.values() if isinstance(s, str) and s]
        return _mask(value, sorted(secrets, key=len, reverse=True))


def _mask(value: Any, secrets: list[str]) -> Any:
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if value == secret:
                return _MASK
            if len(secret) >= 4:
                value = value.replace(secret, _MASK)
        return value
    if isinstance(value, Mapping):
        return {key: _mask(item, secrets) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_mask(item, secrets) for item in value]
    return value


Handler = Callable[[TaskContext], Any]


class HandlerLookup(Protocol):
    """What a handler may ask of the worker's registry (the ``compensation`` handler runs the
    handler of the step type it undoes)."""

    def get(self, task_type: str) -> Handler: ...
