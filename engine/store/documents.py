"""Reads for the CLI, the API and the dashboard: JSON-ready dicts, each in a few indexed queries."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from dsl.spec import WorkflowSpec
from engine.core.errors import InvalidParams, NotFound
from engine.core.planner.view import COMPENSATION, ON_FAILURE, STEP
from engine.store.context import (
    StoreContext,
    aware,
    dead_letters,
    iso,
    runs,
    select_in,
    task_logs,
    tasks,
    to_datetime,
    versions,
)
from engine.store.db import read_only
from engine.store.versions import find_version, load_specs, spec_of

COUNTED = ("pending", "processing", "failed", "retrying", "completed")
IN_FLIGHT = frozenset({"pending", "processing", "retrying"})
MAX_PAGE = 500


def get_run(ctx: StoreContext, run_id: str) -> dict[str, Any]:
    """The run document printed by ``flow run --json`` and ``GET /api/runs/<id>``."""
    with read_only(ctx.engine) as conn:
        found = run_documents(ctx, conn, [run_id])
    if run_id not in found:
        raise NotFound("run", run_id)
    return found[run_id]


def run_documents(ctx: StoreContext, conn: Connection, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The run documents of ``run_ids`` that exist, by id (two queries on ``conn``)."""
    wanted = list(dict.fromkeys(run_ids))
    if not wanted:
        return {}
    found = {row["id"]: row for row in select_in(select(runs), runs.c.id, wanted, conn)}
    task_rows: dict[str, list[dict[str, Any]]] = {run_id: [] for run_id in found}
    if found:
        for row in select_in(select(tasks), tasks.c.run_id, list(found), conn):
            task_rows[row["run_id"]].append(dict(row))
    load_specs(ctx, conn, [run["workflow_version_id"] for run in found.values()])
    documents = {}
    for run_id, run in found.items():
        rows = sorted(task_rows[run_id], key=lambda r: (aware(r["created_at"]), r["id"]))
        documents[run_id] = run_document(spec_of(ctx, conn, run["workflow_version_id"]), run, rows)
    return documents


def run_document(spec: WorkflowSpec, run: Any, task_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's document from its row and its task rows (oldest first)."""
    return {
        "id": run["id"],
        "workflow": run["workflow_name"],
        "version": run["version"],
        "status": run["status"],
        "params": run["params"],
        "output": run["output"],
        "error": run["error"],
        "created_at": iso(run["created_at"]),
        "started_at": iso(run["started_at"]),
        "finished_at": iso(run["finished_at"]),
        "steps": _steps(spec, task_rows),
    }


def _steps(spec: WorkflowSpec, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per main step in spec order (``pending`` with 0 attempts until it has a task),
    then the ``on failure`` steps that ran. A fan-out step lists its ``items``; a step whose
    compensation ran has a ``compensation`` entry."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_key.setdefault((row["kind"], row["step"] or ""), []).append(row)
    steps = []
    for kind, step_specs in ((STEP, spec.steps), (ON_FAILURE, spec.on_failure)):
        for step in step_specs:
            own = by_key.get((kind, step.name), [])
            if kind == ON_FAILURE and not own:
                continue
            entry = _step_entry(step.name, own, fan_out=step.for_each is not None)
            compensations = by_key.get((COMPENSATION, step.name))
            if compensations:
                entry["compensation"] = {
                    "status": _combined_status(compensations),
                    "attempts": max(r["attempt"] for r in compensations),
                    "error": next((r["error"] for r in compensations if r["error"]), None),
                }
            steps.append(entry)
    return steps


def _step_entry(name: str, rows: list[dict[str, Any]], fan_out: bool) -> dict[str, Any]:
    if not fan_out:
        row = rows[0] if rows else None
        return {
            "name": name,
            "task_id": row["id"] if row else None,
            "status": row["status"] if row else "pending",
            "attempts": row["attempt"] if row else 0,
            "output": row["output"] if row else None,
            "error": row["error"] if row else None,
            "started_at": iso(row["started_at"]) if row else None,
            "finished_at": iso(row["finished_at"]) if row else None,
        }
    items = sorted((r for r in rows if r["item"] is not None), key=lambda r: r["item"])
    whole = [r for r in rows if r["item"] is None]  # an empty fan-out is recorded as one task
    status = _combined_status(items) if items else (whole[0]["status"] if whole else "pending")
    started = [r["started_at"] for r in items if r["started_at"]]
    finished = [r["finished_at"] for r in items if r["finished_at"]]
    return {
        "name": name,
        # A fan-out has one task per item (see ``items``); only an empty one is recorded as one task.
        "task_id": whole[0]["id"] if whole and not items else None,
        "status": status,
        # The items run side by side: the step took as many attempts as its slowest item.
        "attempts": max((r["attempt"] for r in items), default=whole[0]["attempt"] if whole else 0),
        "output": [r["output"] for r in items] if status == "completed" and items
        else (whole[0]["output"] if whole else None),
        "error": next((r["error"] for r in items if r["status"] == "failed"), None),
        "items": [
            {
                "item": r["item"],
                "task_id": r["id"],
                "status": r["status"],
                "attempts": r["attempt"],
                "output": r["output"],
                "error": r["error"],
                "started_at": iso(r["started_at"]),
                "finished_at": iso(r["finished_at"]),
            }
            for r in items
        ],
        "started_at": iso(min(started)) if started else None,
        "finished_at": iso(max(finished)) if finished and status not in IN_FLIGHT else None,
    }


def _combined_status(rows: list[dict[str, Any]]) -> str:
    statuses = {r["status"] for r in rows}
    if statuses & {"processing", "retrying"} or ("pending" in statuses and len(statuses) > 1):
        return "processing"
    for status in ("pending", "failed", "cancelled"):
        if status in statuses:
            return status
    if statuses <= {"compensated"}:
        return "compensated"
    return "completed"


def list_runs(
    ctx: StoreContext,
    workflow: str | None = None,
    status: str | None = None,
    since: datetime | float | str | None = None,
    until: datetime | float | str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict[str, Any]:
    """Runs, newest first: ``{"runs": [...], "next_cursor": str | None}``.

    Keyset pagination on ``(created_at, id)``: a page costs the same however deep it is.
    """
    limit = max(1, min(limit, MAX_PAGE))
    statement = select(
        runs.c.id, runs.c.workflow_name, runs.c.version, runs.c.status, runs.c.error,
        runs.c.created_at, runs.c.started_at, runs.c.finished_at,
    )
    if workflow:
        statement = statement.where(runs.c.workflow_name == workflow)
    if status:
        statement = statement.where(runs.c.status == status)
    if since is not None:
        statement = statement.where(runs.c.created_at >= to_datetime(since))
    if until is not None:
        statement = statement.where(runs.c.created_at < to_datetime(until))
    if cursor:
        created, last_id = _decode_cursor(cursor)
        statement = statement.where(
            or_(runs.c.created_at < created, and_(runs.c.created_at == created, runs.c.id < last_id))
        )
    statement = statement.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit + 1)
    with read_only(ctx.engine) as conn:
        rows = conn.execute(statement).mappings().all()
    page = rows[:limit]
    next_cursor = _encode_cursor(page[-1]["created_at"], page[-1]["id"]) if len(rows) > limit else None
    return {
        "runs": [
            {
                "id": r["id"],
                "workflow": r["workflow_name"],
                "version": r["version"],
                "status": r["status"],
                "error": r["error"],
                "created_at": iso(r["created_at"]),
                "started_at": iso(r["started_at"]),
                "finished_at": iso(r["finished_at"]),
            }
            for r in page
        ],
        "next_cursor": next_cursor,
    }


def _encode_cursor(created_at: datetime, run_id: str) -> str:
    raw = json.dumps([iso(created_at), run_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, run_id = json.loads(base64.urlsafe_b64decode(padded))
        when = to_datetime(created)
        assert when is not None
        return when, str(run_id)
    except Exception:  # any malformed cursor is the same user error
        raise InvalidParams(["cursor: not a cursor from a previous page; omit it to start over"]) from None


def task_document(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "run_id": row["run_id"],
        "kind": row["kind"],
        "step": row["step"],
        "item": row["item"],
        "task_type": row["task_type"],
        "payload": row["payload"],
        "status": row["status"],
        "attempt": row["attempt"],
        "max_attempts": row["max_attempts"],
        "output": row["output"],
        "error": row["error"],
        "next_attempt_at": iso(row["next_attempt_at"]),
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "updated_at": iso(row["updated_at"]),
    }


def get_task(ctx: StoreContext, task_id: str) -> dict[str, Any]:
    with read_only(ctx.engine) as conn:
        row = conn.execute(select(tasks).where(tasks.c.id == task_id)).mappings().first()
    if row is None:
        raise NotFound("task", task_id)
    return task_document(row)


def get_task_logs(
    ctx: StoreContext, task_id: str | None = None, run_id: str | None = None, limit: int = 1000
) -> list[dict[str, Any]]:
    """Log lines of a task or of a run, oldest first."""
    if task_id is None and run_id is None:
        raise InvalidParams(["task_logs needs a task_id or a run_id"])
    statement = select(task_logs).order_by(task_logs.c.id).limit(limit)
    if task_id is not None:
        statement = statement.where(task_logs.c.task_id == task_id)
    if run_id is not None:
        statement = statement.where(task_logs.c.run_id == run_id)
    with read_only(ctx.engine) as conn:
        rows = conn.execute(statement).mappings().all()
    return [
        {
            "id": r["id"],
            "task_id": r["task_id"],
            "run_id": r["run_id"],
            "attempt": r["attempt"],
            "level": r["level"],
            "message": r["message"],
            "data": r["data"],
            "created_at": iso(r["created_at"]),
        }
        for r in rows
    ]


def counts(ctx: StoreContext) -> dict[str, Any]:
    """Tasks by status, in total and by task type (one GROUP BY on the (task_type, status) index)."""
    statement = select(tasks.c.task_type, tasks.c.status, func.count()).group_by(
        tasks.c.task_type, tasks.c.status
    )
    total = dict.fromkeys(COUNTED, 0)
    by_type: dict[str, dict[str, int]] = {}
    with read_only(ctx.engine) as conn:
        for task_type, status, n in conn.execute(statement):
            if status not in total:
                continue
            total[status] += n
            by_type.setdefault(task_type, dict.fromkeys(COUNTED, 0))[status] += n
    return {"total": total, "by_type": by_type}


def list_workflows(ctx: StoreContext) -> list[dict[str, Any]]:
    """Every workflow name with its newest version."""
    newest = (
        select(versions.c.name, func.max(versions.c.version).label("version"))
        .group_by(versions.c.name)
        .subquery()
    )
    statement = (
        select(versions.c.name, versions.c.version, versions.c.spec, versions.c.created_at)
        .join(newest, and_(versions.c.name == newest.c.name, versions.c.version == newest.c.version))
        .order_by(versions.c.name)
    )
    with read_only(ctx.engine) as conn:
        rows = conn.execute(statement).mappings().all()
    return [
        {
            "name": r["name"],
            "version": r["version"],
            "doc": r["spec"].get("doc"),
            "params": r["spec"].get("params", []),
            "created_at": iso(r["created_at"]),
        }
        for r in rows
    ]


def get_version(ctx: StoreContext, name: str, version: int | None = None) -> dict[str, Any]:
    with read_only(ctx.engine) as conn:
        row = find_version(conn, name, version)
        numbers = conn.execute(
            select(versions.c.version).where(versions.c.name == name).order_by(versions.c.version)
        ).scalars().all()
    return {
        "name": row["name"],
        "version": row["version"],
        "versions": list(numbers),
        "source": row["source"],
        "filename": row["filename"],
        "source_hash": row["source_hash"],
        "spec": row["spec"],
        "created_at": iso(row["created_at"]),
    }


def _dead_letter_document(row: Any) -> dict[str, Any]:
    return {
        "id": row["id"],
        "task_id": row["task_id"],
        "run_id": row["run_id"],
        "task_type": row["task_type"],
        "reason": row["reason"],
        "error": row["error"],
        "message": row["message"],
        "created_at": iso(row["created_at"]),
        "requeued_at": iso(row["requeued_at"]),
        "discarded_at": iso(row["discarded_at"]),
    }


def list_dead_letters(
    ctx: StoreContext, include_closed: bool = False, limit: int = 100
) -> list[dict[str, Any]]:
    """Dead letters, newest first; by default only those not yet requeued or discarded."""
    statement = select(dead_letters).order_by(dead_letters.c.created_at.desc()).limit(min(limit, MAX_PAGE))
    if not include_closed:
        statement = statement.where(
            dead_letters.c.requeued_at.is_(None), dead_letters.c.discarded_at.is_(None)
        )
    with read_only(ctx.engine) as conn:
        return [_dead_letter_document(r) for r in conn.execute(statement).mappings()]


def get_dead_letter(ctx: StoreContext, dead_letter_id: str) -> dict[str, Any]:
    with read_only(ctx.engine) as conn:
        row = conn.execute(
            select(dead_letters).where(dead_letters.c.id == dead_letter_id)
        ).mappings().first()
    if row is None:
        raise NotFound("dead letter", dead_letter_id)
    return _dead_letter_document(row)

