"""Start runs: one or many of one workflow in one transaction, each with its idempotency key.

The API's single start and its batch start (and ``bulk_start``) all come here: one round trip finds
the version and the runs the keys started before, the new runs are inserted in one statement and
planned together, and their first messages are in the outbox when the transaction commits (with a
``NOTIFY`` that wakes a coordinator's relay).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, text
from sqlalchemy.exc import IntegrityError

from engine.core.errors import Conflict, InvalidParams, NotFound
from engine.store.audit import AuditRecord
from engine.store.audit import write as write_audit
from engine.store.context import StoreContext, to_datetime
from engine.store.documents import run_document, run_documents
from engine.store.outbox import notify_outbox
from engine.store.planning import plan_runs
from engine.store.run_rows import insert_search_keys, run_row
from engine.store.versions import spec_of
from engine.store.writes import Writes


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
    backfill_id: str | None = None,
) -> str:
    """Create a run, evaluate its lets and business keys, plan its first steps; the run id."""
    outcome = start_many(ctx, workflow, [(params, idempotency_key)], version=version,
                         scheduled_at=to_datetime(scheduled_at), parent_run_id=parent_run_id,
                         backfill_id=backfill_id)[0]
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
    backfill_id: str | None = None,
    all_or_nothing: bool = False,
    documents: bool = False,
    audit: AuditRecord | None = None,
) -> list[StartOutcome]:
    """Start one run per ``(params, idempotency_key)`` entry, in one transaction; one outcome each,
    in order.

    An entry whose params do not fit (``InvalidParams``) or whose key started a run of another
    workflow (``Conflict``) gets that error and starts nothing; the others start (with
    ``all_or_nothing`` the first error is raised instead and nothing starts). A key that started a
    run before gives that run back (``created`` False); a key repeated within the entries gives
    the run of its first entry. Every new run and its first messages commit together.
    ``documents``: also the run documents (``get_run``'s JSON), read in the same transaction.
    ``audit``: the action's audit row, written in the same transaction when no entry was refused
    (with the run as its target when there is one entry); the caller records a refusal itself.

    Raises:
        NotFound: no such workflow (version): no entry can start.
    """
    if not entries:
        return []
    for attempt in range(3):
        try:
            with ctx.engine.begin() as conn:
                outcomes = _start_many(ctx, conn, workflow, entries, version, scheduled_at, parent_run_id,
                                       backfill_id, all_or_nothing, documents)
                if audit is not None and all(o.error is None for o in outcomes):
                    write_audit(ctx, conn, _audited(audit, outcomes))
                return outcomes
        except IntegrityError:
            # A concurrent start with one of the keys committed first: the next attempt finds its
            # run (the keys' unique index is the only constraint a start can break).
            if attempt == 2 or not any(key for _, key in entries):
                raise
    raise AssertionError("unreachable")


def _audited(audit: AuditRecord, outcomes: Sequence[StartOutcome]) -> AuditRecord:
    if len(outcomes) != 1 or outcomes[0].run_id is None:
        return audit
    run_id = str(outcomes[0].run_id)
    return replace(audit, run_id=run_id, target=f"run {run_id}")


def _start_many(
    ctx: StoreContext,
    conn: Connection,
    workflow: str,
    entries: Sequence[tuple[dict[str, Any] | None, str | None]],
    version: int | None,
    scheduled_at: datetime | None,
    parent_run_id: str | None,
    backfill_id: str | None,
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
                row = run_row(spec, found, params, key, scheduled_at, parent_run_id, now, backfill_id=backfill_id)
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
    planned: dict[str, list[dict[str, Any]]] = {}
    if fresh:
        # Planned before they are inserted: each run goes in once, already running (see
        # ``Writes.new_runs``), with its first tasks and their outbox messages.
        # NOTIFY with the flush: a coordinator relays the first steps now, not at its next poll.
        writes = Writes(new_runs=dict(fresh), notify_outbox=ctx.is_postgres)
        plan_runs(ctx, conn, fresh, writes, now, task_rows=planned)
        if writes.notify_outbox:  # nothing was left to flush with it
            notify_outbox(ctx, conn)
        insert_search_keys(conn, fresh.values())
    if documents:
        # New runs from memory (what was just written); runs of keys used before from the database.
        docs = run_documents(ctx, conn, [o.run_id for o in outcomes if o.run_id and o.run_id not in fresh])
        for outcome in outcomes:
            if outcome.run_id in fresh:
                run = fresh[outcome.run_id]
                rows = sorted(planned.get(outcome.run_id, []), key=lambda r: (r["created_at"], r["id"]))
                outcome.document = run_document(spec_of(ctx, conn, run["workflow_version_id"]), run, rows)
            elif outcome.run_id:
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
