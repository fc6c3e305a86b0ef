"""Reads the dashboard needs that the store does not offer: activity per minute, latest failures,
a run's task rows, and the broker's queue depths.

No Flask here: ``web.dashboard`` calls these with the engine objects it was given. Each query is one
indexed statement, so that the pages stay fast with a million tasks stored (``bench/dashboard_bench``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import kombu
import sqlalchemy as sa
from sqlalchemy import func, select

from engine.core.contracts import task_queue_name
from engine.store.context import iso, runs, tasks
from engine.store.db import read_only
from engine.store.documents import task_document

FINISHED = ("completed", "failed")
# Statuses whose counts stay small on a healthy system; ``completed`` grows without bound and is
# counted separately (see ``status_counts``).
OPEN_STATUSES = ("pending", "processing", "retrying", "failed")


def _minute(column: Any, dialect: str) -> Any:
    """``column`` truncated to the minute, as something both dialects can group on."""
    if dialect == "postgresql":
        return func.date_trunc("minute", column)
    return func.strftime("%Y-%m-%dT%H:%M:00", column)


def activity(engine: sa.Engine, now: datetime | None = None, minutes: int = 60) -> list[dict[str, Any]]:
    """Tasks finished per minute over the last ``minutes``, oldest first, every minute present:
    ``[{"minute": datetime, "completed": n, "failed": n}, ...]``.

    Uses the ``finished_at`` index: the cost is the number of tasks of the window, not of the table.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(minutes=minutes - 1)
    minute = _minute(tasks.c.finished_at, engine.dialect.name).label("minute")
    statement = (
        select(minute, tasks.c.status, func.count())
        .where(tasks.c.finished_at >= start, tasks.c.status.in_(FINISHED))
        .group_by(minute, tasks.c.status)
    )
    buckets = {start + timedelta(minutes=i): {"completed": 0, "failed": 0} for i in range(minutes)}
    with read_only(engine) as conn:
        for when, status, count in conn.execute(statement):
            if isinstance(when, str):
                when = datetime.fromisoformat(when)
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
            if when in buckets:
                buckets[when][status] += count
    return [{"minute": when, **counts} for when, counts in sorted(buckets.items())]


def latest_failures(engine: sa.Engine, limit: int = 10) -> list[dict[str, Any]]:
    """The newest failed tasks with their run's workflow name, newest first."""
    statement = (
        select(tasks.c.id, tasks.c.run_id, tasks.c.step, tasks.c.item, tasks.c.task_type, tasks.c.error,
               tasks.c.attempt, tasks.c.finished_at, runs.c.workflow_name)
        .select_from(tasks.outerjoin(runs, runs.c.id == tasks.c.run_id))
        .where(tasks.c.status == "failed", tasks.c.finished_at.is_not(None))
        .order_by(tasks.c.finished_at.desc())
        .limit(limit)
    )
    with read_only(engine) as conn:
        rows = conn.execute(statement).mappings().all()
    return [{**dict(r), "finished_at": iso(r["finished_at"])} for r in rows]


# Below this many completed tasks they are counted exactly; above, PostgreSQL's statistics give the
# number (within a percent or so after autovacuum's ANALYZE) instead of an index scan of the million.
EXACT_COMPLETED_LIMIT = 200_000


def status_counts(engine: sa.Engine) -> dict[str, Any]:
    """Tasks by status, in total and by task type: ``{"total": {...}, "by_type": {...},
    "completed_estimated": bool}``.

    The open statuses (and ``failed``) are counted exactly per type: a small part of the table on a
    healthy system. ``completed`` grows without bound: it is counted in total only, and on a large
    PostgreSQL table estimated from the planner's statistics (``completed_estimated`` is then true).
    """
    per_type = (
        select(tasks.c.task_type, tasks.c.status, func.count())
        .where(tasks.c.status.in_(OPEN_STATUSES))
        .group_by(tasks.c.task_type, tasks.c.status)
    )
    total: dict[str, int] = dict.fromkeys((*OPEN_STATUSES, "completed"), 0)
    by_type: dict[str, dict[str, int]] = {}
    with read_only(engine) as conn:
        for task_type, status, count in conn.execute(per_type):
            total[status] += count
            by_type.setdefault(task_type, dict.fromkeys(OPEN_STATUSES, 0))[status] = count
        estimate = _estimated_completed(conn) if engine.dialect.name == "postgresql" else None
        if estimate is not None and estimate > EXACT_COMPLETED_LIMIT:
            total["completed"] = estimate
        else:
            estimate = None
            total["completed"] = conn.execute(
                select(func.count()).select_from(tasks).where(tasks.c.status == "completed")
            ).scalar_one()
    return {"total": total, "by_type": by_type, "completed_estimated": estimate is not None}


def _estimated_completed(conn: sa.Connection) -> int | None:
    """``reltuples`` × the frequency of ``completed`` in ``pg_stats``; None before the first ANALYZE."""
    row = conn.execute(sa.text(
        "SELECT c.reltuples, s.most_common_vals::text, s.most_common_freqs "
        "FROM pg_class c LEFT JOIN pg_stats s ON s.schemaname = current_schema() "
        "AND s.tablename = 'tasks' AND s.attname = 'status' "
        "WHERE c.oid = to_regclass('tasks')"
    )).first()
    if row is None or row[0] is None or row[0] < 0 or row[1] is None:
        return None
    values = row[1].strip("{}").split(",")
    frequencies = list(row[2] or [])
    for value, frequency in zip(values, frequencies):
        if value.strip('"') == "completed":
            return int(row[0] * frequency)
    return None


def run_tasks(engine: sa.Engine, run_id: str) -> list[dict[str, Any]]:
    """Every task of a run (steps, fan-out items, compensations), in creation order."""
    statement = select(tasks).where(tasks.c.run_id == run_id).order_by(tasks.c.created_at, tasks.c.id)
    with read_only(engine) as conn:
        return [task_document(r) for r in conn.execute(statement).mappings()]


def broker_queues(url: str, task_types: Iterable[str], timeout: float = 2.0) -> dict[str, Any]:
    """The broker's health and its task queues' depths, over one connection.

    Returns ``{"status": "up"|"down", "latency_ms", "error", "queues": {task_type: {"messages",
    "consumers"} | None}}``: ``None`` for a queue the broker does not have (nothing declared it yet).
    A passive ``queue.declare`` reads the counts without creating anything.
    """
    started = time.perf_counter()
    queues: dict[str, Any] = {}
    try:
        connection = kombu.Connection(
            url, connect_timeout=timeout, transport_options={"max_retries": 0}
        )
        with connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
            latency = (time.perf_counter() - started) * 1000.0
            for task_type in task_types:
                channel = connection.channel()
                try:
                    _, messages, consumers = channel.queue_declare(queue=task_queue_name(task_type), passive=True)
                    queues[task_type] = {"messages": int(messages), "consumers": int(consumers)}
                except Exception:  # a missing queue closes the channel with 404 (its type varies)
                    queues[task_type] = None
                finally:
                    try:
                        channel.close()
                    except Exception:  # the broker already closed it after a 404
                        pass
    except Exception as exc:  # any failure to reach the broker means "down", whatever its type
        return {"status": "down", "latency_ms": None, "error": type(exc).__name__, "queues": {}}
    return {"status": "up", "latency_ms": round(latency, 2), "error": None, "queues": queues}
