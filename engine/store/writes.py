"""The writes a store transaction collects and sends in a few multi-row statements at its end."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from engine.store.context import dead_letters, outbox, task_logs, tasks
from engine.store.db import after_commit


@dataclass
class Writes:
    """Inserts collected during a transaction and sent in a few multi-row statements at the end.

    Flushed in foreign-key order (tasks before the logs and dead letters that point at them).
    """

    tasks: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    # Ids of the outbox rows flushed so far (where the dialect returns them from a multi-row
    # insert): the coordinator publishes them right after the commit (``engine.store.outbox.publish_ids``).
    outbox_ids: list[int] = field(default_factory=list)
    # Run status changes of the planner, by run id: applied in one statement at the flush
    # (``flush_run_updates``; PostgreSQL only).
    run_updates: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Side effects for after the commit (metrics counters): handed to ``db.after_commit`` at the
    # flush, so that a transaction that rolls back (and is retried) counts nothing.
    after_commit: list[Callable[[], None]] = field(default_factory=list)

    def flush(self, conn: Connection) -> None:
        for callback in self.after_commit:
            after_commit(conn, callback)
        self.after_commit.clear()
        for table, rows in (
            (tasks, self.tasks),
            (dead_letters, self.dead_letters),
            (task_logs, self.logs),
        ):
            if rows:
                conn.execute(table.insert(), rows)
                rows.clear()
        if self.outbox:
            if conn.dialect.insert_executemany_returning:
                statement = outbox.insert().returning(outbox.c.id, sort_by_parameter_order=True)
                self.outbox_ids.extend(conn.execute(statement, self.outbox).scalars())
            else:
                conn.execute(outbox.insert(), self.outbox)
            self.outbox.clear()
        if self.run_updates:
            flush_run_updates(conn, self.run_updates)
            self.run_updates.clear()


_RUN_UPDATE_TYPES = {
    "status": "text", "updated_at": "timestamptz", "started_at": "timestamptz",
    "finished_at": "timestamptz", "output": "jsonb", "error": "jsonb",
}


def flush_run_updates(conn: Connection, updates: dict[str, dict[str, Any]]) -> None:
    """Apply buffered run status changes: one ``UPDATE ... FROM jsonb_to_recordset`` per set of
    changed columns (normally one for the whole batch), with the compare-and-set on the status."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for run_id, update_ in updates.items():
        values = update_["values"]
        keys = tuple(sorted(values))
        groups.setdefault(keys, []).append({
            "id": run_id, "expected": update_["expected"],
            **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()},
        })
    for keys, rows in groups.items():
        statement = text(
            "UPDATE runs AS r SET " + ", ".join(f"{k} = v.{k}" for k in keys)
            + " FROM jsonb_to_recordset(CAST(:data AS jsonb)) AS v(id text, expected text, "
            + ", ".join(f"{k} {_RUN_UPDATE_TYPES[k]}" for k in keys)
            + ") WHERE r.id = v.id AND r.status = v.expected RETURNING r.id"
        )
        changed = conn.execute(statement, {"data": json.dumps(rows)}).scalars().all()
        if len(changed) != len(rows):
            # Runs are locked by the transaction: this is a bug, not a race. Roll back.
            raise RuntimeError(f"run status compare-and-set failed for {len(rows) - len(changed)} of "
                               f"{len(rows)} locked runs")
