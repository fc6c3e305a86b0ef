"""What operators and clients ask for: start a run or a task, cancel, retry, compensate, requeue.

Each command is one transaction. A command whose entity's current status does not allow it raises
``IllegalTransition`` (HTTP 409); the run is locked first, then its tasks, like everywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, select, text, update
from sqlalchemy.exc import IntegrityError

from dsl import evaluator
from dsl.spec import Retry, WorkflowSpec
from engine.errors import Conflict, IllegalTransition, InvalidParams, NotFound
from engine.params import check_params
from engine.planner_types import COMPENSATION, STANDALONE, STEP
from engine.states import RunStatus, TaskStatus, run_sources, task_sources
from engine.store_common import (
    StoreContext,
    Writes,
    after,
    cancel_tasks,
    dead_letters,
    lock_runs,
    new_id,
    new_task_row,
    queue_log,
    queue_task_message,
    runs,
    task_logs,
    tasks,
    to_datetime,
)
from engine.store_deploy import find_version, spec_of
from engine.store_outbox import notify_outbox
from engine.store_plan import plan_runs, set_run_status

R = RunStatus
T = TaskStatus


@dataclass
class StartOutcome:
    """One entry of a start: the run's id and whether this call created it (False: its
    idempotency key had started it before), or the error that refused it."""

    run_id: str | None = None
    created: bool = False
    error: Exception | None = None
    document: dict[str, Any] | None = None


def start_run(
    ctx: StoreContext,
    workflow: str,
    params: dict[str, Any] | None,
    *,
    version: int | None = None,
    idempotency_key: str | None = None,
    scheduled_at: datetime | float | str | None = None,
    parent_run_id: str | None = None,
) -> str:
    """Create a run, evaluate its lets, plan its first steps; the run id."""
    outcome = start_many(ctx, workflow, [(params, idempotency_key)], version=version,
                         scheduled_at=to_datetime(scheduled_at), parent_run_id=parent_run_id)[0]
    if outcome.error is not None:
        raise outcome.error
    assert outcome.run_id is not None
    return outcome.run_id


def start_many(
    ctx: StoreContext,
    workflow: str,
    entries: Sequence[tuple[dict[str, Any] | None, str | None]],
    *,
    version: int | None = None,
    scheduled_at: datetime | None = None,
    parent_run_id: str | None = None,
    all_or_nothing: bool = False,
    documents: bool = False,
) -> list[StartOutcome]:
    """Start one run per ``(params, idempotency_key)`` entry, in one transaction; one outcome each,
    in order.

    An entry whose params do not fit (``InvalidParams``) or whose key started a run of another
    workflow (``Conflict``) gets that error and starts nothing; the others start (with
    ``all_or_nothing`` the first error is raised instead and nothing starts). A key that started a
    run before gives that run back (``created`` False); a key repeated within the entries gives
    the run of its first entry. Every new run and its first messages commit together.
    ``documents``: also the run documents (``get_run``'s JSON), read in the same transaction.

    Raises:
        NotFound: no such workflow (version): no entry can start.
    """
    if not entries:
        return []
    for attempt in range(3):
        try:
            with ctx.engine.begin() as conn:
                return _start_many(ctx, conn, workflow, entries, version, scheduled_at, parent_run_id,
                                   all_or_nothing, documents)
        except IntegrityError:
            # A concurrent start with one of the keys committed first: the next attempt finds its
            # run (the keys' unique index is the only constraint a start can break).
            if attempt == 2 or not any(key for _, key in entries):
                raise
    raise AssertionError("unreachable")


def _start_many(
    ctx: StoreContext,
    conn: Connection,
    workflow: str,
    entries: Sequence[tuple[dict[str, Any] | None, str | None]],
    version: int | None,
    scheduled_at: datetime | None,
    parent_run_id: str | None,
    all_or_nothing: bool,
    documents: bool,
) -> list[StartOutcome]:
    keys = sorted({key for _, key in entries if key})
    found, existing = _version_and_keys(conn, workflow, version, keys)
    outcomes: list[StartOutcome] = []
    fresh: dict[str, dict[str, Any]] = {}
    by_key: dict[str, StartOutcome] = {}
    spec = spec_of(ctx, conn, found["id"]) if found is not None else None
    now = ctx.now()
    for params, key in entries:
        if key and key in by_key:  # the same key twice in one call: one run
            first = by_key[key]
            outcomes.append(first if first.error else StartOutcome(first.run_id, False))
            continue
        if key and key in existing:
            run_id, run_workflow = existing[key]
            outcome = StartOutcome(run_id, False) if run_workflow == workflow else StartOutcome(error=Conflict(
                f"idempotency key {key!r} already started run {run_id} of workflow {run_workflow!r}, "
                f"not {workflow!r}; use a new key for a different request"))
        elif found is None or spec is None:
            label = workflow if version is None else f"{workflow} v{version}"
            raise NotFound("workflow", label, "deploy it first (flow deploy FILE)")
        else:
            try:
                row = _run_row(spec, found, params, key, scheduled_at, parent_run_id, now)
            except InvalidParams as exc:
                outcome = StartOutcome(error=exc)
            else:
                fresh[row["id"]] = row
                outcome = StartOutcome(row["id"], True)
        if outcome.error is not None and all_or_nothing:
            raise outcome.error
        if key:
            by_key[key] = outcome
        outcomes.append(outcome)
    if fresh:
        conn.execute(runs.insert(), list(fresh.values()))
        plan_runs(ctx, conn, fresh, Writes(), now)
        notify_outbox(ctx, conn)  # a coordinator relays the first steps now, not at its next poll
    if documents:
        from engine.store_queries import run_documents

        docs = run_documents(ctx, conn, [o.run_id for o in outcomes if o.run_id])
        for outcome in outcomes:
            if outcome.run_id:
                outcome.document = docs[outcome.run_id]
    return outcomes


def _version_and_keys(
    conn: Connection, workflow: str, version: int | None, keys: Sequence[str]
) -> tuple[dict[str, Any] | None, dict[str, tuple[str, str]]]:
    """The version row (id, version; the newest unless ``version``) or None, and the runs that
    ``keys`` started before (key -> (run id, workflow)), in one round trip."""
    pinned = "AND version = :version " if version is not None else ""
    sql = ("SELECT 'v' AS kind, id, version, name FROM (SELECT id, version, name FROM workflow_versions "
           f"WHERE name = :name {pinned}ORDER BY version DESC LIMIT 1) AS v")
    params: dict[str, Any] = {"name": workflow}
    if version is not None:
        params["version"] = version
    statement = text(sql)
    if keys:
        statement = text(sql + " UNION ALL SELECT 'k', id, NULL, workflow_name || '|' || idempotency_key "
                         "FROM runs WHERE idempotency_key IN :keys").bindparams(bindparam("keys", expanding=True))
        params["keys"] = list(keys)
    found: dict[str, Any] | None = None
    existing: dict[str, tuple[str, str]] = {}
    for kind, ident, number, name in conn.execute(statement, params):
        if kind == "v":
            found = {"id": ident, "version": number, "name": name}
        else:
            run_workflow, _, key = str(name).partition("|")
            existing[key] = (str(ident), run_workflow)
    return found, existing


def _run_row(
    spec: WorkflowSpec,
    found: dict[str, Any],
    params: dict[str, Any] | None,
    idempotency_key: str | None,
    scheduled_at: datetime | None,
    parent_run_id: str | None,
    now: datetime,
) -> dict[str, Any]:
    checked = check_params(spec.params, params, spec.name)
    run_id = new_id()
    return {
        "id": run_id,
        "workflow_version_id": found["id"],
        "workflow_name": spec.name,
        "version": found["version"],
        # The planner's first action moves it to running (with started_at).
        "status": R.PENDING.value,
        "params": checked,
        "values": _evaluate_lets(spec, checked, run_id, scheduled_at),
        "output": None,
        "error": None,
        "idempotency_key": idempotency_key,
        "parent_run_id": parent_run_id,
        "scheduled_at": scheduled_at,
        "deadline": after(now, spec.timeout) if spec.timeout else None,
        "created_at": now,
        "started_at": None,
        "finished_at": None,
        "updated_at": now,
    }


def _new_run(
    ctx: StoreContext,
    conn: Connection,
    workflow: str,
    params: dict[str, Any] | None,
    version: int | None,
    idempotency_key: str | None,
    scheduled_at: datetime | None,
    parent_run_id: str | None,
) -> dict[str, Any]:
    """A new run's row (not inserted), for a subflow's child run."""
    found = find_version(conn, workflow, version)
    spec = spec_of(ctx, conn, found["id"])
    return _run_row(spec, found, params, idempotency_key, scheduled_at, parent_run_id, ctx.now())


def _evaluate_lets(
    spec: WorkflowSpec, params: dict[str, Any], run_id: str, scheduled_at: datetime | None
) -> dict[str, Any]:
    """The ``let`` values, once per run: each sees params, ``workflow`` and the lets before it.
    Secrets stay deferred (resolved only on the worker), so none is stored in clear."""
    env: dict[str, Any] = {
        "params": params,
        "workflow": {
            "name": spec.name,
            "run_id": run_id,
            "scheduled_at": scheduled_at.isoformat() if scheduled_at else None,
        },
    }
    values: dict[str, Any] = {}
    problems: list[str] = []
    for let in spec.lets:
        try:
            values[let.name] = evaluator.evaluate(let.expr, env, defer=("secrets",))
        except evaluator.EvaluationError as exc:
            problems.append(f"let {let.name}: {exc}")
            values[let.name] = None
        env[let.name] = values[let.name]
    if problems:
        raise InvalidParams(problems, spec.name)
    return values


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


# A subflow chain deeper than this is refused when it starts (store_internal), so this bounds too.
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
