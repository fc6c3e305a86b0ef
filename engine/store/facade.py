"""The store: every SQL statement of the engine, behind one facade.

Each method is one transaction. Status changes are compare-and-set against ``engine.core.states``;
commands raise ``IllegalTransition`` when the current status forbids them, while late or duplicate
worker results are dropped (and counted). The work is split by concept:

- ``versions``      workflow versions
- ``runs``          start a run or task; cancel, retry, compensate; dead-letter requeue
- ``results``       apply a batch of worker results, then re-plan (``planning``)
- ``timers``        due retries, expired leases, run deadlines (``internal_timers`` for sleeps,
                    approvals and subflows)
- ``outbox``        the outbox relay
- ``documents``     reads for the CLI, API and dashboard
- ``compensate``    compensate one task (a standalone task with a given undo action)
- ``auth``          API tokens and dashboard users, stored hashed

Works on PostgreSQL (row locks with ``SKIP LOCKED``; several coordinators at once) and on SQLite
(the embedded default: one process, ``BEGIN IMMEDIATE`` serialises writers).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from engine.core.contracts import ResultMessage
from engine.store import (
    auth,
    bulk_start,
    compensate,
    documents,
    internal_timers,
    outbox,
    results,
    runs,
    starts,
    timers,
    versions,
)
from engine.store.access import AccessStore
from engine.store.audit import AuditRecord
from engine.store.auth import TokenIdentity, UserInfo
from engine.store.context import BatchOutcome, DeployedVersion, OutboxMessage, StoreContext
from engine.store.listen import Listener, LocalBus

__all__ = ["Store", "BatchOutcome", "DeployedVersion", "OutboxMessage", "UserInfo"]

When = datetime | float | str | None


class Store:
    """Persistence of workflow versions, runs and tasks.

    Parameters:
        engine: from ``engine.store.db.make_engine``; the schema must be migrated (``engine.store.db.upgrade``).
        clock: seconds since the epoch; tests inject one to move time.
        rng: the random source of retry jitter (tests pass a seeded one).
        lease_seconds: how long a worker may stay silent about a task it holds (it reports and heartbeats more often).
        max_deliveries: lease expiries of one attempt (each re-dispatches the same attempt, same
            idempotency key) before the attempt fails with class ``timeout``.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        lease_seconds: float = 60.0,
        max_deliveries: int = 5,
    ) -> None:
        self.engine = engine
        self._ctx = StoreContext(engine, clock, rng, lease_seconds, max_deliveries)
        # Dashboard sessions, login throttling and the audit trail.
        self.access = AccessStore(self._ctx)

    @property
    def clock(self) -> Callable[[], float]:
        """The clock the store reads (Unix seconds): what the app's schedule store reads too."""
        return self._ctx.clock

    # --- workflows ------------------------------------------------------------------------------

    def deploy(self, source: str, filename: str,
               step_types: Mapping[str, Any] | None = None) -> list[DeployedVersion]:
        """Compile ``source`` and store a new version of each changed workflow; ``step_types`` are
        the dotted step types to check against (see ``versions.deploy``).

        Raises:
            CompileFailed: with the compiler's diagnostics.
        """
        return versions.deploy(self._ctx, source, filename, step_types)

    def deploy_seed(self, definition: Mapping[str, Any]) -> DeployedVersion:
        """Store a JSON definition (the task API's) as a workflow version (same definition: same version)."""
        return versions.deploy_seed(self._ctx, definition)

    # --- commands -------------------------------------------------------------------------------

    def start_run(
        self,
        workflow: str,
        params: dict[str, Any] | None = None,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
        scheduled_at: When = None,
        parent_run_id: str | None = None,
        backfill_id: str | None = None,
    ) -> str:
        """Start a run of the newest (or the given) version; the run id.

        Raises:
            NotFound: no such workflow (version).
            InvalidParams: every problem with ``params`` (or a ``let`` that cannot be evaluated).
            Conflict: ``idempotency_key`` already started a run of another workflow.
        """
        return starts.start_run(
            self._ctx, workflow, params, version=version, idempotency_key=idempotency_key,
            scheduled_at=scheduled_at, parent_run_id=parent_run_id, backfill_id=backfill_id,
        )

    def start(
        self,
        workflow: str,
        entries: Sequence[tuple[dict[str, Any] | None, str | None]],
        *,
        version: int | None = None,
        documents: bool = True,
        audit: AuditRecord | None = None,
    ) -> list[starts.StartOutcome]:
        """Start one run per ``(params, idempotency_key)`` in one transaction (the API's start and
        batch start): one outcome per entry, in order, each with its run (and its document) or the
        error that refused it (``InvalidParams``, ``Conflict``); the others start. ``audit``: the
        action's audit row, committed with the runs when no entry was refused.

        Raises:
            NotFound: no such workflow (version).
        """
        return starts.start_many(self._ctx, workflow, entries, version=version, documents=documents, audit=audit)

    def start_runs(
        self,
        workflow: str,
        params_list: Sequence[dict[str, Any] | None],
        *,
        version: int | None = None,
    ) -> list[str]:
        """Start one run per params entry in one transaction (bulk submission); the run ids.

        Raises NotFound or InvalidParams (then nothing is started)."""
        return bulk_start.start_runs(self._ctx, workflow, params_list, version=version)

    def create_task(
        self,
        task_type: str,
        payload: dict[str, Any],
        *,
        max_attempts: int = 3,
        run_at: When = None,
        idempotency_key: str | None = None,
    ) -> str:
        """A standalone task (no run); delayed until ``run_at`` if given. The task id."""
        return runs.create_task(
            self._ctx, task_type, payload, max_attempts=max_attempts, run_at=run_at,
            idempotency_key=idempotency_key,
        )

    def cancel_run(self, run_id: str) -> None:
        """Raises NotFound, or IllegalTransition unless the run is pending or running."""
        runs.cancel_run(self._ctx, run_id)

    def retry_run(self, run_id: str) -> None:
        """Retry a failed run from its failed steps. Raises NotFound or IllegalTransition."""
        runs.retry_run(self._ctx, run_id)

    def compensate_run(self, run_id: str) -> None:
        """Undo a finished run's completed steps. Raises NotFound or IllegalTransition."""
        runs.compensate_run(self._ctx, run_id)

    def retry_task(self, task_id: str) -> None:
        """Retry a failed task from attempt 1. Raises NotFound or IllegalTransition."""
        runs.retry_task(self._ctx, task_id)

    def cancel_task(self, task_id: str) -> None:
        """Cancel an unfinished task. Raises NotFound or IllegalTransition."""
        runs.cancel_task(self._ctx, task_id)

    def compensate_task(self, task_id: str, action: dict[str, Any] | None = None) -> str | None:
        """Compensate a task: its run (None), or a standalone one with ``action`` (the new task id).
        Raises NotFound, InvalidParams (no or bad action) or IllegalTransition (not completed)."""
        return compensate.compensate_task(self._ctx, task_id, action)

    def requeue_dead_letter(self, dead_letter_id: str) -> str:
        """Retry the dead letter's task; its id. Raises NotFound or IllegalTransition."""
        return runs.requeue_dead_letter(self._ctx, dead_letter_id)

    def discard_dead_letter(self, dead_letter_id: str) -> None:
        """Close a dead letter without retrying. Raises NotFound or IllegalTransition."""
        runs.discard_dead_letter(self._ctx, dead_letter_id)

    def approve_step(
        self,
        run_id: str,
        step: str,
        approved: bool,
        by: str,
        comment: str | None = None,
        *,
        item: int | None = None,
    ) -> list[str]:
        """Answer a waiting ``approval`` step (a rejection completes it too, ``approved: false``);
        the task ids answered. Raises NotFound or IllegalTransition (the step is not waiting)."""
        return internal_timers.approve_step(self._ctx, run_id, step, approved, by, comment, item)

    # --- coordinator ----------------------------------------------------------------------------

    def apply_results(self, messages: Sequence[ResultMessage]) -> BatchOutcome:
        """Apply a batch of worker results and re-plan the touched runs, in one transaction."""
        return results.apply_results(self._ctx, messages)

    def run_timers(self, limit: int = 500) -> BatchOutcome:
        """Due retries, expired leases and run deadlines (up to ``limit`` of each)."""
        return timers.run_timers(self._ctx, limit)

    def relay_outbox(self, publish: Callable[[list[OutboxMessage]], None], limit: int = 500) -> int:
        """Publish and delete up to ``limit`` outbox messages; the number relayed."""
        return outbox.relay_outbox(self._ctx, publish, limit)

    def publish_outbox(self, ids: Sequence[int], publish: Callable[[list[OutboxMessage]], None]) -> int:
        """Publish and delete the outbox rows ``ids`` a batch just committed; the number published."""
        return outbox.publish_ids(self._ctx, ids, publish)

    # --- queries --------------------------------------------------------------------------------

    def get_run(self, run_id: str) -> dict[str, Any]:
        return documents.get_run(self._ctx, run_id)

    def list_runs(
        self,
        workflow: str | None = None,
        status: str | None = None,
        since: When = None,
        until: When = None,
        limit: int = 50,
        cursor: str | None = None,
        search: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """Runs, newest first; ``search`` keeps those whose business keys equal every given text."""
        return documents.list_runs(self._ctx, workflow, status, since, until, limit, cursor, search)

    def get_task(self, task_id: str) -> dict[str, Any]:
        return documents.get_task(self._ctx, task_id)

    def task_logs(
        self, task_id: str | None = None, run_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        return documents.get_task_logs(self._ctx, task_id, run_id, limit)

    def counts(self) -> dict[str, Any]:
        return documents.counts(self._ctx)

    def list_workflows(self) -> list[dict[str, Any]]:
        return documents.list_workflows(self._ctx)

    def get_version(self, name: str, version: int | None = None) -> dict[str, Any]:
        return documents.get_version(self._ctx, name, version)

    def list_dead_letters(self, include_closed: bool = False, limit: int = 100) -> list[dict[str, Any]]:
        return documents.list_dead_letters(self._ctx, include_closed, limit)

    def get_dead_letter(self, dead_letter_id: str) -> dict[str, Any]:
        return documents.get_dead_letter(self._ctx, dead_letter_id)

    # --- auth -----------------------------------------------------------------------------------

    def create_token(self, name: str, role: str, expires_in: timedelta | None = None) -> tuple[str, str]:
        """A new API token: ``(id, token)``; the token is shown only now. Raises InvalidParams."""
        return auth.create_token(self._ctx, name, role, expires_in)

    def revoke_token(self, token_id: str) -> None:
        """Revoke a token at once. Raises NotFound."""
        auth.revoke_token(self._ctx, token_id)

    def list_tokens(self) -> list[dict[str, Any]]:
        return auth.list_tokens(self._ctx)

    def notifications(self) -> Listener | LocalBus:
        """This process's database notifications (``engine.store.listen``): ``subscribe(channel,
        callback)``, ``on_reset(callback)``, ``healthy``. Started on first use."""
        return self._ctx.notifications()

    def authenticate_token(self, token: str) -> TokenIdentity | None:
        """The name and role of an active token, else None (unknown or revoked). Raises TokenExpired."""
        return auth.authenticate_token(self._ctx, token)

    def create_user(self, username: str, password: str, role: str) -> UserInfo:
        """A dashboard user. Raises InvalidParams or Conflict (username taken)."""
        return auth.create_user(self._ctx, username, password, role)

    def authenticate_user(self, username: str, password: str) -> UserInfo | None:
        """The user when the password matches and the user is enabled, else None."""
        return auth.authenticate_user(self._ctx, username, password)

    def set_password(self, username: str, password: str) -> None:
        auth.set_password(self._ctx, username, password)

    def list_users(self) -> list[UserInfo]:
        return auth.list_users(self._ctx)

    def disable_user(self, username: str) -> None:
        auth.disable_user(self._ctx, username)

    def enable_user(self, username: str) -> None:
        auth.enable_user(self._ctx, username)

    def set_role(self, username: str, role: str) -> None:
        auth.set_role(self._ctx, username, role)

    def delete_user(self, username: str) -> None:
        auth.delete_user(self._ctx, username)
