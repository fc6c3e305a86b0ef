"""The task-row helpers every store writer shares: locking runs, the completion sequence, a
task's retry policy and message, queueing messages, dead letters and logs, new task rows, and the
compare-and-set on a task's status."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, text, update

from dsl.spec import Retry
from engine.core.contracts import DEAD_LETTER_EXCHANGE, TASK_EXCHANGE, TaskMessage
from engine.core.planner.view import TaskView
from engine.core.states import TaskStatus
from engine.observability import tracing
from engine.store.context import StoreContext, chunks, new_id, runs, tasks
from engine.store.models import (
    FINISHED_SEQ_NAME,
)
from engine.store.writes import Writes


def lock_runs(
    ctx: StoreContext, conn: Connection, run_ids: Iterable[str], *, skip_locked: bool = False
) -> dict[str, dict[str, Any]]:
    """Lock ``run_ids`` (``SELECT ... FOR UPDATE``) and return their rows by id.

    Locked in id order, so that two coordinators locking overlapping sets cannot deadlock; while a
    transaction holds a run, no other one plans it. ``skip_locked`` (timers) skips runs another
    transaction holds instead of waiting for them. SQLite has one writer at a time (BEGIN
    IMMEDIATE, see ``engine.store.db``), which gives the same guarantee.
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


# Step types the coordinator runs itself (``engine/store/internal_steps.py``): no worker, no message.
INTERNAL_TASK_TYPES = frozenset({"sleep", "approval", "subflow"})


def queue_task_message(writes: Writes, row: dict[str, Any], now: datetime) -> None:
    if row.get("run_id") is not None and row["task_type"] in INTERNAL_TASK_TYPES:
        return  # left pending: the timer pass sets it up (engine.store.internal_steps._start_pending)
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
