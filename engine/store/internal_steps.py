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

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from engine.core.errors import InvalidParams, NotFound
from engine.core.states import TERMINAL_RUN_STATUSES, RunStatus, TaskStatus
from engine.store.context import StoreContext, after, runs, tasks
from engine.store.run_rows import new_run_row
from engine.store.task_rows import INTERNAL_TASK_TYPES, cas_task, lock_runs, queue_log, take_finished_seq
from engine.store.writes import Writes

T = TaskStatus
SLEEP, APPROVAL, SUBFLOW = "sleep", "approval", "subflow"
assert INTERNAL_TASK_TYPES == frozenset({SLEEP, APPROVAL, SUBFLOW})
# A subflow chain deeper than this (a workflow that calls itself without end) fails the step.
MAX_SUBFLOW_DEPTH = 16
SUBFLOW_KEY_PREFIX = "subflow:"
# ``engine.store.planning.plan_runs``, handed in by the planning that dispatches the step: a
# subflow plans its child run in the same transaction, and planning sits above this module.
PlanRuns = Callable[[StoreContext, Connection, dict[str, dict[str, Any]], Writes, datetime], int]


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
    now: datetime, plan: PlanRuns,
) -> None:
    """Set up a new internal task (a dict not inserted yet, ``pending``) instead of sending a
    message: it leaves ``processing`` (waiting), or already ``completed``/``failed``."""
    row.update(setup_task(ctx, conn, run, row, writes, now, plan))


def setup_task(
    ctx: StoreContext, conn: Connection, run: dict[str, Any], row: dict[str, Any], writes: Writes,
    now: datetime, plan: PlanRuns,
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
            return failed_values(row, "invalid_input", f"sleep: `duration` must be a duration or a number "
                           f"of seconds >= 0, got {duration!r}", writes, now)
        queue_log(writes, row, "info", f"sleeping {duration:g}s", now)
        return {**waiting, "next_attempt_at": after(now, float(duration))}
    if kind == APPROVAL:
        timeout = payload.get("timeout", row.get("timeout"))
        if timeout is not None and not _is_seconds(timeout):
            return failed_values(row, "invalid_input", f"approval: `timeout` must be a duration, got {timeout!r}",
                           writes, now)
        prompt = payload.get("prompt")
        queue_log(writes, row, "info", "waiting for approval" + (f": {prompt}" if prompt else ""), now,
                  data={"prompt": prompt, "timeout": timeout})
        return {**waiting, "next_attempt_at": after(now, float(timeout)) if timeout is not None else None}
    return _start_child(ctx, conn, run, row, waiting, writes, now, plan)


def _is_seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0


def failed_values(row: dict[str, Any], kind: str, message: str, writes: Writes, now: datetime,
            **extra: Any) -> dict[str, Any]:
    error = {"type": kind, "message": message, "retryable": False, **extra}
    queue_log(writes, row, "error", f"{row['task_type']} failed: {kind}: {message}", now, data={"error": error})
    return {
        "status": T.FAILED.value, "error": error, "started_at": row.get("started_at") or now,
        "finished_at": now, "lease_expires_at": None, "next_attempt_at": None, "updated_at": now,
    }


def completed_values(ctx: StoreContext, conn: Connection, row: dict[str, Any], output: Any, now: datetime) -> dict[str, Any]:
    return {
        "status": T.COMPLETED.value, "output": output, "error": None,
        "started_at": row.get("started_at") or now, "finished_at": now,
        "finished_seq": take_finished_seq(ctx, conn, 1)[0], "lease_expires_at": None,
        "next_attempt_at": None, "updated_at": now,
    }


def _start_child(
    ctx: StoreContext, conn: Connection, run: dict[str, Any], row: dict[str, Any],
    waiting: dict[str, Any], writes: Writes, now: datetime, plan: PlanRuns,
) -> dict[str, Any]:
    writes.flush_new_runs(conn)  # the child points at its parent, which may be starting now
    payload = row.get("payload") or {}
    workflow, params = payload.get("workflow"), payload.get("params")
    if not isinstance(workflow, str) or not workflow:
        return failed_values(row, "invalid_input", f"subflow: `workflow` must be a workflow name, got {workflow!r}",
                       writes, now)
    if params is not None and not isinstance(params, dict):
        return failed_values(row, "invalid_input", f"subflow: `params` must be an object, got {params!r}", writes, now)
    if _depth(conn, run) >= MAX_SUBFLOW_DEPTH:
        return failed_values(row, "invalid_input", f"subflow: more than {MAX_SUBFLOW_DEPTH} nested runs "
                       f"(does {workflow!r} start itself without end?)", writes, now)
    key = subflow_key(row)
    child = conn.execute(select(runs).where(runs.c.idempotency_key == key)).mappings().first()
    if child is not None:
        child = dict(child)
        queue_log(writes, row, "info", f"child run {child['id']} of {child['workflow_name']} already started",
                  now, data={"child_run_id": child["id"]})
    else:
        try:
            child = new_run_row(ctx, conn, workflow, params or {}, None, key, None, run["id"])
        except (NotFound, InvalidParams) as exc:
            return failed_values(row, "invalid_input", f"subflow {workflow!r}: {exc}", writes, now)
        conn.execute(runs.insert().values(**child))
        queue_log(writes, row, "info", f"started child run {child['id']} of {workflow} v{child['version']}",
                  now, data={"child_run_id": child["id"]})
        # The child's first steps, in this transaction; a child that ends at once (every step
        # skipped) is seen below.
        plan(ctx, conn, {child["id"]: child}, Writes(), now)
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
        return completed_values(ctx, conn, row, child.get("output"), now)
    cause = child.get("error") or {}
    message = f"child run {child['id']} of {child['workflow_name']} ended {status}"
    if cause.get("message"):
        message += f": {cause.get('step') + ': ' if cause.get('step') else ''}{cause['message']}"
    return failed_values(row, str(cause.get("type") or "subflow"), message, writes, now,
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
    if finish_subflow(ctx, conn, task_id, token, child, writes, now) is None:
        return None
    return locked[parent_id]


def finish_subflow(
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


__all__ = [
    "INTERNAL_TASK_TYPES", "PlanRuns", "child_finished", "completed_values", "failed_values",
    "finish_subflow", "is_internal", "prepare", "setup_task", "subflow_key",
]
