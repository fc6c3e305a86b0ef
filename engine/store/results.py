"""Apply workers' results: one transaction per batch, compare-and-set per result, then re-plan.

A result is applied only if the task is still in a status that expects it and carries the fencing
token of the attempt; anything else (a duplicate delivery, a worker whose lease expired, a task an
operator cancelled) is logged and dropped. That makes the coordinator's at-least-once delivery of
results give exactly-once transitions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, or_, select, text, update

from engine.core import contracts
from engine.core import retry as retry_policy
from engine.core.contracts import Failure, ResultMessage
from engine.core.states import TaskStatus, can_task
from engine.observability import metrics, tracing
from engine.store.context import (
    CHUNK,
    LEASE_GRACE_SECONDS,
    BatchOutcome,
    StoreContext,
    after,
    log,
    runs,
    select_in,
    tasks,
    to_datetime,
)
from engine.store.db import after_commit
from engine.store.models import FINISHED_SEQ_NAME
from engine.store.planning import plan_runs
from engine.store.task_rows import (
    cas_task,
    lock_runs,
    queue_dead_letter,
    queue_log,
    retry_of,
    take_finished_seq,
)
from engine.store.writes import Writes

T = TaskStatus
# A result is expected while the task is pending or processing. ``pending`` is there because a
# ``completed``/``failed`` may overtake its ``started`` (two coordinators, or a batch that holds
# both): the store then applies pending -> processing -> final in one write, each step of which
# the transition table allows.
RESULT_SOURCES = frozenset({T.PENDING, T.PROCESSING})
assert all(can_task(T.PROCESSING, s) for s in (T.COMPLETED, T.FAILED, T.RETRYING))
assert can_task(T.PENDING, T.PROCESSING)


def apply_results(ctx: StoreContext, results: Sequence[ResultMessage]) -> BatchOutcome:
    """Apply a batch of results and re-plan the runs they touched, in one transaction."""
    if not results:
        return BatchOutcome()
    # Task rows are locked in id order (a stable sort keeps each task's own results in order), so
    # that two coordinators applying overlapping batches cannot deadlock on them.
    ordered = sorted(results, key=lambda r: r.task_id)
    task_ids = list(dict.fromkeys(r.task_id for r in ordered))
    with ctx.engine.begin() as conn:
        now = ctx.now()
        writes = Writes()
        # A task's run never changes, so this read needs no lock; the runs are locked before the
        # tasks are read again, so that what we read is what no other coordinator is changing.
        if ctx.is_postgres and len(task_ids) <= CHUNK:
            # One round trip: the runs of the tasks, locked in id order.
            statement = (
                select(runs)
                .where(runs.c.id.in_(select(tasks.c.run_id).where(tasks.c.id.in_(task_ids))))
                .order_by(runs.c.id)
                .with_for_update()
            )
            locked = {row["id"]: dict(row) for row in conn.execute(statement).mappings()}
        else:
            run_of = {
                row["id"]: row["run_id"]
                for row in select_in(select(tasks.c.id, tasks.c.run_id), tasks.c.id, task_ids, conn)
            }
            locked = lock_runs(ctx, conn, {r for r in run_of.values() if r})
        rows = {
            row["id"]: dict(row) for row in select_in(select(tasks), tasks.c.id, task_ids, conn)
        }
        bulk = _complete_in_bulk(ctx, conn, ordered, rows, locked, now)
        rest = [i for i, r in enumerate(ordered) if r.status == "completed" and i not in bulk]
        seqs = iter(take_finished_seq(ctx, conn, len(rest)))
        seq_of = {i: next(seqs) for i in rest}
        applied = dropped = 0
        touched: set[str] = set()
        for index, result in enumerate(ordered):
            row = rows.get(result.task_id)
            if index in bulk:
                new = bulk[index]
                if new is not None:
                    _log_attempt(writes, new, result, "info", f"attempt {new['attempt']} completed", None, now)
                    tracing.emit_step(new, now)
            else:
                new = _apply_one(ctx, conn, row, result, writes, now, iter([seq_of.get(index)])) if row else None
            if new is None:
                dropped += 1
                _log_drop(result, row)
                continue
            applied += 1
            rows[result.task_id] = new
            if new["run_id"] and result.status not in contracts.PROGRESS_STATUSES:
                touched.add(new["run_id"])
        planned = plan_runs(ctx, conn, {r: locked[r] for r in touched if r in locked}, writes, now)
        writes.flush(conn)
    log.debug("batch: %d results applied, %d dropped, %d planner actions", applied, dropped, planned)
    return BatchOutcome(applied, dropped, tuple(sorted(touched)), tuple(writes.outbox_ids))


def _complete_in_bulk(
    ctx: StoreContext,
    conn: Connection,
    ordered: Sequence[ResultMessage],
    rows: dict[str, dict[str, Any]],
    locked: dict[str, dict[str, Any]],
    now: datetime,
) -> dict[int, dict[str, Any] | None]:
    """The common case in one statement: ``completed`` results of tasks whose run this
    transaction holds, one result per task in the batch. The same compare-and-set as
    ``cas_task`` (status pending/processing and the fencing token), for all of them at once; the
    new row by result index, None where the CAS refused it. Other results go one by one."""
    per_task: dict[str, int] = {}
    for result in ordered:
        per_task[result.task_id] = per_task.get(result.task_id, 0) + 1
    picked: dict[int, dict[str, Any]] = {}
    for index, result in enumerate(ordered):
        row = rows.get(result.task_id)
        if (
            result.status != "completed" or row is None or per_task[result.task_id] != 1
            or row["run_id"] not in locked  # tasks are covered by their run's lock
            or row["fencing_token"] != result.fencing_token or T(row["status"]) not in RESULT_SOURCES
        ):
            continue
        started = row["started_at"] or to_datetime(result.started_at) or now
        picked[index] = {"id": row["id"], "token": result.fencing_token, "output": result.output,
                         "started_at": started.isoformat()}
    if not picked:
        return {}
    if not ctx.is_postgres:
        return _complete_in_bulk_sqlite(ctx, conn, picked, now)
    statement = text(
        "UPDATE tasks AS t SET status = :completed, output = v.output, error = NULL, "
        f"lease_expires_at = NULL, finished_at = :now, finished_seq = nextval('{FINISHED_SEQ_NAME}'), "
        "started_at = v.started_at, updated_at = :now "
        "FROM jsonb_to_recordset(CAST(:data AS jsonb)) "
        "AS v(id text, token integer, output jsonb, started_at timestamptz) "
        "WHERE t.id = v.id AND t.fencing_token = v.token AND t.status IN (:pending, :processing) "
        "RETURNING t.*"
    ).columns(*tasks.c)
    returned = conn.execute(statement, {
        "completed": T.COMPLETED.value, "pending": T.PENDING.value, "processing": T.PROCESSING.value,
        "now": now, "data": json.dumps(list(picked.values())),
    }).mappings().all()
    by_id = {row["id"]: dict(row) for row in returned}
    return {index: by_id.get(values["id"]) for index, values in picked.items()}


# The compare-and-set of ``cas_task`` for many completions: one executemany, then one read.
_BULK_COMPLETE_SQLITE = (
    update(tasks)
    .where(tasks.c.id == bindparam("b_id"), tasks.c.fencing_token == bindparam("b_token"),
           # not IN (...): an expanding parameter cannot be used with executemany
           or_(tasks.c.status == T.PENDING.value, tasks.c.status == T.PROCESSING.value))
    .values(status=T.COMPLETED.value, output=bindparam("b_output", type_=tasks.c.output.type),
            error=None, lease_expires_at=None, finished_at=bindparam("b_now", type_=tasks.c.finished_at.type),
            finished_seq=bindparam("b_seq"), started_at=bindparam("b_started", type_=tasks.c.started_at.type),
            updated_at=bindparam("b_now", type_=tasks.c.updated_at.type))
)


def _complete_in_bulk_sqlite(
    ctx: StoreContext, conn: Connection, picked: dict[int, dict[str, Any]], now: datetime,
) -> dict[int, dict[str, Any] | None]:
    """``_complete_in_bulk`` on SQLite (the embedded default, and `flow test`): an executemany
    cannot return rows, so the rows are read back; a row took this batch's write when it holds
    the sequence value given to it (a refused CAS leaves its old ``finished_seq``)."""
    seqs = take_finished_seq(ctx, conn, len(picked))
    seq_of = dict(zip(picked, seqs))
    conn.execute(_BULK_COMPLETE_SQLITE, [
        {"b_id": v["id"], "b_token": v["token"], "b_output": v["output"], "b_now": now,
         "b_seq": seq_of[i], "b_started": to_datetime(v["started_at"])}
        for i, v in picked.items()
    ])
    by_id = {row["id"]: dict(row) for row in select_in(select(tasks), tasks.c.id, [v["id"] for v in picked.values()], conn)}
    done: dict[int, dict[str, Any] | None] = {}
    for index, values in picked.items():
        row = by_id.get(values["id"])
        done[index] = row if row is not None and row["finished_seq"] == seq_of[index] \
            and row["status"] == T.COMPLETED.value else None
    return done


def _apply_one(
    ctx: StoreContext,
    conn: Connection,
    row: dict[str, Any],
    result: ResultMessage,
    writes: Writes,
    now: datetime,
    seqs: Any,
) -> dict[str, Any] | None:
    # Checked in memory first: most drops (duplicates) then cost no statement. The CAS below is
    # still what guarantees it, for tasks without a run (not covered by a run lock).
    if row["fencing_token"] != result.fencing_token or T(row["status"]) not in RESULT_SOURCES:
        return None
    # The lease is the silence a worker is allowed: every report of a task renews it, and a worker
    # reports the tasks it holds (received, then started) and heartbeats the running ones, so a
    # step may run longer than the lease while its worker lives (see workers/consumer.py).
    lease = after(now, ctx.lease_seconds + LEASE_GRACE_SECONDS)
    if result.status == "received":
        # Held by a worker but not started yet: a delivery lease, not renewed until it starts, so
        # that a stalled worker (or one whose handlers are all stuck) gives it up within the bound.
        if row["status"] != T.PENDING.value:
            return None
        return cas_task(conn, row["id"], {T.PENDING}, {"lease_expires_at": lease, "updated_at": now},
                        result.fencing_token)
    if result.status == "heartbeat":
        if row["status"] != T.PROCESSING.value:
            return None
        return cas_task(conn, row["id"], {T.PROCESSING}, {"lease_expires_at": lease, "updated_at": now},
                        result.fencing_token)
    if result.status == "started":
        if row["status"] != T.PENDING.value:
            return None
        started = to_datetime(result.started_at) or now
        return cas_task(
            conn, row["id"], {T.PENDING},
            {
                "status": T.PROCESSING.value,
                "lease_expires_at": lease,
                "started_at": row["started_at"] or started,
                "updated_at": now,
            },
            result.fencing_token,
        )
    if result.status == "completed":
        new = cas_task(
            conn, row["id"], RESULT_SOURCES,
            {
                "status": T.COMPLETED.value,
                "output": result.output,
                "error": None,
                "lease_expires_at": None,
                "finished_at": now,
                "finished_seq": next(seqs),
                "started_at": row["started_at"] or to_datetime(result.started_at) or now,
                "updated_at": now,
            },
            result.fencing_token,
        )
        if new is not None:
            _log_attempt(writes, new, result, "info", f"attempt {new['attempt']} completed", None, now)
            tracing.emit_step(new, now)
        return new
    failure = result.error or Failure("handler", "the worker reported a failure without details")
    return fail_attempt(ctx, conn, row, failure, writes, now, result=result)


def fail_attempt(
    ctx: StoreContext,
    conn: Connection,
    row: dict[str, Any],
    failure: Failure,
    writes: Writes,
    now: datetime,
    *,
    result: ResultMessage | None = None,
    sources: frozenset[TaskStatus] = RESULT_SOURCES,
    bump_fencing: bool = False,
) -> dict[str, Any] | None:
    """Record a failed attempt: ``retrying`` if the policy allows another, else ``failed`` with a
    dead letter. ``bump_fencing`` (lease expiry) refuses the silent worker's late result."""
    decision = retry_policy.decide(retry_of(row), int(row["attempt"]), failure, ctx.rng)
    values: dict[str, Any] = {
        "error": failure.to_json(),
        "lease_expires_at": None,
        "updated_at": now,
        "started_at": row["started_at"] or (to_datetime(result.started_at) if result else None) or now,
    }
    if bump_fencing:
        values["fencing_token"] = row["fencing_token"] + 1
    if decision.retry:
        values.update(status=T.RETRYING.value, next_attempt_at=after(now, decision.delay))
    else:
        values.update(status=T.FAILED.value, finished_at=now, next_attempt_at=None)
    new = cas_task(conn, row["id"], sources, values, row["fencing_token"])
    if new is None:
        return None
    # Counted once the transaction commits: a rolled-back (and retried) one counts nothing.
    after_commit(conn, (metrics.RETRIES if decision.retry else metrics.DEAD_LETTERS).labels(row["task_type"]).inc)
    message = f"attempt {row['attempt']} failed: {failure.type}: {failure.message}; {decision.reason}"
    _log_attempt(writes, new, result, "warning" if decision.retry else "error", message, failure, now)
    if not decision.retry:
        queue_dead_letter(writes, new, decision.reason, failure.to_json(), now)
        tracing.emit_step(new, now)
    return new


def _log_attempt(
    writes: Writes,
    row: dict[str, Any],
    result: ResultMessage | None,
    level: str,
    message: str,
    failure: Failure | None,
    now: datetime,
) -> None:
    """One line per attempt (with its error record), then the worker's own log lines."""
    attempt = int(row["attempt"])
    data: dict[str, Any] = {"attempt": attempt}
    if failure is not None:
        data["error"] = failure.to_json()
    if result is not None:
        data.update(worker=result.worker, received_at=result.received_at, started_at=result.started_at,
                    finished_at=result.finished_at)
        for entry in result.logs:
            entry = dict(entry)
            at = entry.pop("time", None) or entry.pop("at", None)
            when = to_datetime(at) if isinstance(at, (int, float, str)) else None
            queue_log(
                writes, row, str(entry.pop("level", "info")), str(entry.pop("message", "")),
                when or now, data=entry or None, attempt=attempt,
            )
    queue_log(writes, row, level, message, now, data=data, attempt=attempt)


def _log_drop(result: ResultMessage, row: dict[str, Any] | None) -> None:
    if row is None:
        log.warning("dropped %s result of unknown task %s", result.status, result.task_id)
        return
    log.info(
        "dropped %s result of task %s (attempt %s, token %s): the task is %s with token %s "
        "(a duplicate or a late result)",
        result.status, result.task_id, result.attempt, result.fencing_token,
        row["status"], row["fencing_token"],
    )
