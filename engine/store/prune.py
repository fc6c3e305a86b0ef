"""Retention: delete finished work older than a cutoff, in small batches.

What goes (each older than the cutoff):

- finished runs (terminal statuses, by ``finished_at``) with their tasks, task logs and dead letters;
  a run whose child runs (subflows) still exist waits until they are pruned first;
- finished standalone tasks (no run) with their logs and dead letters;
- task logs of tasks that are not in flight (a long run's old lines);
- closed dead letters (requeued or discarded);
- schedule fires (the schedule's newer fires keep its at-most-once key);
- audit rows, dashboard sessions last seen before the cutoff, and failed logins (the throttle only
  looks 15 minutes back).

Each batch is its own short transaction that deletes at most ``batch_size`` rows of the table it
picks from (a run's tasks and logs go with it). On PostgreSQL the rows are picked with ``FOR
UPDATE SKIP LOCKED``, so a batch never waits for a coordinator or an operator's command that holds
one of them, and two pruners (two schedulers) never pick the same rows. Nothing here takes a table
lock; live rows are never selected, so they are never locked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from sqlalchemy import Connection, Engine, Select, Table, delete, exists, func, or_, select
from sqlalchemy.orm import aliased

from engine.core.states import TERMINAL_RUN_STATUSES, TERMINAL_TASK_STATUSES
from engine.observability import metrics
from engine.store.models import AuditEvent, DashboardSession, DeadLetter, LoginFailure, Run, RunSearchKey, ScheduleFire, Task, TaskLog

log = logging.getLogger("flow.prune")

runs = cast(Table, Run.__table__)
run_search_keys = cast(Table, RunSearchKey.__table__)
tasks = cast(Table, Task.__table__)
task_logs = cast(Table, TaskLog.__table__)
dead_letters = cast(Table, DeadLetter.__table__)
schedule_fires = cast(Table, ScheduleFire.__table__)
audit_events = cast(Table, AuditEvent.__table__)
sessions = cast(Table, DashboardSession.__table__)
login_failures = cast(Table, LoginFailure.__table__)

TERMINAL_RUNS = sorted(s.value for s in TERMINAL_RUN_STATUSES)
TERMINAL_TASKS = sorted(s.value for s in TERMINAL_TASK_STATUSES)
TABLES = ("runs", "tasks", "task_logs", "dead_letters", "schedule_fires", "audit_events", "sessions",
          "login_failures")


@dataclass
class PruneResult:
    """Rows deleted (or, for a dry run, that would be) per table, and the batches it took."""

    cutoff: datetime
    deleted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    batches: int = 0
    dry_run: bool = False

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def _lock(ctx_pg: bool, statement: Select[Any], of: Table) -> Select[Any]:
    return statement.with_for_update(skip_locked=True, of=of) if ctx_pg else statement


def _delete_in(conn: Connection, table: Table, column: Any, ids: list[Any]) -> int:
    if not ids:
        return 0
    return int(conn.execute(delete(table).where(column.in_(ids))).rowcount or 0)


def _task_dependents(conn: Connection, task_ids: list[str], counts: dict[str, int]) -> None:
    """Delete what points at ``task_ids`` (logs, dead letters) before the tasks themselves."""
    counts["task_logs"] += _delete_in(conn, task_logs, task_logs.c.task_id, task_ids)
    counts["dead_letters"] += _delete_in(conn, dead_letters, dead_letters.c.task_id, task_ids)


def _old_runs(cutoff: datetime) -> Select[Any]:
    child = aliased(runs)
    return (
        select(runs.c.id)
        .where(runs.c.status.in_(TERMINAL_RUNS), runs.c.finished_at < cutoff,
               ~exists().where(child.c.parent_run_id == runs.c.id))
        .order_by(runs.c.finished_at)
    )


def _old_standalone(cutoff: datetime) -> Select[Any]:
    return (
        select(tasks.c.id)
        .where(tasks.c.run_id.is_(None), tasks.c.status.in_(TERMINAL_TASKS), tasks.c.finished_at < cutoff)
        .order_by(tasks.c.finished_at)
    )


def _old_logs(cutoff: datetime) -> Select[Any]:
    # Lines of tasks still in flight stay: an operator is likely looking at them.
    return (
        select(task_logs.c.id)
        .join(tasks, tasks.c.id == task_logs.c.task_id)
        .where(task_logs.c.created_at < cutoff, tasks.c.status.in_(TERMINAL_TASKS))
        .order_by(task_logs.c.id)
    )


def _closed_dead_letters(cutoff: datetime) -> Select[Any]:
    return select(dead_letters.c.id).where(
        or_(dead_letters.c.requeued_at < cutoff, dead_letters.c.discarded_at < cutoff)
    ).order_by(dead_letters.c.created_at)


def _old_fires(cutoff: datetime) -> Select[Any]:
    # A backfill's queued fire is work still to do, however old its fire time; it goes once it fired.
    return (select(schedule_fires.c.id)
            .where(schedule_fires.c.fire_time < cutoff, schedule_fires.c.status.is_distinct_from("queued"))
            .order_by(schedule_fires.c.id))


def _old_audit(cutoff: datetime) -> Select[Any]:
    return select(audit_events.c.id).where(audit_events.c.at < cutoff).order_by(audit_events.c.id)


def _old_sessions(cutoff: datetime) -> Select[Any]:
    # Last seen before the cutoff: ended, or long past any idle timeout.
    return select(sessions.c.id).where(sessions.c.last_seen_at < cutoff).order_by(sessions.c.id)


def _old_failures(cutoff: datetime) -> Select[Any]:
    return select(login_failures.c.id).where(login_failures.c.created_at < cutoff).order_by(login_failures.c.id)


def _runs_batch(conn: Connection, pg: bool, cutoff: datetime, n: int, counts: dict[str, int]) -> int:
    run_ids = list(conn.execute(_lock(pg, _old_runs(cutoff).limit(n), runs)).scalars())
    if not run_ids:
        return 0
    task_ids = list(conn.execute(select(tasks.c.id).where(tasks.c.run_id.in_(run_ids))).scalars())
    for start in range(0, len(task_ids), 900):  # bound the parameters of one statement
        part = task_ids[start:start + 900]
        _task_dependents(conn, part, counts)
        counts["tasks"] += _delete_in(conn, tasks, tasks.c.id, part)
    # Logs may name the run without a task of it (none today; cheap to be sure).
    counts["task_logs"] += _delete_in(conn, task_logs, task_logs.c.run_id, run_ids)
    # A run's business keys go with it; they are an index, not history, so they are not counted.
    _delete_in(conn, run_search_keys, run_search_keys.c.run_id, run_ids)
    counts["runs"] += _delete_in(conn, runs, runs.c.id, run_ids)
    return len(run_ids)


def _standalone_batch(conn: Connection, pg: bool, cutoff: datetime, n: int, counts: dict[str, int]) -> int:
    task_ids = list(conn.execute(_lock(pg, _old_standalone(cutoff).limit(n), tasks)).scalars())
    _task_dependents(conn, task_ids, counts)
    counts["tasks"] += _delete_in(conn, tasks, tasks.c.id, task_ids)
    return len(task_ids)


def _simple_batch(table: Table, query: Callable[[datetime], Select[Any]], name: str) -> Callable[..., int]:
    def batch(conn: Connection, pg: bool, cutoff: datetime, n: int, counts: dict[str, int]) -> int:
        ids = list(conn.execute(_lock(pg, query(cutoff).limit(n), table)).scalars())
        counts[name] += _delete_in(conn, table, table.c.id, ids)
        return len(ids)

    return batch


STAGES: tuple[tuple[str, Callable[..., int]], ...] = (
    ("runs", _runs_batch),
    ("tasks", _standalone_batch),
    ("task_logs", _simple_batch(task_logs, _old_logs, "task_logs")),
    ("dead_letters", _simple_batch(dead_letters, _closed_dead_letters, "dead_letters")),
    ("schedule_fires", _simple_batch(schedule_fires, _old_fires, "schedule_fires")),
    ("audit_events", _simple_batch(audit_events, _old_audit, "audit_events")),
    ("sessions", _simple_batch(sessions, _old_sessions, "sessions")),
    ("login_failures", _simple_batch(login_failures, _old_failures, "login_failures")),
)


def _count_dry(engine: Engine, cutoff: datetime) -> dict[str, int]:
    """What a prune at ``cutoff`` would delete (one read-only pass; no rows are locked)."""
    old_runs = _old_runs(cutoff).order_by(None).subquery()
    run_tasks = select(tasks.c.id).where(tasks.c.run_id.in_(select(old_runs.c.id)))
    standalone = _old_standalone(cutoff).order_by(None)
    gone_tasks = run_tasks.union_all(standalone).subquery()
    old_logs = _old_logs(cutoff).order_by(None)
    with engine.connect() as conn:
        def n(statement: Any) -> int:
            return int(conn.execute(select(func.count()).select_from(statement.subquery())).scalar_one())

        counts = {
            "runs": n(select(old_runs.c.id)),
            "tasks": n(select(gone_tasks.c.id)),
            # Logs and dead letters of the pruned tasks, plus the independently old ones.
            "task_logs": n(select(task_logs.c.id).where(or_(
                task_logs.c.task_id.in_(select(gone_tasks.c.id)), task_logs.c.id.in_(old_logs)))),
            "dead_letters": n(select(dead_letters.c.id).where(or_(
                dead_letters.c.task_id.in_(select(gone_tasks.c.id)),
                dead_letters.c.id.in_(_closed_dead_letters(cutoff).order_by(None))))),
            "schedule_fires": n(_old_fires(cutoff).order_by(None)),
            "audit_events": n(_old_audit(cutoff).order_by(None)),
            "sessions": n(_old_sessions(cutoff).order_by(None)),
            "login_failures": n(_old_failures(cutoff).order_by(None)),
        }
        conn.rollback()
    return counts


def prune(
    engine: Engine,
    older_than: timedelta,
    *,
    batch_size: int = 1000,
    dry_run: bool = False,
    now: datetime | None = None,
    pause: float = 0.0,
    should_stop: Callable[[], bool] = lambda: False,
    on_batch: Callable[[str, int], None] | None = None,
) -> PruneResult:
    """Delete finished work older than ``now - older_than`` in batches of ``batch_size``.

    Parameters:
        engine: from ``engine.store.db.make_engine`` (PostgreSQL or SQLite).
        older_than: the retention period (must be positive).
        batch_size: the most rows one transaction picks (runs, tasks, logs ... per stage).
        dry_run: count instead of deleting.
        pause: seconds to sleep between batches, to leave the database room under load.
        should_stop: polled between batches (SIGTERM); the batches done stay done.
        on_batch: called with (stage, rows picked) after each batch (for progress and metrics).

    Returns:
        The rows deleted per table.
    """
    if older_than <= timedelta(0):
        raise ValueError("the retention period must be positive")
    now = now or datetime.now(timezone.utc)
    result = PruneResult(cutoff=now - older_than, dry_run=dry_run)
    if dry_run:
        result.deleted.update(_count_dry(engine, result.cutoff))
        return result
    pg = engine.dialect.name == "postgresql"
    for stage, batch in STAGES:
        while not should_stop():
            with engine.begin() as conn:
                picked = batch(conn, pg, result.cutoff, batch_size, result.deleted)
            result.batches += 1
            if on_batch is not None:
                on_batch(stage, picked)
            # A short batch means the stage is done, except for runs: deleting child runs may
            # have freed their parents, so that stage goes on until a batch finds nothing.
            if picked == 0 or (picked < batch_size and stage != "runs"):
                break
            if pause:
                time.sleep(pause)
    for table, n in result.deleted.items():
        if n:
            metrics.PRUNED.labels(table).inc(n)
    log.info("pruned before %s: %s", result.cutoff.isoformat(),
             ", ".join(f"{k} {v}" for k, v in result.deleted.items()))
    return result


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` (a bare number is days).

    Raises:
        ValueError: with a message that shows the accepted forms.
    """
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    raw = text.strip().lower()
    unit = raw[-1:] if raw[-1:] in units else "d"
    number = raw[:-1] if raw[-1:] in units else raw
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is not an age; use a number with a unit, like 30d, 12h or 90m") from None
    if value <= 0:
        raise ValueError(f"{text!r}: the age must be positive")
    return timedelta(seconds=value * units[unit])


__all__ = ["PruneResult", "prune", "parse_age", "TABLES"]
