"""Steps the coordinator runs itself, without a worker or a message: ``sleep``, ``approval`` and
``subflow`` (their spec ``task_type`` is null; the planner dispatches them with the step type).

A waiting internal task is ``processing`` with no lease (``lease_expires_at`` null, so the lease
timer never touches it); ``next_attempt_at`` is its own wake-up time, or null:

- ``sleep``: wakes at ``now + duration``; the timer completes it with output null.
- ``approval``: waits for ``approve_step`` (API or CLI), which completes it with
  ``{approved, by, comment}``; a rejection completes it too (``approved: false``). Its ``timeout``
  (config, else the step's ``timeout`` clause) fails it with class ``timeout`` via the timer.
- ``subflow``: the dispatch starts a child run of the named workflow (latest version, the
  evaluated params, ``parent_run_id`` set, idempotency key ``subflow_key``) in the same
  transaction. When the child reaches a terminal status, ``child_finished`` (called where the
  store applies the child's ``SetRunStatus``) completes the task with the child's output, or fails
  it naming the child run, and the parent is re-planned in that transaction. If the parent run is
  locked by another transaction at that moment, the timer's sweep (``_children_done``) does it.

Internal tasks are not retried by their retry policy: a failure (bad config, approval timeout,
failed child) is final, as a non-retryable error. An operator's retry moves the task back to
``pending`` (it has no message: ``queue_task_message`` skips internal types) and the timer's
``_start_pending`` sets it up again: a sleep sleeps again, an approval waits again, a subflow
starts a new child (the fencing token is part of the key).

Every change is a compare-and-set on status and fencing token; runs are locked before their tasks
(timers with ``SKIP LOCKED``), like everywhere else in the store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from engine.errors import IllegalTransition, InvalidParams, NotFound
from engine.states import TERMINAL_RUN_STATUSES, RunStatus, TaskStatus
from engine.store_common import (
    INTERNAL_TASK_TYPES,
    StoreContext,
    Writes,
    after,
    cas_task,
    lock_runs,
    queue_log,
    runs,
    take_finished_seq,
    tasks,
)

T = TaskStatus
SLEEP, APPROVAL, SUBFLOW = "sleep", "approval", "subflow"
assert INTERNAL_TASK_TYPES == frozenset({SLEEP, APPROVAL, SUBFLOW})
# A subflow chain deeper than this (a workflow that calls itself without end) fails the step.
MAX_SUBFLOW_DEPTH = 16
SUBFLOW_KEY_PREFIX = "subflow:"


def is_internal(row: dict[str, Any]) -> bool:
    return row.get("run_id") is not None and row.get("task_type") in INTERNAL_TASK_TYPES


def subflow_key(row: dict[str, Any]) -> str:
    """The child run's idempotency key: one child per task and fencing token (a replay of the same
    dispatch finds the same child; an operator's retry, with the next token, starts a new one)."""
    token = int(row["fencing_token"])
    return f"{SUBFLOW_KEY_PREFIX}{row['id']}" + (f":{token}" if token != 1 else "")


def _parse_subflow_key(key: str | None) -> tuple[str, int] | None:
    if not key or not key.startswith(SUBFLOW_KEY_PREFIX):
        return None
    task_id, _, token = key[len(SUBFLOW_KEY_PREFIX):].partition(":")
    return task_id, int(token) if token else 1


# --- setting up a dispatched internal task ----------------------------------------------------------


def prepare(
    ctx: StoreContext, conn: Connection, run: dict[str, Any], row: dict[str, Any], writes: Writes,
    now: datetime,
) -> None:
    """Set up a new internal task (a dict not inserted yet, ``pending``) instead of sending a
    message: it leaves ``processing`` (waiting), or already ``completed``/``failed``."""
    row.update(_setup(ctx, conn, run, row, writes, now))


def _setup(
    ctx: StoreContext, conn: Connection, run: dict[str, Any], row: dict[str, Any], writes: Writes,
    now: datetime,
) -> dict[str, Any]:
    """The values that start ``row`` (pending): waiting in ``processing``, or final."""
    payload = row.get("payload") or {}
    waiting = {
        "status": T.PROCESSING.value, "started_at": now, "lease_expires_at": None,
        "next_attempt_at": None, "updated_at": now,
    }
    kind = row["task_type"]
    if kind == SLEEP:
        duration = payload.get("duration")
        if not _is_seconds(duration):
            return _failed(row, "invalid_input", f"sleep: `duration` must be a duration or a number "
                           f"of seconds >= 0, got {duration!r}", writes, now)
        queue_log(writes, row, "info", f"sleeping {duration:g}s", now)
        return {**waiting, "next_attempt_at": after(now, float(duration))}
    if kind == APPROVAL:
        timeout = payload.get("timeout", row.get("timeout"))
        if timeout is not None and not _is_seconds(timeout):
            return _failed(row, "invalid_input", f"approval: `timeout` must be a duration, got {timeout!r}",
                           writes, now)
        prompt = payload.get("prompt")
        queue_log(writes, row, "info", "waiting for approval" + (f": {prompt}" if prompt else ""), now,
                  data={"prompt": prompt, "timeout": timeout})
        return {**waiting, "next_attempt_at": after(now, float(timeout)) if timeout is not None else None}
    return _start_child(ctx, conn, run, row, waiting, writes, now)


def _is_seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def _failed(row: dict[str, Any], kind: str, message: str, writes: Writes, now: datetime,
            **extra: Any) -> dict[str, Any]:
    error = {"type": kind, "message": message, "retryable": False, **extra}
    queue_log(writes, row, "error", f"{row['task_type']} failed: {kind}: {message}", now, data={"error": error})
    return {
        "status": T.FAILED.value, "error": error, "started_at": row.get("started_at") or now,
        "finished_at": now, "lease_expires_at": None, "next_attempt_at": None, "updated_at": now,
    }


def _completed(ctx: StoreContext, conn: Connection, row: dict[str, Any], output: Any, now: datetime) -> dict[str, Any]:
    return {
        "status": T.COMPLETED.value, "output": output, "error": None,
        "started_at": row.get("started_at") or now, "finished_at": now,
        "finished_seq": take_finished_seq(ctx, conn, 1)[0], "lease_expires_at": None,
        "next_attempt_at": None, "updated_at": now,
    }


def _start_child(
    ctx: StoreContext, conn: Connection, run: dict[str, Any], row: dict[str, Any],
    waiting: dict[str, Any], writes: Writes, now: datetime,
) -> dict[str, Any]:
    # Imported here: store_commands and store_plan import this module's callers.
    from engine.store_commands import _new_run
    from engine.store_plan import plan_runs

    payload = row.get("payload") or {}
    workflow, params = payload.get("workflow"), payload.get("params")
    if not isinstance(workflow, str) or not workflow:
        return _failed(row, "invalid_input", f"subflow: `workflow` must be a workflow name, got {workflow!r}",
                       writes, now)
    if params is not None and not isinstance(params, dict):
        return _failed(row, "invalid_input", f"subflow: `params` must be an object, got {params!r}", writes, now)
    if _depth(conn, run) >= MAX_SUBFLOW_DEPTH:
        return _failed(row, "invalid_input", f"subflow: more than {MAX_SUBFLOW_DEPTH} nested runs "
                       f"(does {workflow!r} start itself without end?)", writes, now)
    key = subflow_key(row)
    child = conn.execute(select(runs).where(runs.c.idempotency_key == key)).mappings().first()
    if child is not None:
        child = dict(child)
        queue_log(writes, row, "info", f"child run {child['id']} of {child['workflow_name']} already started",
                  now, data={"child_run_id": child["id"]})
    else:
        try:
            child = _new_run(ctx, conn, workflow, params or {}, None, key, None, run["id"])
        except (NotFound, InvalidParams) as exc:
            return _failed(row, "invalid_input", f"subflow {workflow!r}: {exc}", writes, now)
        conn.execute(runs.insert().values(**child))
        queue_log(writes, row, "info", f"started child run {child['id']} of {workflow} v{child['version']}",
                  now, data={"child_run_id": child["id"]})
        # The child's first steps, in this transaction; a child that ends at once (every step
        # skipped) is seen below.
        plan_runs(ctx, conn, {child["id"]: child}, Writes(), now)
    if RunStatus(child["status"]) in TERMINAL_RUN_STATUSES:
        return _child_outcome(ctx, conn, {**row, **waiting}, child, writes, now)
    return waiting


def _depth(conn: Connection, run: dict[str, Any]) -> int:
    depth, parent = 0, run.get("parent_run_id")
    while parent is not None and depth <= MAX_SUBFLOW_DEPTH:
        depth += 1
        parent = conn.execute(select(runs.c.parent_run_id).where(runs.c.id == parent)).scalar()
    return depth


def _child_outcome(
    ctx: StoreContext, conn: Connection, row: dict[str, Any], child: dict[str, Any], writes: Writes,
    now: datetime,
) -> dict[str, Any]:
    """The subflow task's final values for a child run that ended."""
    status = child["status"]
    if status == RunStatus.COMPLETED.value:
        queue_log(writes, row, "info", f"child run {child['id']} completed", now,
                  data={"child_run_id": child["id"]})
        return _completed(ctx, conn, row, child.get("output"), now)
    cause = child.get("error") or {}
    message = f"child run {child['id']} of {child['workflow_name']} ended {status}"
    if cause.get("message"):
        message += f": {cause.get('step') + ': ' if cause.get('step') else ''}{cause['message']}"
    return _failed(row, str(cause.get("type") or "subflow"), message, writes, now,
                   child_run_id=child["id"], child_status=status)


# --- a child run ended --------------------------------------------------------------------------


def child_finished(
    ctx: StoreContext, conn: Connection, child: dict[str, Any], writes: Writes, now: datetime
) -> dict[str, Any] | None:
    """Called when ``child`` (locked by the caller) has just reached a terminal status: finish its
    parent's subflow task. The parent run row (locked) when the caller must re-plan it, else None.

    The parent is locked with ``SKIP LOCKED``: we already hold the child, so waiting could
    deadlock; a parent held elsewhere is finished by the timer's sweep instead.
    """
    parsed = _parse_subflow_key(child.get("idempotency_key"))
    parent_id = child.get("parent_run_id")
    if parsed is None or parent_id is None:
        return None
    task_id, token = parsed
    locked = lock_runs(ctx, conn, [parent_id], skip_locked=True)
    if parent_id not in locked:
        return None
    if _finish_subflow(ctx, conn, task_id, token, child, writes, now) is None:
        return None
    return locked[parent_id]


def _finish_subflow(
    ctx: StoreContext, conn: Connection, task_id: str, token: int, child: dict[str, Any],
    writes: Writes, now: datetime,
) -> dict[str, Any] | None:
    statement = select(tasks).where(
        tasks.c.id == task_id, tasks.c.status == T.PROCESSING.value, tasks.c.task_type == SUBFLOW,
        tasks.c.fencing_token == token,
    )
    row = conn.execute(statement).mappings().first()
    if row is None:  # cancelled, or already finished (a replay): nothing to do
        return None
    row = dict(row)
    return cas_task(conn, task_id, {T.PROCESSING}, _child_outcome(ctx, conn, row, child, writes, now), token)


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
    from engine.store_deploy import spec_of
    from engine.store_plan import plan_runs

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
            new = cas_task(conn, row["id"], {T.PROCESSING}, _completed(ctx, conn, row, output, now),
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
    from engine.store_plan import plan_runs

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
            values = _setup(ctx, conn, locked[row["run_id"]], row, writes, now)
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
                values = _completed(ctx, conn, row, None, now)
                queue_log(writes, row, "info", "slept", now)
            else:
                timeout = (row.get("payload") or {}).get("timeout", row.get("timeout"))
                values = _failed(row, "timeout", f"no answer within the approval's timeout ({timeout:g}s)",
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
            if _finish_subflow(ctx, conn, row["id"], int(row["fencing_token"]), ended, writes, now):
                touched.add(row["run_id"])
        _replan(ctx, conn, locked, touched, writes, now)
        return len(touched), touched


def token_name(ctx: StoreContext, token: str) -> str | None:
    """The name of an active API token (for ``by`` of an approval), else None."""
    from engine.store_auth import api_tokens, hash_token

    with ctx.engine.connect() as conn:
        row = conn.execute(
            select(api_tokens.c.name, api_tokens.c.revoked_at).where(api_tokens.c.token_hash == hash_token(token))
        ).first()
    return str(row.name) if row is not None and row.revoked_at is None else None


__all__ = [
    "INTERNAL_TASK_TYPES", "approve_step", "child_finished", "is_internal", "prepare",
    "run_internal_timers", "subflow_key", "token_name",
]
