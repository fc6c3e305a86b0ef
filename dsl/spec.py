"""The workflow spec: the compiled, JSON-serialisable DAG of one workflow (see docs/spec.md).

Expressions inside a spec stay plain JSON trees (dicts with an ``op`` field); everything else is a
frozen dataclass so that the engine can rely on its shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

SPEC_VERSION = 1

Expr = dict[str, Any]
Json = Any

DEFAULT_RETRYABLE_ERRORS: tuple[str, ...] = ("timeout", "network", "http.5xx", "http.429")

# The step types the language knows, and the worker queue (task type) that runs each.
# ``None``: the coordinator handles the step itself.
BUILTIN_TASK_TYPES: dict[str, str | None] = {
    "http": "http_request",
    "transform": "data_processing",
    "filter": "data_processing",
    "validate": "data_processing",
    "aggregate": "data_processing",
    "batch": "data_processing",
    "sort": "data_processing",
    "noop": "noop",
    "sleep": None,
    "approval": None,
    "subflow": None,
}


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "end_line": self.end_line,
            "end_column": self.end_column,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Span":
        return cls(
            data["file"], data["line"], data["column"], data["end_line"], data["end_column"]
        )


@dataclass(frozen=True)
class Retry:
    attempts: int = 3
    delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 300.0
    jitter: bool = True
    errors: tuple[str, ...] = DEFAULT_RETRYABLE_ERRORS

    def to_json(self) -> dict[str, Any]:
        return {
            "attempts": self.attempts,
            "delay": self.delay,
            "backoff": self.backoff,
            "max_delay": self.max_delay,
            "jitter": self.jitter,
            "errors": list(self.errors),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Retry":
        return cls(
            attempts=int(data["attempts"]),
            delay=float(data["delay"]),
            backoff=float(data["backoff"]),
            max_delay=float(data["max_delay"]),
            jitter=bool(data["jitter"]),
            errors=tuple(data["errors"]),
        )


@dataclass(frozen=True)
class ForEach:
    var: str
    items: Expr
    where: Expr | None = None
    concurrency: Expr | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "var": self.var,
            "items": self.items,
            "where": self.where,
            "concurrency": self.concurrency,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ForEach":
        return cls(data["var"], data["items"], data.get("where"), data.get("concurrency"))


@dataclass(frozen=True)
class Compensation:
    """The undo action of a step, or an explicit opt-out (``none_reason`` set)."""

    type: str | None = None
    task_type: str | None = None
    config: dict[str, Expr] = field(default_factory=dict)
    retry: Retry | None = None
    none_reason: str | None = None

    @property
    def is_none(self) -> bool:
        return self.none_reason is not None

    def to_json(self) -> dict[str, Any]:
        if self.none_reason is not None:
            return {"none": self.none_reason}
        return {
            "type": self.type,
            "task_type": self.task_type,
            "config": self.config,
            "retry": self.retry.to_json() if self.retry else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Compensation":
        if "none" in data:
            return cls(none_reason=data["none"])
        retry = data.get("retry")
        return cls(
            type=data["type"],
            task_type=data["task_type"],
            config=dict(data["config"]),
            retry=Retry.from_json(retry) if retry else None,
        )


@dataclass(frozen=True)
class StepSpec:
    name: str
    type: str
    task_type: str | None
    config: dict[str, Expr] = field(default_factory=dict)
    depends_on: tuple[str, ...] = ()
    when: Expr | None = None
    for_each: ForEach | None = None
    retry: Retry = field(default_factory=Retry)
    timeout: float | None = None
    compensate: Compensation | None = None
    allow_failure: bool = False
    doc: str | None = None
    span: Span | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "task_type": self.task_type,
            "config": self.config,
            "depends_on": list(self.depends_on),
            "when": self.when,
            "for_each": self.for_each.to_json() if self.for_each else None,
            "retry": self.retry.to_json(),
            "timeout": self.timeout,
            "compensate": self.compensate.to_json() if self.compensate else None,
            "allow_failure": self.allow_failure,
            "doc": self.doc,
            "span": self.span.to_json() if self.span else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "StepSpec":
        return cls(
            name=data["name"],
            type=data["type"],
            task_type=data.get("task_type"),
            config=dict(data.get("config") or {}),
            depends_on=tuple(data.get("depends_on") or ()),
            when=data.get("when"),
            for_each=ForEach.from_json(data["for_each"]) if data.get("for_each") else None,
            retry=Retry.from_json(data["retry"]) if data.get("retry") else Retry(),
            timeout=data.get("timeout"),
            compensate=Compensation.from_json(data["compensate"]) if data.get("compensate") else None,
            allow_failure=bool(data.get("allow_failure", False)),
            doc=data.get("doc"),
            span=Span.from_json(data["span"]) if data.get("span") else None,
        )


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    default: Json = None
    has_default: bool = False

    @property
    def required(self) -> bool:
        return not self.has_default

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "has_default": self.has_default,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Param":
        return cls(data["name"], data["type"], data.get("default"), bool(data.get("has_default")))


@dataclass(frozen=True)
class Let:
    name: str
    expr: Expr

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "expr": self.expr}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Let":
        return cls(data["name"], data["expr"])


@dataclass(frozen=True)
class Schedule:
    kind: str  # "cron" | "every" | "at"
    cron: str | None = None
    every: float | None = None
    at: str | None = None
    timezone: str = "UTC"
    params: dict[str, Json] = field(default_factory=dict)
    catchup: bool = True
    span: Span | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind}
        if self.kind == "cron":
            data["cron"] = self.cron
        elif self.kind == "every":
            data["every"] = self.every
        else:
            data["at"] = self.at
        data.update(
            timezone=self.timezone,
            params=self.params,
            catchup=self.catchup,
            span=self.span.to_json() if self.span else None,
        )
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Schedule":
        return cls(
            kind=data["kind"],
            cron=data.get("cron"),
            every=data.get("every"),
            at=data.get("at"),
            timezone=data.get("timezone") or "UTC",
            params=dict(data.get("params") or {}),
            catchup=bool(data.get("catchup", True)),
            span=Span.from_json(data["span"]) if data.get("span") else None,
        )


@dataclass(frozen=True)
class SearchKey:
    """A business key of the workflow's runs: its name and the expression of its value."""

    name: str
    expr: Expr

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "expr": self.expr}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "SearchKey":
        return cls(data["name"], data["expr"])


@dataclass(frozen=True)
class WorkflowSpec:
    name: str
    steps: tuple[StepSpec, ...]
    params: tuple[Param, ...] = ()
    lets: tuple[Let, ...] = ()
    doc: str | None = None
    timeout: float | None = None
    on_failure: tuple[StepSpec, ...] = ()
    output: Expr | None = None
    schedules: tuple[Schedule, ...] = ()
    span: Span | None = None
    spec_version: int = SPEC_VERSION
    search: tuple[SearchKey, ...] = ()

    def step(self, name: str) -> StepSpec:
        """The step called ``name`` (main steps first, then ``on failure`` steps)."""
        for step in self.steps + self.on_failure:
            if step.name == name:
                return step
        raise KeyError(f"workflow {self.name!r} has no step {name!r}")

    def to_json(self) -> dict[str, Any]:
        return {
            "spec_version": self.spec_version,
            "name": self.name,
            "doc": self.doc,
            "params": [p.to_json() for p in self.params],
            "lets": [let.to_json() for let in self.lets],
            "timeout": self.timeout,
            "steps": [s.to_json() for s in self.steps],
            "on_failure": [s.to_json() for s in self.on_failure],
            "output": self.output,
            "schedules": [s.to_json() for s in self.schedules],
            "span": self.span.to_json() if self.span else None,
            # Only when declared, so that the specs of workflows without one read as before.
            **({"search": [k.to_json() for k in self.search]} if self.search else {}),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "WorkflowSpec":
        version = data.get("spec_version")
        if version != SPEC_VERSION:
            raise ValueError(
                f"unsupported spec_version {version!r}: this Flow reads version {SPEC_VERSION}; "
                "recompile the workflow from its source"
            )
        return cls(
            name=data["name"],
            doc=data.get("doc"),
            params=tuple(Param.from_json(p) for p in data.get("params") or ()),
            lets=tuple(Let.from_json(x) for x in data.get("lets") or ()),
            timeout=data.get("timeout"),
            steps=tuple(StepSpec.from_json(s) for s in data["steps"]),
            on_failure=tuple(StepSpec.from_json(s) for s in data.get("on_failure") or ()),
            output=data.get("output"),
            schedules=tuple(Schedule.from_json(s) for s in data.get("schedules") or ()),
            span=Span.from_json(data["span"]) if data.get("span") else None,
            search=tuple(SearchKey.from_json(k) for k in data.get("search") or ()),
        )
