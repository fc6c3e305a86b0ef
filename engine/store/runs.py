"""What operators and clients ask for: start a run or a task, cancel, retry, compensate, requeue.

Each command is one transaction. A command whose entity's current status does not allow it raises
``IllegalTransition`` (HTTP 409); the run is locked first, then its tasks, like everywhere else.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, select, update
from sqlalchemy.exc import IntegrityError

from dsl.spec import Retry
from engine.core.errors import IllegalTransition, InvalidParams, NotFound
from engine.core.planner.view import COMPENSATION, STANDALONE, STEP
from engine.core.states import RunStatus, TaskStatus, run_sources, task_sources
from engine.store.context import (
    StoreContext,
    dead_letters,
    runs,
    task_logs,
    tasks,
    to_datetime,
)
from engine.store.planning import plan_runs, set_run_status
from engine.store.task_rows import cancel_tasks, lock_runs, new_task_row, queue_log, queue_task_message
from engine.store.writes import Writes

R = RunStatus
T = TaskStatus


def create_task(
    ctx: StoreContext,
    task_type: str,
    payload: dict[str, Any],
    *,
    max_attempts: int = 3,
    run_at: datetime | float | str | None = None,
    idempotency_key: str | None = None,
) -> str:
    """A standalone task (the seed's ``POST /api/task``): ``pending`` with its message, or
    ``retrying`` until ``run_at`` (the timer pass dispatches it then)."""
    if max_attempts < 1:
        raise InvalidParams([f"max_attempts must be at least 1, got {max_attempts}"])
    when = to_datetime(run_at)
    try:
        with ctx.engine.begin() as conn:
            if idempotency_key:
                existing = conn.execute(
                    select(tasks.c.id).where(tasks.c.idempotency_key == idempotency_key)
                ).scalar()
                if existing:
                    return str(existing)
            now = ctx.now()
            delayed = when is not None and when > now
            row = new_task_row(
                run_id=None, kind=STANDALONE, step=None, item=None, task_type=task_type,
                payload=payload, status=T.RETRYING if delayed else T.PENDING, now=now,
                retry=Retry(attempts=max_attempts), max_attempts=max_attempts,
                next_attempt_at=when if delayed else None, idempotency_key=idempotency_key,
            )
            if delayed:
                # The timer pass counts the move to pending as the next attempt; start one lower.
                row["attempt"] = 0
            writes = Writes(tasks=[row])
            if not delayed:
                queue_task_message(writes, row, now)
            writes.flush(conn)
            return str(row["id"])
    except IntegrityError:
        if idempotency_key:
            with ctx.engine.connect() as conn:
                existing = conn.execute(
                    select(tasks.c.id).where(tasks.c.idempotency_key == idempotency_key)
                ).scalar()
            if existing:
                return str(existing)
        raise


def _locked_run(ctx: StoreContext, conn: Connection, run_id: str) -> dict[str, Any]:
    found = lock_runs(ctx, conn, [run_id])
    if run_id not in found:
        raise NotFound("run", run_id)
    return found[run_id]


def _require_run(run: dict[str, Any], target: RunStatus) -> None:
    if R(run["status"]) not in run_sources(target):
        raise IllegalTransition("run", run["id"], run["status"], target.value)


def cancel_run(ctx: StoreContext, run_id: str) -> None:
    """Cancel a pending or running run and its in-flight tasks (their late results are refused).
    Completed steps are not undone; ``compensate_run`` does that."""
    with ctx.engine.begin() as conn:
        now = ctx.now()
        run = _locked_run(ctx, conn, run_id)
        _require_run(run, R.CANCELLED)
        writes = Writes()
        _cancel(ctx, conn, run, now, writes, "the run was cancelled by an operator")
        writes.flush(conn)


# A subflow chain deeper than this is refused when it starts (internal_steps), so this bounds too.
_MAX_SUBFLOW_DEPTH = 16


def _cancel(ctx: StoreContext, conn: Connection, run: dict[str, Any], now: datetime, writes: Writes,
            message: str, depth: int = 0) -> None:
    """Cancel ``run``'s in-flight tasks, the run, and its live child runs (subflows), depth first.

    Parent before child is the lock order everywhere; a child ending locks its parent with SKIP
    LOCKED, so this cannot deadlock with it.
    """
    error = {"type": "cancelled", "message": message}
    cancel_tasks(conn, tasks.c.run_id == run["id"], error, now, writes)
    # The run's error stays null: a later manual compensate of a cancelled run must not run
    # the ``on failure`` steps (the planner keys them on ``run.error``).
    set_run_status(conn, run, R.CANCELLED, now)
    if depth >= _MAX_SUBFLOW_DEPTH:
        return
    live = [R.PENDING.value, R.RUNNING.value]
    child_ids = conn.execute(
        select(runs.c.id).where(runs.c.parent_run_id == run["id"], runs.c.status.in_(live)).order_by(runs.c.id)
    ).scalars().all()
    for child in lock_runs(ctx, conn, list(child_ids)).values():
        if child["status"] in live:
            _cancel(ctx, conn, child, now, writes, f"its parent run {run['id']} was cancelled", depth + 1)


def retry_run(ctx: StoreContext, run_id: str) -> None:
    """Retry a failed run from its failed steps: each failed step task starts its next attempt
    (new idempotency key, new fencing token, a fresh budget of attempts); steps behind it run when
    it completes."""
    with ctx.engine.begin() as conn:
        now = ctx.now()
        run = _locked_run(ctx, conn, run_id)
        _require_run(run, R.RUNNING)
        writes = Writes()
        failed = and_(tasks.c.run_id == run_id, tasks.c.kind == STEP, tasks.c.status == T.FAILED.value)
        # Steps the planner recorded as failed (their config could not be evaluated) never ran:
        # remove them so that the planner evaluates them afresh.
        never_ran = select(tasks.c.id).where(failed, tasks.c.dispatched_at.is_(None))
        conn.execute(delete(task_logs).where(task_logs.c.task_id.in_(never_ran)))
        conn.execute(delete(tasks).where(tasks.c.id.in_(never_ran.scalar_subquery())))
        _restart_tasks(conn, failed, now, writes)
        set_run_status(conn, run, R.RUNNING, now, clear_error=True)
        plan_runs(ctx, conn, {run_id: run}, writes, now)


def compensate_run(ctx: StoreContext, run_id: str) -> None:
    """Run the saga of a finished run by hand: compensations of its completed steps, in reverse
    completion order. After ``compensation_failed`` it retries the compensations that failed."""
    with ctx.engine.begin() as conn:
        now = ctx.now()
        run = _locked_run(ctx, conn, run_id)
        _require_run(run, R.COMPENSATING)
        writes = Writes()
        _restart_tasks(
            conn,
            and_(tasks.c.run_id == run_id, tasks.c.kind == COMPENSATION, tasks.c.status == T.FAILED.value),
            now, writes,
        )
        set_run_status(conn, run, R.COMPENSATING, now)
        plan_runs(ctx, conn, {run_id: run}, writes, now)


def _restart_tasks(conn: Connection, where: Any, now: datetime, writes: Writes) -> list[dict[str, Any]]:
    """failed -> pending at the next attempt number (so with a new idempotency key: a target that
    cached the failed attempt's answer by key must not replay it), the next fencing token and a
    new message. ``max_attempts`` grows by as much, so the policy allows this attempt."""
    rows = conn.execute(
        update(tasks)
        .where(where, tasks.c.status.in_([s.value for s in task_sources(T.PENDING) if s is T.FAILED]))
        .values(
            status=T.PENDING.value,
            attempt=tasks.c.attempt + 1,
            fencing_token=tasks.c.fencing_token + 1,
            lease_expiries=0,
            error=None,
            output=None,
            next_attempt_at=None,
            finished_at=None,
            dispatched_at=now,
            updated_at=now,
        )
        .returning(*tasks.c)
    ).mappings().all()
    restarted = []
    for found in rows:
        row = dict(found)
        # A fresh budget of the policy's attempts, counted from this one.
        budget = Retry.from_json(row["retry"]).attempts if row["retry"] else 1
        row["max_attempts"] = int(row["attempt"]) - 1 + max(1, budget)
        conn.execute(update(tasks).where(tasks.c.id == row["id"]).values(max_attempts=row["max_attempts"]))
        queue_log(writes, row, "info", f"retried by an operator: attempt {row['attempt']}", now)
        queue_task_message(writes, row, now)
        restarted.append(row)
    writes.flush(conn)
    return restarted


def retry_task(ctx: StoreContext, task_id: str) -> None:
    """Retry one failed task at its next attempt number. Its run, if it had failed, runs again."""
    with ctx.engine.begin() as conn:
        _retry_task(ctx, conn, task_id)


def _retry_task(ctx: StoreContext, conn: Connection, task_id: str) -> None:
    now = ctx.now()
    row = _task(conn, task_id)
    run = _locked_run(ctx, conn, row["run_id"]) if row["run_id"] else None
    writes = Writes()
    if not _restart_tasks(conn, tasks.c.id == task_id, now, writes):
        raise IllegalTransition("task", task_id, _task(conn, task_id)["status"], T.PENDING.value)
    if run is not None:
        if R(run["status"]) is R.FAILED:
            set_run_status(conn, run, R.RUNNING, now, clear_error=True)
        plan_runs(ctx, conn, {run["id"]: run}, writes, now)


def cancel_task(ctx: StoreContext, task_id: str) -> None:
    """Cancel a task that has not finished; its run (if any) then treats the step as failed."""
    with ctx.engine.begin() as conn:
        now = ctx.now()
        row = _task(conn, task_id)
        run = _locked_run(ctx, conn, row["run_id"]) if row["run_id"] else None
        writes = Writes()
        error = {"type": "cancelled", "message": "the task was cancelled by an operator"}
        if not cancel_tasks(conn, tasks.c.id == task_id, error, now, writes):
            raise IllegalTransition("task", task_id, _task(conn, task_id)["status"], T.CANCELLED.value)
        if run is not None:
            plan_runs(ctx, conn, {run["id"]: run}, writes, now)
        writes.flush(conn)


def _task(conn: Connection, task_id: str) -> dict[str, Any]:
    row = conn.execute(select(tasks).where(tasks.c.id == task_id)).mappings().first()
    if row is None:
        raise NotFound("task", task_id)
    return dict(row)


def requeue_dead_letter(ctx: StoreContext, dead_letter_id: str) -> str:
    """Retry the dead letter's task at its next attempt (see ``retry_task``); the task id."""
    with ctx.engine.begin() as conn:
        letter = _open_dead_letter(conn, dead_letter_id, "requeued")
        conn.execute(
            update(dead_letters).where(dead_letters.c.id == dead_letter_id).values(requeued_at=ctx.now())
        )
        _retry_task(ctx, conn, str(letter["task_id"]))
        return str(letter["task_id"])


def discard_dead_letter(ctx: StoreContext, dead_letter_id: str) -> None:
    """Mark a dead letter as looked at and dropped; the task stays failed."""
    with ctx.engine.begin() as conn:
        _open_dead_letter(conn, dead_letter_id, "discarded")
        conn.execute(
            update(dead_letters).where(dead_letters.c.id == dead_letter_id).values(discarded_at=ctx.now())
        )


def _open_dead_letter(conn: Connection, dead_letter_id: str, target: str) -> dict[str, Any]:
    statement = select(dead_letters).where(dead_letters.c.id == dead_letter_id)
    if conn.dialect.name == "postgresql":
        statement = statement.with_for_update()
    row = conn.execute(statement).mappings().first()
    if row is None:
        raise NotFound("dead letter", dead_letter_id)
    if row["requeued_at"] is not None or row["discarded_at"] is not None:
        current = "requeued" if row["requeued_at"] is not None else "discarded"
        raise IllegalTransition("dead letter", dead_letter_id, current, target)
    return dict(row)
