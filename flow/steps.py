"""Step types written as Python functions: ``@step_type``, the context a function gets, and the
exceptions that steer retries.

    from flow import NonRetryable, Retryable, step_type

    @step_type("billing.charge", config={"amount": int, "currency": str})
    def charge(ctx, amount, currency="EUR"):
        ctx.logger.info("charging %s %s", amount, currency)
        if amount <= 0:
            raise NonRetryable("nothing to charge")       # fails the step at once
        if rate_limited():
            raise Retryable("rate limited", delay=30)    # retried in 30 s
        return {"charged": amount}                       # a JSON value: the step's output

Declaring is pure: the decorator returns a ``StepType`` that holds the function and its config, and
registers nothing anywhere. ``flow worker --import MODULE`` imports the module, finds its
``StepType`` objects (``declared_in``) and consumes their queues; ``flow steps export`` writes their
config schemas (``manifest``) for the compiler, which never imports user code.

The worker side (``workers.python_steps``) does not import this module: it recognises the exceptions
by their ``flow_retry`` attribute and builds an object that has the attributes of ``StepContext``.
"""

from __future__ import annotations

import datetime as dt
import inspect
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["step_type", "StepType", "StepContext", "StepLogger", "Retryable", "NonRetryable", "declared_in",
           "manifest", "json_schema"]

# The compiler's plugin step types are dotted, so that they never shadow a built-in step type.
STEP_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")


class Retryable(Exception):
    """Fail this attempt and let the step's retry policy try again, after ``delay`` seconds if given
    (instead of the policy's backoff, like an HTTP ``Retry-After``).

    The failure's class is ``handler``, which the default policy of Python step types retries.
    """

    flow_retry = True

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        super().__init__(message)
        if delay is not None and delay < 0:
            raise ValueError("delay must be at least 0 seconds")
        self.delay = delay


class NonRetryable(Exception):
    """Fail the step now, whatever attempts remain: another attempt would fail the same way (a
    declined card, an unknown customer). The failure's class is ``non_retryable``, which no retry
    policy retries."""

    flow_retry = False
    delay = None


class StepLogger(Protocol):
    """``ctx.logger``: entries go to the task's logs (``GET /api/runs/ID/logs``, the dashboard) and to
    the worker's log. ``%``-style arguments as with ``logging``; keyword arguments become the entry's
    data."""

    def debug(self, message: str, *args: Any, **data: Any) -> None: ...
    def info(self, message: str, *args: Any, **data: Any) -> None: ...
    def warning(self, message: str, *args: Any, **data: Any) -> None: ...
    def error(self, message: str, *args: Any, **data: Any) -> None: ...
    def exception(self, message: str, *args: Any, **data: Any) -> None: ...


class StepContext(Protocol):
    """What a step function gets as its first argument (for type annotations).

    Attributes:
        run_id: the run (None for a standalone task).
        step: the step's name in the workflow.
        item: the fan-out item's index, or None.
        task_id: the task (one per step, or per fan-out item).
        attempt: this attempt's number, from 1.
        idempotency_key: stable across the attempts and redeliveries of the task: pass it to the
            services you call, so that an attempt repeated after a crash has no double effect.
        deadline: when the attempt times out (the step's ``timeout``), or None.
        logger: a ``StepLogger``.
    """

    run_id: str | None
    step: str | None
    item: int | None
    task_id: str
    attempt: int
    idempotency_key: str
    deadline: dt.datetime | None
    logger: StepLogger

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never negative), or None without one."""
        ...


@dataclass(frozen=True)
class StepType:
    """A step type implemented by a Python function; calling it calls the function.

    Attributes:
        name: the dotted step type that ``.flow`` files use (``step charge: billing.charge {...}``).
        function: the function, ``(ctx, **config) -> JSON value``; sync or ``async def``.
        config: each config key and its Python type (``int``, ``str``, ``list[str]``, ``X | None`` ...).
        required: the keys a step must give (the function's parameters without a default).
        task_type: the worker queue (default: the name).
    """

    name: str
    function: Callable[..., Any] = field(repr=False)
    config: Mapping[str, Any]
    required: frozenset[str]
    task_type: str
    description: str | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    @property
    def accepts_any_key(self) -> bool:
        """Whether the function takes ``**kwargs`` (then keys beyond ``config`` are passed too)."""
        return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(self.function).parameters.values())

    def config_schema(self) -> dict[str, Any]:
        """The JSON Schema of a step's config, as the compiler checks it."""
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {key: json_schema(kind) for key, kind in self.config.items()},
            "additionalProperties": self.accepts_any_key,
        }
        if self.required:
            schema["required"] = sorted(self.required)
        return schema

    def describe(self) -> dict[str, Any]:
        """This step type's entry of the manifest (the shape of a ``flow.step_types`` plugin)."""
        entry: dict[str, Any] = {"task_type": self.task_type, "config_schema": self.config_schema()}
        if self.description:
            entry["description"] = self.description
        return entry


def step_type(name: str, *, config: Mapping[str, Any] | None = None,
              task_type: str | None = None) -> Callable[[Callable[..., Any]], StepType]:
    """Declare a step type implemented by the decorated function.

    The function takes the context first, then each config value as a keyword argument. ``config``
    maps each key to its type; without it the keys and types come from the function's parameters and
    annotations. A parameter with a default is an optional key.

    Parameters:
        name: a dotted name, e.g. ``billing.charge``.
        config: ``{key: type}``.
        task_type: the queue its tasks go to; default ``name``. Workers that import the module
            consume it.

    Raises:
        ValueError: a name that is not dotted.
        TypeError: config keys that the function cannot take, or a function without a context parameter.
    """
    if not STEP_TYPE_NAME.fullmatch(name):
        raise ValueError(f"step type {name!r}: use a dotted name such as 'billing.charge' "
                         f"(letters, digits and '_' between the dots)")

    def decorate(function: Callable[..., Any]) -> StepType:
        keys, required = _config_of(name, function, config)
        doc = inspect.getdoc(function)
        return StepType(name=name, function=function, config=keys, required=required,
                        task_type=task_type or name, description=doc.splitlines()[0] if doc else None)

    return decorate


def _config_of(name: str, function: Callable[..., Any],
               config: Mapping[str, Any] | None) -> tuple[dict[str, Any], frozenset[str]]:
    if not callable(function):
        raise TypeError(f"@step_type({name!r}) decorates a function, not {type(function).__name__}")
    params = list(inspect.signature(function).parameters.values())
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if not params or params[0].kind not in positional:
        raise TypeError(f"@step_type({name!r}): {function.__qualname__} must take the context as its first "
                        f"parameter: def {function.__name__}(ctx, ...)")
    rest = {p.name: p for p in params[1:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    hints = _hints(function)
    if config is None:
        keys = {key: hints.get(key, Any) for key in rest}
    else:
        keys = dict(config)
        missing = [key for key in keys if key not in rest and not takes_any]
        if missing:
            raise TypeError(f"@step_type({name!r}): {function.__qualname__} has no parameter for config "
                            f"{', '.join(missing)}")
        unknown = [p for p in rest.values() if p.name not in keys and p.default is p.empty]
        if unknown:
            raise TypeError(f"@step_type({name!r}): parameter {unknown[0].name} of {function.__qualname__} "
                            f"is not in config and has no default")
    required = frozenset(k for k in keys if k in rest and rest[k].default is inspect.Parameter.empty)
    return keys, required


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # an annotation naming something not importable: the config is then unchecked
        return {}


_SCALARS: dict[Any, dict[str, Any]] = {
    int: {"type": "integer"}, float: {"type": "number"}, str: {"type": "string"},
    bool: {"type": "boolean"}, type(None): {"type": "null"}, list: {"type": "array"},
    tuple: {"type": "array"}, dict: {"type": "object"}, Any: {}, object: {},
}


def json_schema(kind: Any) -> dict[str, Any]:
    """The JSON Schema of a Python type: ``int``, ``float``, ``str``, ``bool``, ``list[X]``,
    ``dict[str, X]``, ``X | None``, ``Literal[...]``; anything else accepts any value."""
    if kind in _SCALARS:
        return dict(_SCALARS[kind])
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [json_schema(a) for a in args]}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple, set, frozenset, Iterable) and args:
        return {"type": "array", "items": json_schema(args[0])}
    if origin in (dict, Mapping) and len(args) == 2:
        return {"type": "object", "additionalProperties": json_schema(args[1])}
    if origin is not None and origin in _SCALARS:
        return dict(_SCALARS[origin])
    return {}


def declared_in(module: types.ModuleType) -> list[StepType]:
    """The step types a module declares: its ``StepType`` attributes, in name order."""
    found = {id(v): v for v in vars(module).values() if isinstance(v, StepType)}
    return sorted(found.values(), key=lambda s: s.name)


def manifest(steps: Iterable[StepType]) -> dict[str, dict[str, Any]]:
    """``{step type: {"task_type", "config_schema"}}``: what the compiler needs to check the steps'
    config, as JSON (``flow steps export`` writes it; deploys carry it).

    Raises:
        ValueError: two different functions declare the same step type.
    """
    described: dict[str, dict[str, Any]] = {}
    origins: dict[str, StepType] = {}
    for step in steps:
        if step.name in origins and origins[step.name].function is not step.function:
            raise ValueError(f"step type {step.name} is declared twice: by {_where(origins[step.name])} "
                             f"and {_where(step)}")
        origins[step.name] = step
        described[step.name] = step.describe()
    return dict(sorted(described.items()))


def _where(step: StepType) -> str:
    return f"{step.function.__module__}.{step.function.__qualname__}"
