"""The values the schedule store takes and returns: the ``Launcher`` it starts runs through, a
fire's outcome, a schedule's description, and the conversions between rows and them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping, Protocol, Sequence

from dsl.build_base import format_duration
from engine.core import timing as timing_rules
from engine.core.errors import NotFound
from engine.core.timing import ScheduleError, Timing

UTC = timezone.utc


# A row read with ``.mappings()`` (keys are column names) or a dict of column values.
Row = Mapping[Any, Any]


# How many upcoming fire times ``list_schedules`` shows per schedule.
UPCOMING = 3


class Launcher(Protocol):
    """Starts what a fire starts, idempotently: the same key twice gives the same id, once."""

    def start_run(
        self, workflow: str, params: dict[str, Any], *, idempotency_key: str, scheduled_at: datetime,
        backfill_id: str | None = None,
    ) -> str: ...

    def create_task(
        self, task_type: str, payload: dict[str, Any], *, idempotency_key: str, scheduled_at: datetime
    ) -> str: ...


@dataclass(frozen=True)
class FireOutcome:
    """What one ``fire_due`` pass did: fires started, recorded missed, already fired, failed."""

    fired: int = 0
    missed: int = 0
    duplicates: int = 0
    failed: int = 0

    def __add__(self, other: "FireOutcome") -> "FireOutcome":
        return FireOutcome(
            self.fired + other.fired,
            self.missed + other.missed,
            self.duplicates + other.duplicates,
            self.failed + other.failed,
        )


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as the CLI and the API show it."""

    id: str
    name: str
    workflow_name: str | None
    task: dict[str, Any] | None
    kind: str
    expression: str
    timezone: str
    params: dict[str, Any]
    catchup: bool
    enabled: bool
    origin: str
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    upcoming: tuple[datetime, ...] = field(default=())

    @property
    def timing(self) -> str:
        """``every 1h30m``, ``cron 0 3 * * *``, ``at 2026-01-01T00:00:00+00:00``: the timing as a .flow file writes it.

        An `every` is stored in seconds (``5400.0``), which its name keeps; people read it as a duration.
        """
        if self.kind == "every":
            return f"every {format_duration(float(self.expression))}"
        return f"{self.kind} {self.expression}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "workflow": self.workflow_name,
            "task": self.task,
            "kind": self.kind,
            "expression": self.expression,
            "timing": self.timing,
            "timezone": self.timezone,
            "params": self.params,
            "catchup": self.catchup,
            "status": "active" if self.enabled else "paused",
            "origin": self.origin,
            "next_fire_at": iso_or_none(self.next_fire_at),
            "last_fire_at": iso_or_none(self.last_fire_at),
            "upcoming": [iso_or_none(t) for t in self.upcoming],
        }


class ScheduleNotFound(NotFound, LookupError):
    """No schedule has this id (a ``NotFound``; also a ``LookupError``, as it was before)."""

    def __init__(self, schedule_id: str) -> None:
        super().__init__("schedule", schedule_id)
        self.schedule_id = schedule_id


def schedule_info(row: Row) -> ScheduleInfo:
    next_fire_at = as_utc(row["next_fire_at"]) if row["next_fire_at"] else None
    upcoming: list[datetime] = []
    if next_fire_at is not None:
        timing = row_timing(row)
        upcoming.append(next_fire_at)
        while len(upcoming) < UPCOMING:
            following = timing_rules.next_fire(timing, upcoming[-1])
            if following is None:
                break
            upcoming.append(following)
    return ScheduleInfo(
        id=row["id"], name=row["name"], workflow_name=row["workflow_name"], task=row["task"],
        kind=row["kind"], expression=row["expression"], timezone=row["timezone"],
        params=dict(row["params"] or {}), catchup=bool(row["catchup"]), enabled=bool(row["enabled"]),
        origin=row["origin"], next_fire_at=next_fire_at,
        last_fire_at=as_utc(row["last_fire_at"]) if row["last_fire_at"] else None,
        upcoming=tuple(upcoming),
    )


def timing_expression(spec: Any) -> tuple[str, str]:
    if spec.kind == "cron":
        return "cron", str(spec.cron)
    if spec.kind == "every":
        return "every", repr(float(spec.every))
    if spec.kind == "at":
        return "at", str(spec.at)
    raise ScheduleError(f"unknown schedule kind {spec.kind!r}: use cron, every or at")


def named_specs(workflow_name: str, specs: Sequence[Any]) -> list[tuple[str, Any]]:
    """A stable name per schedule: its timing, numbered when a workflow repeats one."""
    named: list[tuple[str, Any]] = []
    seen: dict[str, int] = {}
    for spec in specs:
        kind, expression = timing_expression(spec)
        base = f"{workflow_name}: {kind} {expression} {spec.timezone or 'UTC'}"
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base} #{seen[base]}"
        if len(name) > 200:  # the column's width; a hash keeps it unique and stable
            name = f"{workflow_name[:150]}: {hashlib.sha256(name.encode()).hexdigest()[:40]}"
        named.append((name, spec))
    return named


def as_utc(value: datetime) -> datetime:
    # SQLite gives timestamps back without an offset; they were written in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso_or_none(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def row_timing(row: Row) -> Timing:
    kind = row["kind"]
    tz = row["timezone"] or "UTC"
    anchor = as_utc(row["created_at"])
    if kind == "cron":
        return Timing("cron", anchor, cron=row["expression"], timezone=tz, catchup=bool(row["catchup"]))
    if kind == "every":
        return Timing("every", anchor, every=float(row["expression"]), timezone=tz, catchup=bool(row["catchup"]))
    return Timing("at", anchor, at=timing_rules.parse_at(row["expression"], tz), timezone=tz,
                  catchup=bool(row["catchup"]))
