"""The coordinator's timer pass: retries that are due, leases that expired, runs past deadline.

Each kind is its own transaction (rolled back, not committed, when it finds nothing: an idle pass
writes no WAL and counts no commit) and locks with ``SKIP LOCKED`` on PostgreSQL, so that several
coordinators share the work without waiting on each other (and without deadlocks: a timer never
waits for a lock while holding one).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from engine.core.contracts import Failure
from engine.core.planner.view import STEP
from engine.core.states import RunStatus, TaskStatus
from engine.store import internal_timers
from engine.store.context import BatchOutcome, StoreContext, runs, tasks
from engine.store.planning import plan_runs
from engine.store.results import fail_attempt
from engine.store.task_rows import cancel_tasks, cas_task, lock_runs, queue_log, queue_task_message
from engine.store.writes import Writes

T = TaskStatus


def run_timers(ctx: StoreContext, limit: int = 500) -> BatchOutcome:
    """One timer pass; at most ``limit`` items of each kind (call again while it returns work)."""
    retried = _due_retries(ctx, limit)
    # Deadlines first: a task of a run past its deadline is cancelled, not delivered again.
    timed_out = _deadlines(ctx, limit)
    expired, lease_runs = _expired_leases(ctx, limit)
    # sleep / approval / subflow steps (no worker): due wake-ups, timeouts, children that ended.
    internal, internal_runs = internal_timers.run_internal_timers(ctx, limit)
    return BatchOutcome(retried + expired + len(timed_out) + internal, 0,
                        tuple(sorted(lease_runs | timed_out | internal_runs)))


def _due_retries(ctx: StoreContext, limit: int) -> int:
    """``retrying`` tasks whose time has come: ``pending`` again, next attempt, new message."""
    with ctx.engine.begin() as conn:
        now = ctx.now()
        due = (
            select(tasks.c.id)
            .where(tasks.c.status == T.RETRYING.value, tasks.c.next_attempt_at <= now)
            .order_by(tasks.c.next_attempt_at)
            .limit(limit)
        )
        if ctx.is_postgres:
            due = due.with_for_update(skip_locked=True)
        ids = list(conn.execute(due).scalars())
        if not ids:
            conn.rollback()  # nothing due: an idle pass does not commit
            return 0
        rows = conn.execute(
            update(tasks)
            .where(tasks.c.id.in_(ids), tasks.c.status == T.RETRYING.value)
            .values(
                status=T.PENDING.value,
                attempt=tasks.c.attempt + 1,
                fencing_token=tasks.c.fencing_token + 1,
                next_attempt_at=None,
                lease_expiries=0,
                dispatched_at=now,
                updated_at=now,
            )
            .returning(*tasks.c)
        ).mappings().all()
        writes = Writes()
        for row in rows:
            queue_task_message(writes, dict(row), now)
        writes.flush(conn)
        return len(rows)


def _expired_leases(ctx: StoreContext, limit: int) -> tuple[int, set[str]]:
    """Tasks whose worker went silent: the same attempt is delivered again (same idempotency key,
    next fencing token). ``processing``: the worker stopped reporting it (heartbeats); the
    ``max_deliveries``-th expiry of an attempt is a failed attempt of class ``timeout`` (retry
    policy, then dead letter): the poison-task bound. ``pending`` with a lease: a worker reported
    that it holds the delivery but did not start it within the lease (a stalled worker, or all its
    handlers stuck); it is always delivered again, since it never ran."""
    with ctx.engine.begin() as conn:
        now = ctx.now()
        # One OR branch per status, so that each can use its partial index (0008).
        expired = (
            ((tasks.c.status == T.PROCESSING.value) & (tasks.c.lease_expires_at < now))
            | ((tasks.c.status == T.PENDING.value) & (tasks.c.lease_expires_at < now))
        )
        candidates = conn.execute(
            select(tasks.c.id, tasks.c.run_id)
            .where(expired)
            .order_by(tasks.c.lease_expires_at)
            .limit(limit)
        ).all()
        if not candidates:
            conn.rollback()
            return 0, set()
        # Runs first (skipping those another coordinator is applying results to), then tasks.
        locked = lock_runs(ctx, conn, {r for _, r in candidates if r}, skip_locked=True)
        ids = [task_id for task_id, run_id in candidates if run_id is None or run_id in locked]
        statement = select(tasks).where(tasks.c.id.in_(ids), expired).order_by(tasks.c.id)
        if ctx.is_postgres:
            statement = statement.with_for_update(skip_locked=True)
        writes = Writes()
        failed = 0
        touched: set[str] = set()
        for found in conn.execute(statement).mappings().all():
            row = dict(found)
            expiries = int(row.get("lease_expiries") or 0) + 1
            lease = ctx.lease_seconds
            unstarted = row["status"] == T.PENDING.value
            if unstarted or expiries < ctx.max_deliveries:
                # The same attempt again: same idempotency key (a target that saw the first
                # delivery answers from its cache), next fencing token (the silent worker's
                # result, if it comes, is refused).
                new = cas_task(
                    conn, row["id"], {T.PROCESSING, T.PENDING},
                    {
                        "status": T.PENDING.value,
                        "fencing_token": row["fencing_token"] + 1,
                        "lease_expires_at": None,
                        "lease_expiries": expiries,
                        "dispatched_at": now,
                        "updated_at": now,
                    },
                    row["fencing_token"],
                )
                if new is not None:
                    failed += 1
                    silence = ("held by a worker that did not start it within the lease" if unstarted
                               else "no report from its worker within the lease")
                    queue_log(
                        writes, new, "warning",
                        f"attempt {new['attempt']}: {silence} ({lease:g}s plus grace); "
                        f"delivered again with the same idempotency key (lease expiry {expiries} of "
                        f"{ctx.max_deliveries})",
                        now, data={"lease_expiries": expiries},
                    )
                    queue_task_message(writes, new, now)
                continue
            failure = Failure(
                "timeout",
                f"no report from its worker within the task's lease ({lease:g}s plus grace), {expiries} times in a "
                "row; the worker is presumed lost and its result, if it comes, will be refused",
                retryable=True,
            )
            new = fail_attempt(
                ctx, conn, row, failure, writes, now, sources=frozenset({T.PROCESSING}),
                bump_fencing=True,
            )
            if new is not None:
                failed += 1
                if new["run_id"]:
                    touched.add(new["run_id"])
        plan_runs(ctx, conn, {r: locked[r] for r in touched}, writes, now)
        writes.flush(conn)
        return failed, touched


def _deadlines(ctx: StoreContext, limit: int) -> set[str]:
    """Running runs past their deadline: cancel their in-flight steps, then let the planner fail
    them (it sees ``timed_out``) and run their saga."""
    with ctx.engine.begin() as conn:
        now = ctx.now()
        statement = (
            select(runs)
            .where(runs.c.status == RunStatus.RUNNING.value, runs.c.deadline <= now)
            .order_by(runs.c.id)
            .limit(limit)
        )
        if ctx.is_postgres:
            statement = statement.with_for_update(skip_locked=True)
        locked: dict[str, dict[str, Any]] = {
            row["id"]: dict(row) for row in conn.execute(statement).mappings()
        }
        if not locked:
            conn.rollback()
            return set()
        writes = Writes()
        error = {"type": "timeout", "message": "the run passed its deadline (the workflow's timeout)"}
        cancel_tasks(conn, tasks.c.run_id.in_(list(locked)) & (tasks.c.kind == STEP), error, now, writes)
        plan_runs(ctx, conn, locked, writes, now)
        writes.flush(conn)
        return set(locked)
