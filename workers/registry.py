"""Task type → handler, registered explicitly (no import side effects).

A handler is a callable ``handle(task: TaskContext) -> output`` returning a JSON value. It raises
``HandlerError(Failure)`` for an expected failure (a 503, an invalid input ...); anything else it
raises becomes a retryable ``handler`` failure with the traceback (see ``workers.consumer``).
Plugins add handlers through the entry point group ``flow.handlers``: the entry point's name is the
task type and its object the handler.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Mapping

from engine.contracts import Failure, TaskMessage
from engine.settings import Settings

PLUGIN_GROUP = "flow.handlers"
LOG_LEVELS = ("debug", "info", "warning", "error")
_MASK = "***"


class HandlerError(Exception):
    """An expected failure of a handler, carried as a ``Failure`` record."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


class InvalidInput(HandlerError):
    """The task's input cannot be processed; another attempt would fail the same way."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(Failure(type="invalid_input", message=message, retryable=False, details=details))


class UnknownTaskType(LookupError):
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
    registry: "Registry | None" = None
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


class Registry:
    """The handlers this worker can run, by task type."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, task_type: str, handler: Handler, *, replace: bool = False) -> None:
        """Register ``handler`` for ``task_type``; refuses a second one unless ``replace``."""
        if task_type in self._handlers and not replace:
            raise ValueError(f"a handler for task type {task_type!r} is already registered")
        self._handlers[task_type] = handler

    def get(self, task_type: str) -> Handler:
        """The handler of ``task_type``; raises ``UnknownTaskType`` naming the known ones."""
        try:
            return self._handlers[task_type]
        except KeyError:
            known = ", ".join(sorted(self._handlers)) or "none"
            raise UnknownTaskType(f"no handler for task type {task_type!r}; known: {known}") from None

    def __contains__(self, task_type: object) -> bool:
        return task_type in self._handlers

    def task_types(self) -> tuple[str, ...]:
        return tuple(sorted(self._handlers))

    def load_plugins(self, group: str = PLUGIN_GROUP) -> list[str]:
        """Register the handlers of the entry point ``group``; returns the task types added."""
        added: list[str] = []
        for entry in entry_points(group=group):
            handler = entry.load()
            if not callable(handler):
                raise TypeError(f"entry point {entry.name} = {entry.value} is not callable")
            self.register(entry.name, handler)
            added.append(entry.name)
        return added

    @classmethod
    def with_builtins(cls, load_plugins: bool = False) -> "Registry":
        """A registry with ``http_request``, ``data_processing``, ``compensation``, ``noop``."""
        # Imported here because the handler modules import this one (for TaskContext/HandlerError).
        from workers.handlers import compensation, data, http, noop

        registry = cls()
        registry.register("http_request", http.handle)
        registry.register("data_processing", data.handle)
        registry.register("compensation", compensation.handle)
        registry.register("noop", noop.handle)
        if load_plugins:
            registry.load_plugins()
        return registry

