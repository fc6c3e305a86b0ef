"""Re-plan runs: build each run's view, ask the planner, apply its actions (in the caller's
transaction, on runs the caller has locked)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, text, update

from dsl.spec import WorkflowSpec
from engine.core.planner import walk as planner
from engine.core.planner.view import (
    Action,
    Dispatch,
    MarkCompensated,
    Record,
    RunView,
    SetRunStatus,
)
from engine.core.states import TERMINAL_RUN_STATUSES, RunStatus, TaskStatus, run_sources, task_sources
from engine.observability import metrics, tracing
from engine.store import internal_steps
from engine.store.context import StoreContext, aware, iso, log, runs, select_in, tasks
from engine.store.db import after_commit
from engine.store.task_rows import (
    cas_task,
    lock_runs,
    new_task_row,
    queue_task_message,
    take_finished_seq,
    task_view,
)
from engine.store.versions import load_specs, spec_of
from engine.store.listen import LOCAL, RUN_DONE_CHANNEL
from engine.store.writes import Writes

# The planner plans until it needs a worker's result, so a second call normally returns nothing;
# this bound only stops a planner bug from looping forever inside a transaction.
MAX_PLAN_ROUNDS = 100


def plan_runs(
    ctx: StoreContext,
    conn: Connection,
    locked: dict[str, dict[str, Any]],
    writes: Writes,
    now: datetime,
    *,
    task_rows: dict[str, list[dict[str, Any]]] | None = None,
) -> int:
    """Re-plan every run of ``locked`` (rows the caller holds ``FOR UPDATE``); the actions applied.

    Buffered inserts are flushed first, so the views see every task of the transaction. Runs in
    ``writes.new_runs`` (being started: no task yet) are planned without reading their tasks.
    ``task_rows``, when given, receives each run's task rows as planned (for its run document).
    """
    if not locked:
        return 0
    if writes.tasks:  # the views read the tasks; logs and messages can wait for the last flush
        writes.flush(conn)
    load_specs(ctx, conn, [row["workflow_version_id"] for row in locked.values()])
    by_run: dict[str, list[dict[str, Any]]] = {run_id: [] for run_id in locked}
    existing = [run_id for run_id in locked if run_id not in writes.new_runs]
    for row in select_in(select(tasks), tasks.c.run_id, existing, conn) if existing else ():
        by_run[row["run_id"]].append(dict(row))
    if task_rows is not None:
        task_rows.update(by_run)
    applied = 0
    parents: dict[str, dict[str, Any]] = {}
    for run_id in sorted(locked):
        spec = spec_of(ctx, conn, locked[run_id]["workflow_version_id"])
        applied += _plan_one(ctx, conn, spec, locked[run_id], by_run[run_id], writes, now, parents)
    writes.flush(conn)
    if parents:
        # Runs whose subflow step just finished because its child run ended: plan them again, on
        # rows read afresh (we hold their locks; one may also have been planned above).
        applied += plan_runs(ctx, conn, lock_runs(ctx, conn, parents), writes, now)
    return applied


def run_view(run: dict[str, Any], task_rows: Iterable[dict[str, Any]], now: datetime) -> RunView:
    deadline = aware(run["deadline"])
    return RunView(
        id=run["id"],
        status=RunStatus(run["status"]),
        params=run["params"] or {},
        values=run["values"] or {},
        tasks=tuple(task_view(row) for row in task_rows),
        workflow_name=run["workflow_name"],
        scheduled_at=iso(run["scheduled_at"]),
        timed_out=deadline is not None and deadline <= now,
        error=run["error"],
    )


def _plan_one(
    ctx: StoreContext,
    conn: Connection,
    spec: WorkflowSpec,
    run: dict[str, Any],
    task_rows: list[dict[str, Any]],
    writes: Writes,
    now: datetime,
    parents: dict[str, dict[str, Any]],
) -> int:
    applied = 0
    for _ in range(MAX_PLAN_ROUNDS):
        actions = planner.next_actions(spec, run_view(run, task_rows, now))
        if not actions:
            return applied
        for action in actions:
            if not _apply(ctx, conn, spec, run, task_rows, action, writes, now, parents):
                # The database disagrees with the view (a concurrent change we did not lock out,
                # or a planner bug): stop here; the next result or timer pass re-plans this run.
                log.warning("run %s: could not apply %r; re-planning later", run["id"], action)
                return applied
            applied += 1
    log.error("run %s: the planner did not settle after %d rounds", run["id"], MAX_PLAN_ROUNDS)
    return applied


def _apply(
    ctx: StoreContext,
    conn: Connection,
    spec: WorkflowSpec,
    run: dict[str, Any],
    task_rows: list[dict[str, Any]],
    action: Action,
    writes: Writes,
    now: datetime,
    parents: dict[str, dict[str, Any]],
) -> bool:
    """Apply one action to the database (or the write buffer) and to the in-memory rows.

    ``parents`` collects the parent runs to re-plan (a child run that ended finishes its parent's
    subflow step)."""
    if isinstance(action, Dispatch):
        row = new_task_row(
            run_id=run["id"], kind=action.kind, step=action.step, item=action.item,
            task_type=action.task_type, payload=action.payload, status=TaskStatus.PENDING,
            now=now, retry=action.retry, max_attempts=action.retry.attempts,
            timeout=action.timeout,
        )
        if internal_steps.is_internal(row):
            # sleep, approval, subflow: the coordinator runs them (waiting, or already final).
            internal_steps.prepare(ctx, conn, run, row, writes, now, plan_runs)
        else:
            queue_task_message(writes, row, now)
        writes.tasks.append(row)
        task_rows.append(row)
        return True
    if isinstance(action, Record):
        row = new_task_row(
            run_id=run["id"], kind=action.kind, step=action.step, item=action.item,
            task_type=_task_type_of(spec, action.step), payload={}, status=action.status,
            now=now, retry=None, max_attempts=0, output=action.output, error=action.error,
        )
        if action.status == TaskStatus.COMPLETED:
            row["finished_seq"] = take_finished_seq(ctx, conn, 1)[0]
        writes.tasks.append(row)
        task_rows.append(row)
        return True
    if isinstance(action, MarkCompensated):
        target = TaskStatus.COMPENSATED
        new = cas_task(
            conn, action.task_id, task_sources(target),
            {"status": target.value, "updated_at": now},
        )
        if new is None:
            return False
        for index, row in enumerate(task_rows):
            if row["id"] == action.task_id:
                task_rows[index] = new
        return True
    if isinstance(action, SetRunStatus):
        if run["id"] in writes.new_runs or (ctx.is_postgres and not run.get("parent_run_id")):
            # The common case (no parent to tell): buffered, one statement for the batch.
            return defer_run_status(writes, run, action.status, now, action.output, action.error)
        if not set_run_status(conn, run, action.status, now, action.output, action.error):
            return False
        if action.status in TERMINAL_RUN_STATUSES and run.get("parent_run_id"):
            parent = internal_steps.child_finished(ctx, conn, run, writes, now)
            if parent is not None:
                parents[parent["id"]] = parent
        return True
    raise TypeError(f"unknown planner action {action!r}")


def _status_values(
    run: dict[str, Any], target: RunStatus, now: datetime, output: Any, error: dict[str, Any] | None,
    clear_error: bool = False,
) -> dict[str, Any]:
    values: dict[str, Any] = {"status": target.value, "updated_at": now}
    if target is RunStatus.RUNNING and run.get("started_at") is None:
        values["started_at"] = now
    if target in TERMINAL_RUN_STATUSES:
        values["finished_at"] = now
    elif run.get("finished_at") is not None:
        values["finished_at"] = None
    if output is not None:
        values["output"] = output
    if error is not None:
        values["error"] = error
    elif clear_error:
        values["error"] = None
    return values


def _run_status_done(run: dict[str, Any], target: RunStatus, values: dict[str, Any], now: datetime,
                     later: Callable[[Callable[[], None]], None]) -> None:
    run.update(values)
    if target in TERMINAL_RUN_STATUSES:
        # Counted once the transaction commits (``later``): a rolled-back one counts nothing.
        later(metrics.RUN_OUTCOMES.labels(run.get("workflow_name") or "", target.value).inc)
        tracing.emit_run(run, now)
        LOCAL.deliver(RUN_DONE_CHANNEL, run["id"])  # the embedded default's waiters (PostgreSQL: NOTIFY)


def defer_run_status(
    writes: Writes,
    run: dict[str, Any],
    target: RunStatus,
    now: datetime,
    output: Any = None,
    error: dict[str, Any] | None = None,
) -> bool:
    """``set_run_status`` for a run the transaction holds ``FOR UPDATE``, buffered in ``writes``
    and applied with the other runs of the batch in one statement at the flush
    (``flush_run_updates``). The compare-and-set is checked here, on the locked row, and again by
    the statement, which raises (rolling the transaction back) if the database disagrees."""
    if RunStatus(run["status"]) not in run_sources(target):
        return False
    values = _status_values(run, target, now, output, error)
    if run["id"] in writes.new_runs:  # not inserted yet: the row goes in as planned
        _run_status_done(run, target, values, now, writes.after_commit.append)
        return True
    pending = writes.run_updates.get(run["id"])
    if pending is None:
        writes.run_updates[run["id"]] = {"expected": run["status"], "values": values}
    else:  # a second change of the same run in this transaction: the row changes once
        pending["values"].update(values)
    _run_status_done(run, target, values, now, writes.after_commit.append)
    return True


def set_run_status(
    conn: Connection,
    run: dict[str, Any],
    target: RunStatus,
    now: datetime,
    output: Any = None,
    error: dict[str, Any] | None = None,
    *,
    clear_error: bool = False,
) -> bool:
    """Compare-and-set a run's status (from the statuses ``RUN_TRANSITIONS`` allows); updates
    ``run`` in place. False when the run's status did not allow it."""
    values = _status_values(run, target, now, output, error, clear_error)
    result = conn.execute(
        update(runs)
        .where(runs.c.id == run["id"], runs.c.status.in_([s.value for s in run_sources(target)]))
        .values(**values)
    )
    if result.rowcount != 1:
        return False
    if target in TERMINAL_RUN_STATUSES and conn.dialect.name == "postgresql":
        # For ``GET /api/runs/ID?wait=`` (delivered at commit), like ``flush_run_updates``.
        conn.execute(text("SELECT pg_notify(:channel, :id)"), {"channel": RUN_DONE_CHANNEL, "id": run["id"]})
    _run_status_done(run, target, values, now, lambda callback: after_commit(conn, callback))
    return True


def _task_type_of(spec: WorkflowSpec, step_name: str) -> str:
    try:
        step = spec.step(step_name)
    except KeyError:
        return "none"
    return step.task_type or step.type

