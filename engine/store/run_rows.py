"""A new run's row: the version it pins, its checked params, its ``let`` values and deadline.

Shared by every way a run starts (``runs.start_run``, ``bulk_start``, a subflow's child in
``internal_steps``), below all of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from dsl import evaluator
from dsl.spec import WorkflowSpec
from engine.core.errors import InvalidParams
from engine.core.params import check_params
from engine.core.states import RunStatus
from engine.store.context import StoreContext, after, new_id
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
) -> dict[str, Any]:
    """A new run's row (not inserted): the version pinned, params checked, ``let`` values
    evaluated, the deadline set. Raises ``NotFound`` or ``InvalidParams``."""
    found = find_version(conn, workflow, version)
    spec = spec_of(ctx, conn, found["id"])
    return run_row(spec, found, params, idempotency_key, scheduled_at, parent_run_id, ctx.now())


def run_row(
    spec: WorkflowSpec,
    found: dict[str, Any],
    params: dict[str, Any] | None,
    idempotency_key: str | None,
    scheduled_at: datetime | None,
    parent_run_id: str | None,
    now: datetime,
) -> dict[str, Any]:
    """A new run's row of version ``found`` (``id``, ``version``) of ``spec``. Raises
    ``InvalidParams``."""
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
        "values": evaluate_lets(spec, checked, run_id, scheduled_at),
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


def evaluate_lets(
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
