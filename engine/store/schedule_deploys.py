"""Deploying a workflow registers its schedules: ``deploy_with_schedules`` and the ``StoreLauncher``
through which a fire starts runs and tasks on the ``Store``."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Callable, Mapping, Protocol, Sequence

from sqlalchemy import Engine, select

from engine.store.schedules import ScheduleStore


class Starter(Protocol):
    """What a fire needs of ``engine.store.Store`` (which imports this module)."""

    def start_run(self, workflow: str, params: dict[str, Any] | None = None, *, version: int | None = None,
                  idempotency_key: str | None = None, scheduled_at: Any = None, parent_run_id: str | None = None,
                  backfill_id: str | None = None) -> str: ...

    def create_task(self, task_type: str, payload: dict[str, Any], *, max_attempts: int = 3, run_at: Any = None,
                    idempotency_key: str | None = None) -> str: ...


class StoreLauncher:
    """Starts runs and tasks through ``engine.store.Store``, keyed for idempotency."""

    def __init__(self, store: Starter) -> None:
        self.store = store

    def start_run(
        self, workflow: str, params: dict[str, Any], *, idempotency_key: str, scheduled_at: datetime,
        backfill_id: str | None = None,
    ) -> str:
        return str(self.store.start_run(workflow, params, idempotency_key=idempotency_key,
                                         scheduled_at=scheduled_at, backfill_id=backfill_id))

    def create_task(
        self, task_type: str, payload: dict[str, Any], *, idempotency_key: str, scheduled_at: datetime
    ) -> str:
        return str(self.store.create_task(task_type, payload, idempotency_key=idempotency_key))


def sync_workflow_schedules(
    target: ScheduleStore, workflow_name: str, version: int, schedules: Sequence[Any]
) -> list[str]:
    """Register the schedules of a just-deployed workflow version (see ``ScheduleStore.sync_workflow``)."""
    return target.sync_workflow(workflow_name, version, schedules)


def deploy_with_schedules(
    store: Any, source: str, filename: str, schedule_store: ScheduleStore | None = None,
    *, clock: Callable[[], float] = time.time, step_types: Mapping[str, Any] | None = None,
) -> list[Any]:
    """Deploy ``source`` with ``store.deploy``, then register the schedules of each new version.

    A redeploy of an unchanged source registers nothing, so a schedule deleted by hand stays
    deleted until its workflow's source changes. Without ``schedule_store`` one is built on
    ``store.engine`` and ``clock``.
    """
    if schedule_store is None:
        schedule_store = ScheduleStore(store.engine, StoreLauncher(store), clock=clock)
    deployed = store.deploy(source, filename, step_types) if step_types else store.deploy(source, filename)
    for item in deployed:
        if item.created:
            specs = _deployed_schedules(schedule_store.engine, item.name, item.version)
            schedule_store.sync_workflow(item.name, item.version, specs)
    return list(deployed)


def _deployed_schedules(engine: Engine, name: str, version: int) -> tuple[Any, ...]:
    from dsl.spec import Schedule as ScheduleSpec
    from engine.store.models import WorkflowVersion

    versions = WorkflowVersion.__table__
    with engine.connect() as conn:
        spec = conn.execute(
            select(versions.c.spec).where(versions.c.name == name, versions.c.version == version)
        ).scalar_one()
    return tuple(ScheduleSpec.from_json(s) for s in spec.get("schedules") or ())
