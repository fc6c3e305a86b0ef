"""Backfills: run a schedule for a past range, one run (or task) per fire time, each exactly once.

A backfill records every fire time of its range in ``schedule_fires`` that has not started a run
or task yet, with status ``queued``: the ones never recorded, and the ones recorded ``missed``
(the scheduler was down longer than its catch-up window) or ``failed`` (the run could not start)
turn ``queued`` under the backfill. The same unique key ``(schedule_id, fire_time)`` that keeps the scheduler
to one fire per time keeps a second backfill of the range (or the scheduler) from starting a fire
again. Queued fires start through the ``Launcher`` with the scheduler's own idempotency key,
``schedule:{id}:{fire_time}``, so a backfill killed between starting a run and recording it starts
nothing new when it resumes, and a fire the scheduler and a backfill both reach is one run.

``max_parallel`` bounds the backfill's runs (or tasks) in flight; the rest stay queued until
``start_queued`` (each scheduler pass, and the backfill request itself) finds free slots.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from engine.core.backfill import backfill_fires, check_range
from engine.core.states import TERMINAL_RUN_STATUSES, TERMINAL_TASK_STATUSES
from engine.core.errors import NotFound
from engine.store.models import Backfill, Run, Task
from engine.store.schedule_values import ScheduleNotFound, as_utc, iso_or_none, row_timing
from engine.store.schedules import FIRES, SCHEDULES, ScheduleStore

BACKFILLS = cast(Table, Backfill.__table__)
RUNS = cast(Table, Run.__table__)
TASKS = cast(Table, Task.__table__)
QUEUED = "queued"
# Recorded fires that started nothing: a backfill runs them.
RETRIED = ("missed", "failed")


@dataclass(frozen=True)
class BackfillResult:
    """What a backfill request did (or, with ``dry_run``, would do)."""

    schedule_id: str
    range_start: datetime
    range_end: datetime
    fire_times: tuple[datetime, ...]  # every fire time of the range
    already: tuple[datetime, ...]  # fired before (by the scheduler or a backfill), or queued by another backfill
    dry_run: bool
    max_parallel: int | None
    backfill_id: str | None = None  # None: a dry run, or nothing new to start
    started: tuple[dict[str, Any], ...] = field(default=())  # the fires started by this request
    queued: int = 0  # new fires left waiting for a slot under max_parallel

    @property
    def new(self) -> tuple[datetime, ...]:
        recorded = set(self.already)
        return tuple(t for t in self.fire_times if t not in recorded)

    def to_json(self) -> dict[str, Any]:
        return {
            "schedule_id": self.schedule_id,
            "backfill_id": self.backfill_id,
            "from": self.range_start.isoformat(),
            "to": self.range_end.isoformat(),
            "dry_run": self.dry_run,
            "max_parallel": self.max_parallel,
            "fire_times": [t.isoformat() for t in self.fire_times],
            "new": [t.isoformat() for t in self.new],
            "already": [t.isoformat() for t in self.already],
            "started": list(self.started),
            "queued": self.queued,
        }


def backfill(
    schedules: ScheduleStore,
    schedule_id: str,
    start: datetime,
    end: datetime,
    *,
    max_parallel: int | None = None,
    dry_run: bool = False,
) -> BackfillResult:
    """Run schedule ``schedule_id`` once per fire time in ``[start, end)`` that has not fired yet.

    Raises:
        ScheduleNotFound: no such schedule.
        BackfillRangeError: the range is empty, ends in the future, or holds too many fire times.
    """
    start, end = as_utc(start), as_utc(end)
    now = schedules.now()
    check_range(start, end, now)
    if max_parallel is not None and max_parallel < 1:
        raise ValueError("max_parallel must be at least 1")
    with schedules.engine.begin() as conn:
        query = select(SCHEDULES).where(SCHEDULES.c.id == schedule_id)
        if conn.dialect.name == "postgresql":
            # Two backfills of one schedule take turns, so each sees the other's fires.
            query = query.with_for_update()
        row = conn.execute(query).mappings().first()
        if row is None:
            raise ScheduleNotFound(schedule_id)
        fire_times = tuple(backfill_fires(row_timing(row), start, end))
        recorded = _recorded(conn, schedule_id, start, end)
        already = tuple(t for t in fire_times if recorded.get(t, "") not in ("", *RETRIED))
        result = BackfillResult(schedule_id, start, end, fire_times, already, dry_run, max_parallel)
        if dry_run or not result.new:
            return result
        backfill_id = str(uuid.uuid4())
        conn.execute(BACKFILLS.insert().values(
            id=backfill_id, schedule_id=schedule_id, range_start=start, range_end=end,
            max_parallel=max_parallel, created_at=now,
        ))
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        for fire in result.new:
            if fire in recorded:  # missed or failed before: this backfill takes the fire over
                conn.execute(
                    update(FIRES).where(FIRES.c.schedule_id == schedule_id, FIRES.c.fire_time == fire,
                                        FIRES.c.status.in_(RETRIED))
                    .values(status=QUEUED, backfill_id=backfill_id, error=None)
                )
                continue
            conn.execute(
                dialect.insert(FIRES)
                .values(schedule_id=schedule_id, fire_time=fire, status=QUEUED, backfill_id=backfill_id,
                        created_at=now)
                .on_conflict_do_nothing(index_elements=["schedule_id", "fire_time"])
            )
    started = start_queued(schedules, backfill_id)
    with schedules.engine.connect() as conn:
        queued = conn.execute(
            select(func.count()).select_from(FIRES).where(FIRES.c.backfill_id == backfill_id, FIRES.c.status == QUEUED)
        ).scalar_one()
    return BackfillResult(schedule_id, start, end, fire_times, already, dry_run, max_parallel,
                          backfill_id=backfill_id, started=tuple(started), queued=int(queued))


def start_queued(schedules: ScheduleStore, backfill_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Start queued backfill fires while their backfill has free slots; the fires started.

    One backfill (``backfill_id``) or every backfill with queued fires (the scheduler's pass), at
    most ``limit`` fires per call. A fire is launched before it is recorded, with its idempotency
    key, so two schedulers reaching the same fire start one run; the record is a compare-and-set
    on ``status = 'queued'``.
    """
    started: list[dict[str, Any]] = []
    with schedules.engine.connect() as conn:
        query = select(FIRES.c.backfill_id).where(FIRES.c.status == QUEUED).distinct()
        if backfill_id is not None:
            query = query.where(FIRES.c.backfill_id == backfill_id)
        ids = [str(i) for i in conn.execute(query).scalars()]
    for one in ids:
        if len(started) >= limit:
            break
        started += _start_some(schedules, one, limit - len(started))
    return started


def _start_some(schedules: ScheduleStore, backfill_id: str, budget: int) -> list[dict[str, Any]]:
    with schedules.engine.connect() as conn:
        backfill_row = conn.execute(select(BACKFILLS).where(BACKFILLS.c.id == backfill_id)).mappings().first()
        if backfill_row is None:
            return []  # its schedule was deleted since the fires were listed, and the backfill with it
        schedule = conn.execute(
            select(SCHEDULES).where(SCHEDULES.c.id == backfill_row["schedule_id"])
        ).mappings().first()
        slots = budget
        if backfill_row["max_parallel"] is not None:
            slots = min(budget, backfill_row["max_parallel"] - _in_flight(conn, backfill_id))
        if schedule is None or slots <= 0:
            return []
        fires = conn.execute(
            select(FIRES.c.id, FIRES.c.fire_time)
            .where(FIRES.c.backfill_id == backfill_id, FIRES.c.status == QUEUED)
            .order_by(FIRES.c.fire_time).limit(slots)
        ).all()
    started = []
    for fire_id, fire_time in fires:
        fire = as_utc(fire_time)
        launch = schedules.launch(schedule, fire, backfill_id=backfill_id)
        with schedules.engine.begin() as conn:
            recorded = conn.execute(
                update(FIRES).where(FIRES.c.id == fire_id, FIRES.c.status == QUEUED)
                .values(status="failed" if launch.error else "fired", run_id=launch.run_id,
                        task_id=launch.task_id, error=launch.error)
            ).rowcount
        if recorded:
            started.append({"fire_time": iso_or_none(fire), "run_id": launch.run_id,
                            "task_id": launch.task_id, "error": launch.error})
    return started


def _in_flight(conn: Connection, backfill_id: str) -> int:
    """The backfill's started runs and tasks that have not finished."""
    fired = and_(FIRES.c.backfill_id == backfill_id, FIRES.c.status == "fired")
    runs = conn.execute(
        select(func.count()).select_from(FIRES.join(RUNS, RUNS.c.id == FIRES.c.run_id))
        .where(fired, RUNS.c.status.not_in([s.value for s in TERMINAL_RUN_STATUSES]))
    ).scalar_one()
    tasks = conn.execute(
        select(func.count()).select_from(FIRES.join(TASKS, TASKS.c.id == FIRES.c.task_id))
        .where(fired, TASKS.c.status.not_in([s.value for s in TERMINAL_TASK_STATUSES]))
    ).scalar_one()
    return int(runs) + int(tasks)


def _recorded(conn: Connection, schedule_id: str, start: datetime, end: datetime) -> dict[datetime, str]:
    """The recorded fires of the range: fire time -> status (null, from before 0002, is "fired")."""
    rows = conn.execute(
        select(FIRES.c.fire_time, FIRES.c.status).where(
            FIRES.c.schedule_id == schedule_id, FIRES.c.fire_time >= start, FIRES.c.fire_time < end
        )
    ).all()
    return {as_utc(t): status or "fired" for t, status in rows}


class BackfillNotFound(NotFound, LookupError):
    """No backfill has this id (a ``NotFound``, and a ``LookupError``)."""

    def __init__(self, backfill_id: str) -> None:
        super().__init__("backfill", backfill_id)
        self.backfill_id = backfill_id


def cancel_backfill(schedules: ScheduleStore, schedule_id: str, backfill_id: str) -> int:
    """Drop the queued fires of backfill ``backfill_id`` of schedule ``schedule_id`` (their times
    are free to backfill again); the number dropped.

    Runs it already started go on; cancel them as runs. Raises ``BackfillNotFound``.
    """
    with schedules.engine.begin() as conn:
        found = conn.execute(
            select(BACKFILLS.c.id).where(BACKFILLS.c.id == backfill_id, BACKFILLS.c.schedule_id == schedule_id)
        ).first()
        if found is None:
            raise BackfillNotFound(backfill_id)
        return int(conn.execute(
            delete(FIRES).where(FIRES.c.backfill_id == backfill_id, FIRES.c.status == QUEUED)
        ).rowcount)


def has_queued(schedules: ScheduleStore) -> bool:
    """Whether any backfill has fires waiting (the scheduler then passes again soon)."""
    with schedules.engine.connect() as conn:
        return conn.execute(select(FIRES.c.id).where(FIRES.c.status == QUEUED).limit(1)).first() is not None


def list_backfills(schedules: ScheduleStore, schedule_id: str | None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest backfills of a schedule (None: of every schedule) with their fires counted by status."""
    query = select(BACKFILLS).order_by(BACKFILLS.c.created_at.desc(), BACKFILLS.c.id).limit(limit)
    if schedule_id is not None:
        query = query.where(BACKFILLS.c.schedule_id == schedule_id)
    with schedules.engine.connect() as conn:
        rows = conn.execute(query).mappings().all()
        counts: dict[str, dict[str, int]] = {}
        if rows:
            for backfill_id, status, n in conn.execute(
                select(FIRES.c.backfill_id, FIRES.c.status, func.count())
                .where(FIRES.c.backfill_id.in_([r["id"] for r in rows]))
                .group_by(FIRES.c.backfill_id, FIRES.c.status)
            ).all():
                counts.setdefault(backfill_id, {})[status or "fired"] = int(n)
    return [
        {"id": r["id"], "schedule_id": r["schedule_id"],
         "from": iso_or_none(as_utc(r["range_start"])), "to": iso_or_none(as_utc(r["range_end"])),
         "max_parallel": r["max_parallel"], "created_at": iso_or_none(as_utc(r["created_at"])),
         "fires": counts.get(r["id"], {})}
        for r in rows
    ]


__all__ = ["BackfillNotFound", "BackfillResult", "backfill", "cancel_backfill", "start_queued", "has_queued",
           "list_backfills"]
