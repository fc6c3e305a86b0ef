"""Start many runs of one workflow in one transaction (bulk submission: benchmarks, backfills).

Same rules as ``runs.start_run`` (params checked, lets evaluated, first steps planned in
the same transaction), but one version lookup, one multi-row insert and one commit for the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.store.context import StoreContext
from engine.store.starts import start_many


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
    outcomes = start_many(ctx, workflow, [(params, None) for params in params_list], version=version,
                          all_or_nothing=True)
    return [str(o.run_id) for o in outcomes]
