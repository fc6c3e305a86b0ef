"""The SQL of schedules: register, list, pause, resume, delete, and fire what is due.

Fire times come from the pure ``engine.core.timing``; this module only stores them. At most once per
fire time rests on two things: the ``schedule_fires`` unique key ``(schedule_id, fire_time)`` and
the idempotency key ``schedule:{id}:{fire_time}`` given to the run or task a fire starts, so a
scheduler killed between starting a run and recording the fire starts nothing new the next time.

Runs and tasks are started through a ``Launcher`` (``StoreLauncher`` wraps ``engine.store.Store``)
in the launcher's own transaction. On PostgreSQL the schedule row stays locked (``FOR UPDATE SKIP
LOCKED``) from the claim to the commit, so a second scheduler skips it instead of waiting. SQLite
has one writer at a time and a launch needs that writer, so there the claim is read first, the
launches run, and a compare-and-set on ``last_fire_at`` records the result.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence, cast

from sqlalchemy import Connection, Engine, Table, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from engine.core import timing as timing_rules
from engine.core.errors import EngineError
from engine.store.models import Backfill, Schedule, ScheduleFire
from engine.store.schedule_values import (
    UTC,
    FireOutcome,
    Launcher,
    Row,
    ScheduleInfo,
    ScheduleNotFound,
    as_utc,
    iso_or_none,
    named_specs,
    row_timing,
    schedule_info,
    timing_expression,
)

# Typed as tables: the declarative ``__table__`` is a FromClause to type checkers.
SCHEDULES = cast(Table, Schedule.__table__)
FIRES = cast(Table, ScheduleFire.__table__)
BACKFILLS = cast(Table, Backfill.__table__)


class ScheduleStore:
    """Schedules in the database. ``clock`` returns Unix seconds (injected in tests)."""

    def __init__(
        self,
        engine: Engine,
        launcher: Launcher,
        *,
        clock: Callable[[], float] = time.time,
        catchup_window: float = 3600.0,
    ) -> None:
        self.engine = engine
        self.launcher = launcher
        self.clock = clock
        self.catchup_window = catchup_window

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- registration ---------------------------------------------------------------------------

    def sync_workflow(self, workflow_name: str, version: int, specs: Sequence[Any]) -> list[str]:
        """Make the ``.flow`` schedules of ``workflow_name`` match ``specs``; returns their ids.

        A schedule whose timing (kind, expression, time zone) is unchanged keeps its row, so its
        fire history, its pause and its ``every`` anchor survive a redeploy; its params and
        catch-up are replaced. New ones are added, vanished ones deleted with their history.
        ``version`` is the deployed version; runs start on the latest version anyway.
        """
        now = self.now()
        wanted = dict(named_specs(workflow_name, specs))
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(SCHEDULES.c.id, SCHEDULES.c.name).where(
                    SCHEDULES.c.origin == "flow", SCHEDULES.c.workflow_name == workflow_name
                )
            ).all()
            existing = {row.name: row.id for row in rows}
            for name, schedule_id in existing.items():
                if name not in wanted:
                    _delete(conn, schedule_id)
            ids = []
            for name, spec in wanted.items():
                params = dict(spec.params or {})
                if name in existing:
                    conn.execute(
                        update(SCHEDULES)
                        .where(SCHEDULES.c.id == existing[name])
                        .values(params=params, catchup=bool(spec.catchup), updated_at=now)
                    )
                    ids.append(existing[name])
                    continue
                kind, expression = timing_expression(spec)
                ids.append(
                    _insert(conn, now, name=name, workflow_name=workflow_name, task=None,
                            kind=kind, expression=expression, timezone=spec.timezone or "UTC",
                            params=params, catchup=bool(spec.catchup), origin="flow")
                )
        return ids

    def create_scheduled_task(self, task_type: str, payload: dict[str, Any], run_at: datetime | str) -> str:
        """A one-off task started at ``run_at`` (the task API's scheduled task); returns the schedule id."""
        at = timing_rules.parse_at(run_at) if isinstance(run_at, str) else as_utc(run_at)
        with self.engine.begin() as conn:
            return _insert(conn, self.now(), name=f"task:{uuid.uuid4()}", workflow_name=None,
                           task={"type": task_type, "payload": payload}, kind="at",
                           expression=at.isoformat(), timezone="UTC", params={}, catchup=True,
                           origin="api")

    def create_recurring_task(
        self, task_type: str, payload: dict[str, Any], cron: str, timezone_name: str = "UTC"
    ) -> str:
        """A task started on each fire of ``cron`` in ``timezone_name`` (the task API's recurring task)."""
        with self.engine.begin() as conn:
            return _insert(conn, self.now(), name=f"task:{uuid.uuid4()}", workflow_name=None,
                           task={"type": task_type, "payload": payload}, kind="cron",
                           expression=cron, timezone=timezone_name, params={}, catchup=True,
                           origin="api")

    # -- queries and controls -------------------------------------------------------------------

    def list_schedules(self, *, tasks_only: bool = False) -> list[ScheduleInfo]:
        """Every schedule with its next fire times, soonest first (paused and finished last)."""
        query = select(SCHEDULES)
        if tasks_only:
            query = query.where(SCHEDULES.c.task.is_not(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        infos = [schedule_info(row) for row in rows]
        far = datetime.max.replace(tzinfo=UTC)
        infos.sort(key=lambda i: (not i.enabled, i.next_fire_at or far, i.name))
        return infos

    def list_scheduled_tasks(self) -> list[ScheduleInfo]:
        """The task API's scheduled and recurring tasks (schedules that start a task, not a run)."""
        return self.list_schedules(tasks_only=True)

    def get(self, schedule_id: str) -> ScheduleInfo:
        with self.engine.connect() as conn:
            row = conn.execute(select(SCHEDULES).where(SCHEDULES.c.id == schedule_id)).mappings().first()
        if row is None:
            raise ScheduleNotFound(schedule_id)
        return schedule_info(row)

    def fires(self, schedule_id: str, limit: int = 100) -> list[dict[str, Any]]:
        """The newest recorded fires of a schedule: time, status, run or task, error."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(FIRES).where(FIRES.c.schedule_id == schedule_id)
                .order_by(FIRES.c.fire_time.desc()).limit(limit)
            ).mappings().all()
        return [
            {"fire_time": iso_or_none(as_utc(r["fire_time"])), "status": r["status"] or "fired",
             "run_id": r["run_id"], "task_id": r["task_id"], "error": r["error"], "backfill_id": r["backfill_id"]}
            for r in rows
        ]

    def pause(self, schedule_id: str) -> None:
        """Stop firing. Fires that fall while paused are neither started nor made up later."""
        self._set_enabled(schedule_id, False)

    def resume(self, schedule_id: str) -> None:
        """Fire again from now on: the paused stretch is skipped, not caught up."""
        self._set_enabled(schedule_id, True)

    def delete(self, schedule_id: str) -> None:
        """Remove a schedule and its fire history. A ``.flow`` schedule comes back when the
        workflow is deployed with a changed source; remove it from the source to stop it for good."""
        with self.engine.begin() as conn:
            if not _delete(conn, schedule_id):
                raise ScheduleNotFound(schedule_id)

    def _set_enabled(self, schedule_id: str, enabled: bool) -> None:
        now = self.now()
        with self.engine.begin() as conn:
            row = conn.execute(
                select(SCHEDULES).where(SCHEDULES.c.id == schedule_id).with_for_update()
            ).mappings().first()
            if row is None:
                raise ScheduleNotFound(schedule_id)
            if bool(row["enabled"]) == enabled:
                return
            values: dict[str, Any] = {"enabled": enabled, "updated_at": now}
            if enabled:
                # Move the cursor to now so that the paused stretch is not caught up on resume.
                cursor = max(now, as_utc(row["last_fire_at"]) if row["last_fire_at"] else now)
                values["last_fire_at"] = cursor
                values["next_fire_at"] = timing_rules.next_fire(row_timing(row), cursor)
            conn.execute(update(SCHEDULES).where(SCHEDULES.c.id == schedule_id).values(**values))

    # -- firing ---------------------------------------------------------------------------------

    def fire_due(self, now: datetime | None = None, limit: int = 100) -> FireOutcome:
        """Start every run and task due at ``now`` (default: the clock), at most ``limit`` fires.

        One transaction per schedule. Fires older than the catch-up window are recorded missed.
        """
        now = as_utc(now) if now is not None else self.now()
        total = FireOutcome()
        budget = limit
        while budget > 0:
            outcome = self._fire_one_schedule(now, budget)
            if outcome is None:
                break
            total += outcome
            budget -= max(1, outcome.fired + outcome.duplicates + outcome.failed)
        return total

    def next_due_at(self) -> datetime | None:
        """The earliest ``next_fire_at`` of an enabled schedule (for the scheduler's sleep)."""
        with self.engine.connect() as conn:
            value = conn.execute(
                select(SCHEDULES.c.next_fire_at)
                .where(SCHEDULES.c.enabled.is_(True), SCHEDULES.c.next_fire_at.is_not(None))
                .order_by(SCHEDULES.c.next_fire_at).limit(1)
            ).scalar()
        return as_utc(value) if value is not None else None

    def _fire_one_schedule(self, now: datetime, budget: int) -> FireOutcome | None:
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:
                row = _claim(conn, now, skip_locked=True)
                if row is None:
                    return None
                return self._fire(conn, row, now, budget)
        # SQLite: read the claim, launch outside any transaction, then record under a CAS.
        with self.engine.begin() as conn:
            row = _claim(conn, now, skip_locked=False)
        if row is None:
            return None
        return self._fire_unlocked(row, now, budget)

    def _fire_unlocked(self, row: Row, now: datetime, budget: int) -> FireOutcome:
        plan = self._plan(row, now, budget)
        launched = [(fire, self.launch(row, fire)) for fire in plan.to_fire]
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(SCHEDULES)
                .where(SCHEDULES.c.id == row["id"], _same(SCHEDULES.c.last_fire_at, row["last_fire_at"]))
                .values(last_fire_at=plan.cursor, next_fire_at=plan.next_fire_at, updated_at=now)
            ).rowcount
            if not changed:
                # Lost the race: the other scheduler recorded these fires (same idempotency keys,
                # so the launches above returned its runs and tasks).
                return FireOutcome(duplicates=len(plan.to_fire))
            return self._record(conn, row["id"], plan, launched, now)

    def _fire(self, conn: Connection, row: Row, now: datetime, budget: int) -> FireOutcome:
        plan = self._plan(row, now, budget)
        launched = [(fire, self.launch(row, fire)) for fire in plan.to_fire]
        outcome = self._record(conn, row["id"], plan, launched, now)
        conn.execute(
            update(SCHEDULES).where(SCHEDULES.c.id == row["id"])
            .values(last_fire_at=plan.cursor, next_fire_at=plan.next_fire_at, updated_at=now)
        )
        return outcome

    def _plan(self, row: Row, now: datetime, budget: int) -> "_Plan":
        timing = row_timing(row)
        last = as_utc(row["last_fire_at"]) if row["last_fire_at"] else None
        to_fire, missed = timing_rules.due_fires(timing, last, now, self.catchup_window, max_fires=budget)
        done = to_fire + missed
        cursor = max(done) if done else (last or timing_rules.start_cursor(timing))
        return _Plan(to_fire, missed, cursor, timing_rules.next_fire(timing, cursor))

    def launch(self, row: Row, fire: datetime, *, backfill_id: str | None = None) -> "Launch":
        """Start what schedule ``row`` starts for ``fire``, keyed ``schedule:{id}:{fire}`` so that
        the same fire launched twice (a retried pass, a backfill) starts one run or task."""
        key = f"schedule:{row['id']}:{fire.isoformat()}"
        try:
            if row["task"] is not None:
                task = row["task"]
                task_id = self.launcher.create_task(
                    task["type"], dict(task.get("payload") or {}), idempotency_key=key, scheduled_at=fire
                )
                return Launch(task_id=task_id)
            run_id = self.launcher.start_run(
                row["workflow_name"], dict(row["params"] or {}), idempotency_key=key, scheduled_at=fire,
                backfill_id=backfill_id,
            )
            return Launch(run_id=run_id)
        except EngineError as exc:
            # Refused for good (workflow gone, params no longer valid): record it, fire the next
            # ones. Anything else (the database is down) rolls back and the next pass retries.
            return Launch(error=f"{type(exc).__name__}: {exc}")

    def _record(
        self, conn: Connection, schedule_id: str, plan: "_Plan",
        launched: Iterable[tuple[datetime, "Launch"]], now: datetime,
    ) -> FireOutcome:
        outcome = FireOutcome()
        for fire in plan.missed:
            if _insert_fire(conn, schedule_id, fire, now, status="missed"):
                outcome += FireOutcome(missed=1)
        for fire, launch in launched:
            status = "failed" if launch.error else "fired"
            if not _insert_fire(conn, schedule_id, fire, now, status=status, run_id=launch.run_id,
                                task_id=launch.task_id, error=launch.error):
                outcome += FireOutcome(duplicates=1)
            elif launch.error:
                outcome += FireOutcome(failed=1)
            else:
                outcome += FireOutcome(fired=1)
        return outcome


@dataclass(frozen=True)
class _Plan:
    to_fire: list[datetime]
    missed: list[datetime]
    cursor: datetime
    next_fire_at: datetime | None


@dataclass(frozen=True)
class Launch:
    """What a launch started: a run, a task, or the error that refused it."""

    run_id: str | None = None
    task_id: str | None = None
    error: str | None = None


# -- SQL helpers ------------------------------------------------------------------------------------


def _claim(conn: Connection, now: datetime, *, skip_locked: bool) -> Row | None:
    query = (
        select(SCHEDULES)
        .where(SCHEDULES.c.enabled.is_(True), SCHEDULES.c.next_fire_at <= now)
        .order_by(SCHEDULES.c.next_fire_at)
        .limit(1)
    )
    if skip_locked:
        # A schedule another scheduler is firing is skipped, not waited for.
        query = query.with_for_update(skip_locked=True)
    return conn.execute(query).mappings().first()


def _insert(conn: Connection, now: datetime, **values: Any) -> str:
    schedule_id = str(uuid.uuid4())
    row = {"id": schedule_id, "enabled": True, "created_at": now, "updated_at": now,
           "last_fire_at": None, **values}
    timing = row_timing(row)  # validates: raises ScheduleError before anything is written
    row["next_fire_at"] = timing_rules.next_fire(timing, timing_rules.start_cursor(timing))
    conn.execute(insert(SCHEDULES).values(**row))
    return schedule_id


def _insert_fire(conn: Connection, schedule_id: str, fire: datetime, now: datetime, **values: Any) -> bool:
    """Insert a fire row; False if that fire time is already recorded (the unique key)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(FIRES)
        .values(schedule_id=schedule_id, fire_time=fire, created_at=now, **values)
        .on_conflict_do_nothing(index_elements=["schedule_id", "fire_time"])
    )
    return bool(conn.execute(statement).rowcount)


def _delete(conn: Connection, schedule_id: str) -> bool:
    conn.execute(delete(FIRES).where(FIRES.c.schedule_id == schedule_id))
    conn.execute(delete(BACKFILLS).where(BACKFILLS.c.schedule_id == schedule_id))
    return bool(conn.execute(delete(SCHEDULES).where(SCHEDULES.c.id == schedule_id)).rowcount)


def _same(column: Any, value: datetime | None) -> Any:
    return column.is_(None) if value is None else column == value


