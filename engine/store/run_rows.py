"""A new run's row: the version it pins, its checked params, its ``let`` and ``search`` values and
deadline; and inserting new runs with their business keys.

Shared by every way a run starts (``runs.start_run``, ``bulk_start``, a subflow's child in
``internal_steps``), below all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dsl import evaluator
from dsl.spec import WorkflowSpec
from engine.core.errors import InvalidParams
from engine.core.params import check_params
from engine.core.search import search_texts
from engine.core.states import RunStatus
from engine.store.context import StoreContext, after, new_id, run_search_keys, runs
from engine.store.versions import find_version, spec_of

R = RunStatus


def new_run_row(
    ctx: StoreContext,
    conn: Connection,
    workflow: str,
    params: dict[str, Any] | None,
    version: int | None,
    idempotency_key: str | None,
    scheduled_at: datetime | None,
    parent_run_id: str | None,
    backfill_id: str | None = None,
) -> dict[str, Any]:
    """A new run's row (not inserted): the version pinned, params checked, ``let`` and ``search``
    values evaluated, the deadline set. Raises ``NotFound`` or ``InvalidParams``."""
    found = find_version(conn, workflow, version)
    spec = spec_of(ctx, conn, found["id"])
    return run_row(spec, found, params, idempotency_key, scheduled_at, parent_run_id, ctx.now(),
                   backfill_id=backfill_id)


def run_row(
    spec: WorkflowSpec,
    found: dict[str, Any],
    params: dict[str, Any] | None,
    idempotency_key: str | None,
    scheduled_at: datetime | None,
    parent_run_id: str | None,
    now: datetime,
    *,
    backfill_id: str | None = None,
) -> dict[str, Any]:
    """A new run's row of version ``found`` (``id``, ``version``) of ``spec``. Raises
    ``InvalidParams``."""
    checked = check_params(spec.params, params, spec.name)
    run_id = new_id()
    values = evaluate_lets(spec, checked, run_id, scheduled_at)
    return {
        "id": run_id,
        "workflow_version_id": found["id"],
        "workflow_name": spec.name,
        "version": found["version"],
        # The planner's first action moves it to running (with started_at).
        "status": R.PENDING.value,
        "params": checked,
        "values": values,
        "search": evaluate_search(spec, checked, values, run_id, scheduled_at),
        "backfill_id": backfill_id,
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


def _start_env(spec: WorkflowSpec, params: dict[str, Any], run_id: str,
               scheduled_at: datetime | None) -> dict[str, Any]:
    """What a run's first evaluations see: its params and ``workflow``."""
    return {
        "params": params,
        "workflow": {
            "name": spec.name,
            "run_id": run_id,
            "scheduled_at": scheduled_at.isoformat() if scheduled_at else None,
        },
    }


def evaluate_search(spec: WorkflowSpec, params: dict[str, Any], lets: dict[str, Any], run_id: str,
                    scheduled_at: datetime | None) -> dict[str, str] | None:
    """The run's business keys as indexed text (``engine.core.search``), or None without a clause.

    The compiler keeps secrets and steps out of ``search`` and checks the types it knows; a value
    it could not know (a field of an ``object`` param) is checked here and refuses the start.
    """
    if not spec.search:
        return None
    env = {**_start_env(spec, params, run_id, scheduled_at), **lets}
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key in spec.search:
        try:
            values[key.name] = evaluator.evaluate(key.expr, env)
        except evaluator.EvaluationError as exc:
            problems.append(f"search {key.name}: {exc}")
    texts, more = search_texts(values)
    if problems or more:
        raise InvalidParams(problems + more, spec.name)
    return texts


def evaluate_lets(
    spec: WorkflowSpec, params: dict[str, Any], run_id: str, scheduled_at: datetime | None
) -> dict[str, Any]:
    """The ``let`` values, once per run: each sees params, ``workflow`` and the lets before it.
    Secrets stay deferred (resolved only on the worker), so none is stored in clear."""
    env = _start_env(spec, params, run_id, scheduled_at)
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


def insert_runs(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert new run rows and their business keys (``run_search_keys``), in the caller's transaction."""
    conn.execute(runs.insert(), rows)
    insert_search_keys(conn, rows)


def insert_search_keys(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    """The business keys of new runs (already inserted, or flushed with them: ``Writes.new_runs``)."""
    keys = [{"run_id": row["id"], "key": key, "value": value, "created_at": row["created_at"]}
            for row in rows for key, value in (row["search"] or {}).items()]
    if keys:
        conn.execute(run_search_keys.insert(), keys)
