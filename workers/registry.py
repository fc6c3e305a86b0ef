"""Task type → handler, registered explicitly (no import side effects).

A handler is a callable ``handle(task: TaskContext) -> output`` returning a JSON value
(``workers.handler_api``). It raises ``HandlerError(Failure)`` for an expected failure (a 503, an invalid input ...); anything else it
raises becomes a retryable ``handler`` failure with the traceback (see ``workers.consumer``).
Plugins add handlers through the entry point group ``flow.handlers``: the entry point's name is the
task type and its object the handler.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from workers.handler_api import Handler, HandlerError, InvalidInput, TaskContext, UnknownTaskType
from workers.handlers import compensation, data, http, noop

PLUGIN_GROUP = "flow.handlers"

__all__ = ["PLUGIN_GROUP", "Handler", "HandlerError", "InvalidInput", "Registry", "TaskContext", "UnknownTaskType"]


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
        registry = cls()
        registry.register("http_request", http.handle)
        registry.register("data_processing", data.handle)
        registry.register("compensation", compensation.handle)
        registry.register("noop", noop.handle)
        if load_plugins:
            registry.load_plugins()
        return registry

