"""The worker side of Python step types: run a step function as the handler of its task type.

A step function (declared with ``flow.step_type``) takes a context and its config values as keyword
arguments, and returns a JSON value. This module turns one into a ``Handler``:

- the context has the task's ids, its attempt, its idempotency key, its deadline and a logger whose
  entries are the task's logs (``PythonStepContext``);
- a sync function runs on the pool thread the worker gives the task; an ``async def`` runs in its own
  event loop there, cancelled at the deadline (a sync function past its deadline is reported as timed
  out by the worker, as for the built-in handlers);
- exceptions become failure records: one whose class says ``flow_retry = False`` (``NonRetryable``)
  is ``non_retryable``, which no policy retries; ``flow_retry = True`` (``Retryable``) is
  ``handler``, with its ``delay`` as ``retry_after``; anything else propagates and the worker records
  it as ``handler`` with its traceback.

Nothing here imports ``flow``: the declarations are read through the attributes of ``StepFunction``,
and the exceptions through their ``flow_retry`` attribute, so the layers stay ``flow`` → ``workers``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from engine.core.contracts import Failure
from workers.handler_api import Handler, HandlerError, InvalidInput, TaskContext
from workers.registry import Registry

log = logging.getLogger("flow.steps")



class StepFunction(Protocol):
    """What the worker reads of a declared step type (``flow.StepType`` has these attributes,
    read-only: it is a frozen dataclass)."""

    @property
    def name(self) -> str: ...

    @property
    def task_type(self) -> str: ...

    @property
    def function(self) -> Callable[..., Any]: ...

    @property
    def config(self) -> Mapping[str, Any]: ...

    @property
    def required(self) -> frozenset[str]: ...

    @property
    def accepts_any_key(self) -> bool: ...


class TaskLogger:
    """``ctx.logger``: each entry goes to the task's logs and to the worker's ``flow.steps`` logger."""

    def __init__(self, task: TaskContext, step_type: str) -> None:
        self._task = task
        self._log = logging.getLogger(f"flow.steps.{step_type}")

    def _emit(self, level: str, message: str, args: tuple[Any, ...], data: dict[str, Any]) -> None:
        text = str(message) % args if args else str(message)
        self._task.log(level, text, **data)
        self._log.log(logging.getLevelName(level.upper()), "%s", self._task.mask(text))

    def debug(self, message: str, *args: Any, **data: Any) -> None:
        self._emit("debug", message, args, data)

    def info(self, message: str, *args: Any, **data: Any) -> None:
        self._emit("info", message, args, data)

    def warning(self, message: str, *args: Any, **data: Any) -> None:
        self._emit("warning", message, args, data)

    def error(self, message: str, *args: Any, **data: Any) -> None:
        self._emit("error", message, args, data)

    def exception(self, message: str, *args: Any, **data: Any) -> None:
        """``error`` with the traceback of the exception being handled in ``data``."""
        self._emit("error", message, args, {**data, "traceback": traceback.format_exc()})


class PythonStepContext:
    """The context a step function gets (the attributes of ``flow.StepContext``)."""

    def __init__(self, task: TaskContext, step_type: str) -> None:
        message = task.message
        self.run_id: str | None = message.run_id
        self.step: str | None = message.step
        self.item: int | None = message.item
        self.task_id: str = message.task_id
        self.attempt: int = message.attempt
        self.idempotency_key: str = message.idempotency_key
        self.step_type = step_type
        self.logger = TaskLogger(task, step_type)
        self._task = task
        remaining = task.remaining()
        self.deadline: dt.datetime | None = (
            None if remaining is None
            else dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=remaining)
        )

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        return self._task.remaining()

    def __repr__(self) -> str:
        return f"<StepContext {self.step_type} run={self.run_id} step={self.step} attempt={self.attempt}>"


def handler_for(step: StepFunction) -> Handler:
    """The handler that runs ``step``'s function for a task of its type."""
    function = step.function
    is_async = inspect.iscoroutinefunction(function)
    known, required, any_key = frozenset(step.config), frozenset(step.required), step.accepts_any_key

    def handle(task: TaskContext) -> Any:
        config = dict(task.payload)
        missing = sorted(required - set(config))
        unknown = [] if any_key else sorted(set(config) - known)
        if missing or unknown:
            problems = ([f"missing config {', '.join(missing)}"] if missing else []) + \
                       ([f"unknown config {', '.join(unknown)}"] if unknown else [])
            raise InvalidInput(f"{step.name}: {'; '.join(problems)}", missing=missing, unknown=unknown)
        context = PythonStepContext(task, step.name)
        try:
            if is_async:
                return _run_async(function, context, config, task.remaining())
            return function(context, **config)
        except HandlerError:
            raise
        except Exception as exc:
            failure = _declared_failure(exc)
            if failure is None:
                raise  # the worker records it as a retryable `handler` failure, with its traceback
            raise HandlerError(failure) from exc

    handle.__qualname__ = f"python step {step.name}"
    return handle


def _run_async(function: Callable[..., Any], context: PythonStepContext, config: dict[str, Any],
               remaining: float | None) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(function(context, **config), timeout=remaining)

    try:
        return asyncio.run(bounded())
    except asyncio.TimeoutError:
        raise HandlerError(Failure("timeout", f"{context.step_type} did not finish before its deadline")) from None


def _declared_failure(exc: BaseException) -> Failure | None:
    """The failure of a ``Retryable`` or ``NonRetryable`` (by their ``flow_retry``), else None."""
    flag = getattr(exc, "flow_retry", None)
    if flag is None:
        return None
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    details: dict[str, Any] = {"exception": f"{type(exc).__module__}.{type(exc).__qualname__}"}
    if flag is False:
        return Failure("non_retryable", message, retryable=False, details=details)
    delay = getattr(exc, "delay", None)
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        details["retry_after"] = float(delay)
    return Failure("handler", message, retryable=True, details=details, traceback=traceback.format_exc())


def register(registry: Registry, steps: Iterable[StepFunction]) -> list[str]:
    """Register a handler per step type on ``registry``; returns the task types added.

    Raises:
        ValueError: a task type that already has a handler (a built-in, or another step type).
    """
    added: list[str] = []
    for step in steps:
        if step.task_type in registry:
            raise ValueError(f"step type {step.name}: task type {step.task_type!r} already has a handler")
        registry.register(step.task_type, handler_for(step))
        added.append(step.task_type)
        log.debug("python step type %s on queue %s", step.name, step.task_type)
    return added
