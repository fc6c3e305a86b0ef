"""What every store module shares: the value types it returns, the transaction context, time, and
the few writes (task messages, logs, locks) that several commands make.

All SQL of the engine lives in ``engine/store*.py``; ``engine/store.py`` is the facade.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from sqlalchemy import Connection, Engine, Select, Table, select, text, update

from dsl.spec import Retry, WorkflowSpec
from engine import tracing
from engine.contracts import DEAD_LETTER_EXCHANGE, TASK_EXCHANGE, TaskMessage
from engine.models import (
    FINISHED_SEQ_NAME,
    DeadLetter,
    Outbox,
    Run,
    Task,
    TaskLog,
    WorkflowVersion,
)
from engine.planner_types import TaskView
from engine.states import TaskStatus

log = logging.getLogger("flow.store")

# The store writes through SQLAlchemy Core on the models' tables: batches of plain dicts, no ORM
# identity map to grow or flush.
runs = cast(Table, Run.__table__)
tasks = cast(Table, Task.__table__)
task_logs = cast(Table, TaskLog.__table__)
outbox = cast(Table, Outbox.__table__)
dead_letters = cast(Table, DeadLetter.__table__)
versions = cast(Table, WorkflowVersion.__table__)

# Statements with ``IN (...)`` are cut into chunks: PostgreSQL and SQLite limit bound parameters.
CHUNK = 900
# How long after a task's timeout (or the default lease) a worker that went silent loses its task.
LEASE_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class DeployedVersion:
    name: str
    version: int
    created: bool


@dataclass(frozen=True)
class BatchOutcome:
    """What one transaction did: transitions ``applied``, results ``dropped`` (late or duplicate),
    and the runs it re-planned."""

    applied: int = 0
    dropped: int = 0
    runs_touched: tuple[str, ...] = ()
    # Outbox rows the transaction committed, for the coordinator to publish at once (may be
    # empty where the dialect does not return ids; the relay publishes those).
    outbox_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    exchange: str
    routing_key: str
    body: str
    headers: dict[str, Any]


@dataclass
class StoreContext:
    """The store's configuration, shared by its modules (no connection: one per transaction)."""

    engine: Engine
    clock: Callable[[], float]
    rng: random.Random | None
    lease_seconds: float
    # Lease expiries of one attempt before it counts as a failed attempt (FLOW_MAX_DELIVERIES).
    max_deliveries: int = 5
    # Compiled specs by workflow version id: a version never changes once deployed.
    specs: dict[str, WorkflowSpec] = field(default_factory=dict)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=timezone.utc)


@dataclass
class Writes:
    """Inserts collected during a transaction and sent in a few multi-row statements at the end.

    Flushed in foreign-key order (tasks before the logs and dead letters that point at them).
    """

    tasks: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    # Ids of the outbox rows flushed so far (where the dialect returns them from a multi-row
    # insert): the coordinator publishes them right after the commit (``store_outbox.publish_ids``).
    outbox_ids: list[int] = field(default_factory=list)
    # Run status changes of the planner, by run id: applied in one statement at the flush
    # (``store_plan.flush_run_updates``; PostgreSQL only).
    run_updates: dict[str, dict[str, Any]] = field(default_factory=dict)

    def flush(self, conn: Connection) -> None:
        for table, rows in (
            (tasks, self.tasks),
            (dead_letters, self.dead_letters),
            (task_logs, self.logs),
        ):
            if rows:
                conn.execute(table.insert(), rows)
                rows.clear()
        if self.outbox:
            if conn.dialect.insert_executemany_returning:
                statement = outbox.insert().returning(outbox.c.id, sort_by_parameter_order=True)
                self.outbox_ids.extend(conn.execute(statement, self.outbox).scalars())
            else:
                conn.execute(outbox.insert(), self.outbox)
            self.outbox.clear()
        if self.run_updates:
            from engine.store_plan import flush_run_updates

            flush_run_updates(conn, self.run_updates)
            self.run_updates.clear()


def new_id() -> str:
    return str(uuid.uuid4())


def aware(value: datetime | None) -> datetime | None:
    """SQLite gives timestamps back without an offset; every timestamp we write is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    value = aware(value)
    return value.isoformat() if value is not None else None


def to_datetime(value: datetime | float | int | str | None) -> datetime | None:
    """Accept a datetime, epoch seconds or an ISO string (as the API and the scheduler pass them)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return aware(value)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    return aware(datetime.fromisoformat(value))


def after(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def select_in(statement: Select[Any], column: Any, ids: Iterable[str], conn: Connection) -> list[Any]:
    """Rows of ``statement`` whose ``column`` is in ``ids``, in chunks."""
    wanted = list(dict.fromkeys(ids))
    rows: list[Any] = []
    for part in chunks(wanted):
        rows.extend(conn.execute(statement.where(column.in_(part))).mappings().all())
    return rows


def lock_runs(
    ctx: StoreContext, conn: Connection, run_ids: Iterable[str], *, skip_locked: bool = False
) -> dict[str, dict[str, Any]]:
    """Lock ``run_ids`` (``SELECT ... FOR UPDATE``) and return their rows by id.

    Locked in id order, so that two coordinators locking overlapping sets cannot deadlock; while a
    transaction holds a run, no other one plans it. ``skip_locked`` (timers) skips runs another
    transaction holds instead of waiting for them. SQLite has one writer at a time (BEGIN
    IMMEDIATE, see ``engine.db``), which gives the same guarantee.
    """
    ordered = sorted(set(run_ids))
    found: dict[str, dict[str, Any]] = {}
    for part in chunks(ordered):
        statement = select(runs).where(runs.c.id.in_(part)).order_by(runs.c.id)
        if ctx.is_postgres:
            statement = statement.with_for_update(skip_locked=skip_locked)
        for row in conn.execute(statement).mappings():
            found[row["id"]] = dict(row)
    return found


def take_finished_seq(ctx: StoreContext, conn: Connection, count: int) -> list[int]:
    """``count`` increasing values of the global completion sequence (compensations undo in
    decreasing order)."""
    if count <= 0:
        return []
    if ctx.is_postgres:
        rows = conn.execute(
            text(f"SELECT nextval('{FINISHED_SEQ_NAME}') FROM generate_series(1, :n)"), {"n": count}
        ).scalars().all()
        return sorted(int(v) for v in rows)
    last = conn.execute(
        text("UPDATE counters SET value = value + :n WHERE name = :name RETURNING value"),
        {"n": count, "name": FINISHED_SEQ_NAME},
    ).scalar_one()
    return list(range(int(last) - count + 1, int(last) + 1))


def retry_of(row: dict[str, Any]) -> Retry:
    """A task's retry policy; tasks without one (standalone) retry by the defaults, up to
    ``max_attempts``."""
    if row.get("retry"):
        policy = Retry.from_json(row["retry"])
        # An operator's retry continues the attempt numbering and extends ``max_attempts``.
        if int(row["max_attempts"]) > policy.attempts:
            policy = replace(policy, attempts=int(row["max_attempts"]))
        return policy
    return Retry(attempts=int(row["max_attempts"]))


def task_message(row: dict[str, Any]) -> TaskMessage:
    """The message of the current attempt of a task row. The idempotency key is stable per
    attempt: a redelivery or a lease re-dispatch of the same attempt carries the same key."""
    return TaskMessage(
        task_id=row["id"],
        task_type=row["task_type"],
        attempt=int(row["attempt"]),
        fencing_token=int(row["fencing_token"]),
        payload=row["payload"],
        idempotency_key=f"{row['id']}:{row['attempt']}",
        run_id=row.get("run_id"),
        step=row.get("step"),
        item=row.get("item"),
        timeout=row.get("timeout"),
    )


# Step types the coordinator runs itself (``engine/store_internal.py``): no worker, no message.
INTERNAL_TASK_TYPES = frozenset({"sleep", "approval", "subflow"})


def queue_task_message(writes: Writes, row: dict[str, Any], now: datetime) -> None:
    if row.get("run_id") is not None and row["task_type"] in INTERNAL_TASK_TYPES:
        return  # left pending: the timer pass sets it up (engine.store_internal._start_pending)
    message = task_message(row)
    writes.outbox.append(
        {
            "exchange": TASK_EXCHANGE,
            "routing_key": message.task_type,
            "body": message.encode(),
            "headers": {"task_id": message.task_id, "attempt": message.attempt, **tracing.task_headers(row)},
            "created_at": now,
        }
    )


def queue_dead_letter(
    writes: Writes, row: dict[str, Any], reason: str, error: dict[str, Any] | None, now: datetime
) -> None:
    """A dead-letter row (for the dashboard and requeue) and its message on the dead-letter
    exchange (for operators' tooling), both in the transaction that failed the task."""
    body = task_message(row).encode()
    writes.dead_letters.append(
        {
            "id": new_id(),
            "task_id": row["id"],
            "run_id": row.get("run_id"),
            "task_type": row["task_type"],
            "reason": reason,
            "error": error,
            "message": body,
            "created_at": now,
            "requeued_at": None,
            "discarded_at": None,
        }
    )
    writes.outbox.append(
        {
            "exchange": DEAD_LETTER_EXCHANGE,
            "routing_key": row["task_type"],
            "body": body,
            "headers": {"task_id": row["id"], "x-flow-reason": reason[:500]},
            "created_at": now,
        }
    )


def queue_log(
    writes: Writes,
    row: dict[str, Any],
    level: str,
    message: str,
    now: datetime,
    data: dict[str, Any] | None = None,
    attempt: int | None = None,
) -> None:
    writes.logs.append(
        {
            "task_id": row["id"],
            "run_id": row.get("run_id"),
            "attempt": attempt if attempt is not None else row.get("attempt"),
            "level": level,
            "message": message,
            "data": data,
            "created_at": now,
        }
    )


def new_task_row(
    *,
    run_id: str | None,
    kind: str,
    step: str | None,
    item: int | None,
    task_type: str,
    payload: dict[str, Any],
    status: TaskStatus,
    now: datetime,
    retry: Retry | None,
    max_attempts: int,
    timeout: float | None = None,
    output: Any = None,
    error: dict[str, Any] | None = None,
    next_attempt_at: datetime | None = None,
    idempotency_key: str | None = None,
) -> dict[str, Any]:
    final = status in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.SKIPPED)
    return {
        "id": new_id(),
        "run_id": run_id,
        "kind": kind,
        "step": step,
        "item": item,
        "task_type": task_type,
        "payload": payload,
        "status": status.value,
        "attempt": 0 if final else 1,
        "max_attempts": max_attempts,
        "retry": retry.to_json() if retry else None,
        "timeout": timeout,
        "next_attempt_at": next_attempt_at,
        "fencing_token": 1,
        "lease_expires_at": None,
        "dispatched_at": now if status == TaskStatus.PENDING else None,
        "output": output,
        "error": error,
        "finished_seq": None,
        "idempotency_key": idempotency_key,
        "created_at": now,
        "started_at": None,
        "finished_at": now if final else None,
        "updated_at": now,
    }


def task_view(row: dict[str, Any]) -> TaskView:
    return TaskView(
        id=row["id"],
        kind=row["kind"],
        step=row["step"] or "",
        item=row["item"],
        status=TaskStatus(row["status"]),
        output=row["output"],
        error=row["error"],
        attempt=int(row["attempt"]),
        finished_seq=row["finished_seq"],
    )


def cas_task(
    conn: Connection,
    task_id: str,
    allowed_from: Iterable[TaskStatus],
    values: dict[str, Any],
    fencing_token: int | None = None,
) -> dict[str, Any] | None:
    """Compare-and-set one task: the new row, or None when its status (or token) did not match."""
    statement = (
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.status.in_([s.value for s in allowed_from]))
        .values(**values)
        .returning(*tasks.c)
    )
    if fencing_token is not None:
        statement = statement.where(tasks.c.fencing_token == fencing_token)
    row = conn.execute(statement).mappings().first()
    return dict(row) if row is not None else None


IN_FLIGHT = (TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.RETRYING)


def cancel_tasks(
    conn: Connection,
    where: Any,
    error: dict[str, Any],
    now: datetime,
    writes: Writes,
) -> list[dict[str, Any]]:
    """Cancel the in-flight tasks matching ``where``; the fencing token moves on, so a worker still
    running one cannot record its result."""
    rows = conn.execute(
        update(tasks)
        .where(where, tasks.c.status.in_([s.value for s in IN_FLIGHT]))
        .values(
            status=TaskStatus.CANCELLED.value,
            fencing_token=tasks.c.fencing_token + 1,
            error=error,
            lease_expires_at=None,
            next_attempt_at=None,
            finished_at=now,
            updated_at=now,
        )
        .returning(*tasks.c)
    ).mappings().all()
    for row in rows:
        queue_log(writes, dict(row), "warning", f"cancelled: {error['message']}", now, data={"error": error})
    return [dict(row) for row in rows]
