"""Start many runs of one workflow in one transaction (bulk submission: benchmarks, backfills).

Same rules as ``runs.start_run`` (params checked, lets evaluated, first steps planned in
the same transaction), but one version lookup, one multi-row insert and one commit for the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.core.params import check_params
from engine.store.context import StoreContext
from engine.store.outbox import notify_outbox
from engine.store.planning import plan_runs
from engine.store.run_rows import build_run_row, insert_runs
from engine.store.versions import find_version, spec_of
from engine.store.writes import Writes


def start_runs(
    ctx: StoreContext,
    workflow: str,
    params_list: Sequence[dict[str, Any] | None],
    *,
    version: int | None = None,
) -> list[str]:
    """Create one run per entry of ``params_list``, plan their first steps; the run ids (in order).

    Raises NotFound (no such workflow) or InvalidParams (the first bad params; nothing is started).
    """
    if not params_list:
        return []
    with ctx.engine.begin() as conn:
        found = find_version(conn, workflow, version)
        spec = spec_of(ctx, conn, found["id"])
        now = ctx.now()
        rows = [build_run_row(spec, found, check_params(spec.params, params, workflow), now) for params in params_list]
        insert_runs(conn, rows)
        plan_runs(ctx, conn, {row["id"]: row for row in rows}, Writes(), now)
        notify_outbox(ctx, conn)
    return [row["id"] for row in rows]
