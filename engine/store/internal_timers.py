"""What moves the coordinator's own steps on besides planning: an operator's answer to an
``approval`` step, and the timer pass over internal tasks (pending ones to set up after a retry,
sleeps and approval timeouts that are due, subflows whose child run ended meanwhile).

The steps themselves (how each is set up, completed or failed) are ``engine.store.internal_steps``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from engine.core.errors import IllegalTransition, NotFound
from engine.core.states import TERMINAL_RUN_STATUSES, TaskStatus
from engine.store.context import StoreContext, runs, tasks
from engine.store.internal_steps import (
    APPROVAL,
    INTERNAL_TASK_TYPES,
    SLEEP,
    SUBFLOW,
    completed_values,
    failed_values,
    finish_subflow,
    setup_task,
    subflow_key,
)
from engine.store.planning import plan_runs
from engine.store.task_rows import cas_task, lock_runs, queue_log
from engine.store.versions import spec_of
from engine.store.writes import Writes

T = TaskStatus


# --- approvals ----------------------------------------------------------------------------------


def approve_step(
    ctx: StoreContext,
    run_id: str,
    step: str,
    approved: bool,
    by: str,
    comment: str | None = None,
    item: int | None = None,
) -> list[str]:
    """Answer a waiting ``approval`` step (each waiting item of a fan-out, or ``item``); the task
    ids answered. A rejection completes the step too, with ``approved: false``.

    Raises:
        NotFound: no such run, or the run has no approval step of that name.
        IllegalTransition: the step is not waiting (not reached yet, or already answered).
    """
    with ctx.engine.begin() as conn:
        now = ctx.now()
        found = lock_runs(ctx, conn, [run_id])
        if run_id not in found:
            raise NotFound("run", run_id)
        run = found[run_id]
        spec = spec_of(ctx, conn, run["workflow_version_id"])
        step_spec = next((s for s in (*spec.steps, *spec.on_failure) if s.name == step), None)
        if step_spec is None or step_spec.type != APPROVAL:
            raise NotFound("approval step", f"{run_id}/{step}",
                           f"the workflow {run['workflow_name']!r} has no approval step {step!r}")
        statement = select(tasks).where(
            tasks.c.run_id == run_id, tasks.c.step == step, tasks.c.task_type == APPROVAL,
        ).order_by(tasks.c.item, tasks.c.id)
        if ctx.is_postgres:
            statement = statement.with_for_update()
        rows = [dict(r) for r in conn.execute(statement).mappings()
                if item is None or r["item"] == item]
        waiting = [r for r in rows if r["status"] == T.PROCESSING.value]
        if not waiting:
            current = rows[0]["status"] if rows else "not started"
            raise IllegalTransition("approval step", f"{run_id}/{step}", current, T.COMPLETED.value)
        output = {"approved": bool(approved), "by": by, "comment": comment}
        writes = Writes()
        answered: list[str] = []
        for row in waiting:
            new = cas_task(conn, row["id"], {T.PROCESSING}, completed_values(ctx, conn, row, output, now),
                           row["fencing_token"])
            if new is not None:
                answered.append(new["id"])
                queue_log(writes, new, "info", f"{'approved' if approved else 'rejected'} by {by}"
                          + (f": {comment}" if comment else ""), now, data={"approval": output})
        plan_runs(ctx, conn, {run_id: run}, writes, now)
        writes.flush(conn)
        return answered


# --- the timer pass -----------------------------------------------------------------------------


def run_internal_timers(ctx: StoreContext, limit: int) -> tuple[int, set[str]]:
    """Internal tasks of the timer pass, each kind its own transaction: pending ones to set up
    (after an operator's retry), sleeps and approval timeouts that are due, subflows whose child
    ended without finishing them. The number handled and the runs re-planned."""
    total, touched = 0, set()
    for kind in (_start_pending, _due, _children_done):
        count, runs_of = kind(ctx, limit)
        total += count
        touched |= runs_of
    return total, touched


def _lock_candidates(
    ctx: StoreContext, conn: Connection, where: Any, limit: int
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Runs (``SKIP LOCKED``) then their tasks matching ``where``: the rows still matching."""
    candidates = conn.execute(
        select(tasks.c.id, tasks.c.run_id).where(where).order_by(tasks.c.updated_at).limit(limit)
    ).all()
    if not candidates:
        return {}, []
    locked = lock_runs(ctx, conn, {r for _, r in candidates if r}, skip_locked=True)
    ids = [task_id for task_id, run_id in candidates if run_id in locked]
    if not ids:
        return locked, []
    statement = select(tasks).where(tasks.c.id.in_(ids), where).order_by(tasks.c.id)
    if ctx.is_postgres:
        statement = statement.with_for_update(skip_locked=True)
    return locked, [dict(r) for r in conn.execute(statement).mappings()]


def _replan(ctx: StoreContext, conn: Connection, locked: dict[str, dict[str, Any]], touched: set[str],
            writes: Writes, now: datetime) -> None:
    plan_runs(ctx, conn, {r: locked[r] for r in touched if r in locked}, writes, now)
    writes.flush(conn)


def _start_pending(ctx: StoreContext, limit: int) -> tuple[int, set[str]]:
    where = (tasks.c.status == T.PENDING.value) & tasks.c.task_type.in_(sorted(INTERNAL_TASK_TYPES)) \
        & tasks.c.run_id.is_not(None)
    with ctx.engine.begin() as conn:
        now = ctx.now()
        locked, rows = _lock_candidates(ctx, conn, where, limit)
        if not rows:
            conn.rollback()  # nothing to do: an idle timer pass does not commit
            return 0, set()
        writes = Writes()
        touched: set[str] = set()
        for row in rows:
            values = setup_task(ctx, conn, locked[row["run_id"]], row, writes, now, plan_runs)
            if cas_task(conn, row["id"], {T.PENDING}, values, row["fencing_token"]) is not None:
                touched.add(row["run_id"])
        _replan(ctx, conn, locked, touched, writes, now)
        return len(touched), touched


def _due(ctx: StoreContext, limit: int) -> tuple[int, set[str]]:
    with ctx.engine.begin() as conn:
        now = ctx.now()
        where = (tasks.c.status == T.PROCESSING.value) & tasks.c.task_type.in_([SLEEP, APPROVAL]) \
            & (tasks.c.next_attempt_at <= now)
        locked, rows = _lock_candidates(ctx, conn, where, limit)
        if not rows:
            conn.rollback()  # nothing to do: an idle timer pass does not commit
            return 0, set()
        writes = Writes()
        touched: set[str] = set()
        for row in rows:
            if row["task_type"] == SLEEP:
                values = completed_values(ctx, conn, row, None, now)
                queue_log(writes, row, "info", "slept", now)
            else:
                timeout = (row.get("payload") or {}).get("timeout", row.get("timeout"))
                values = failed_values(row, "timeout", f"no answer within the approval's timeout ({timeout:g}s)",
                                 writes, now)
            if cas_task(conn, row["id"], {T.PROCESSING}, values, row["fencing_token"]) is not None:
                touched.add(row["run_id"])
        _replan(ctx, conn, locked, touched, writes, now)
        return len(touched), touched


def _children_done(ctx: StoreContext, limit: int) -> tuple[int, set[str]]:
    """Subflow tasks still waiting although their child run ended: the child ended through a
    command (``cancel_run``), or its parent was locked by another transaction at that moment."""
    child = runs.alias("child")
    with ctx.engine.begin() as conn:
        now = ctx.now()
        found = conn.execute(
            select(tasks.c.id.label("task_id"), tasks.c.fencing_token, child.c.id.label("child_id"),
                   child.c.idempotency_key)
            .join(child, child.c.parent_run_id == tasks.c.run_id)
            .where(tasks.c.status == T.PROCESSING.value, tasks.c.task_type == SUBFLOW,
                   child.c.status.in_([s.value for s in TERMINAL_RUN_STATUSES]))
            .limit(limit)
        ).all()
        child_of = {
            r.task_id: r.child_id for r in found
            if r.idempotency_key == subflow_key({"id": r.task_id, "fencing_token": r.fencing_token})
        }
        if not child_of:
            conn.rollback()
            return 0, set()
        locked, rows = _lock_candidates(
            ctx, conn, tasks.c.id.in_(list(child_of)) & (tasks.c.status == T.PROCESSING.value), limit,
        )
        writes = Writes()
        touched: set[str] = set()
        for row in rows:
            ended = dict(conn.execute(select(runs).where(runs.c.id == child_of[row["id"]])).mappings().one())
            if finish_subflow(ctx, conn, row["id"], int(row["fencing_token"]), ended, writes, now):
                touched.add(row["run_id"])
        _replan(ctx, conn, locked, touched, writes, now)
        return len(touched), touched
