"""The writes a store transaction collects and sends in a few multi-row statements at its end."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Connection, Table, text

from engine.core.states import TERMINAL_RUN_STATUSES
from engine.store.context import dead_letters, outbox, runs, task_logs, tasks
from engine.store.db import after_commit
from engine.store.listen import RUN_DONE_CHANNEL


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

    # Runs being started, not inserted yet, by id: the planner's first status change (pending ->
    # running) is made on the row in memory, and the row is inserted once, at the first flush, in
    # its planned state (instead of an INSERT and an UPDATE).
    new_runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def flush_new_runs(self, conn: Connection) -> None:
        """Insert the new runs now (before something that points at them)."""
        if self.new_runs:
            conn.execute(runs.insert(), list(self.new_runs.values()))
            self.new_runs.clear()

    # Set by a start: ``NOTIFY flow_outbox`` with the flush (the relay publishes the new runs' first
    # messages at once).
    notify_outbox: bool = False

    def flush(self, conn: Connection) -> None:
        for callback in self.after_commit:
            after_commit(conn, callback)
        self.after_commit.clear()
        if conn.dialect.name == "postgresql" and not self.dead_letters and self._together():
            self._flush_together(conn)
            return
        self.flush_new_runs(conn)
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
        if self.notify_outbox and conn.dialect.name == "postgresql":
            conn.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))
            self.notify_outbox = False

    def _together(self) -> bool:
        """Whether ``_flush_together`` can take the buffered rows: some, not too many, and each
        table's rows with the same columns."""
        lists = (list(self.new_runs.values()), self.tasks, self.logs, self.outbox)
        if not 0 < sum(len(rows) for rows in lists) <= TOGETHER_MAX:
            return False
        for rows in lists:
            if rows:
                keys = rows[0].keys()
                if any(row.keys() != keys for row in rows):
                    return False
        return True

    def _flush_together(self, conn: Connection) -> None:
        """PostgreSQL: every buffered write in one statement, one round trip instead of one per
        table: an ``INSERT ... SELECT FROM jsonb_populate_recordset`` per table and the runs'
        ``UPDATE ... FROM jsonb_to_recordset`` as CTEs (the foreign keys are checked at the end of
        the statement, when the runs are in), and the notifications as ``pg_notify`` calls. Rows go
        as JSON documents; a JSON column's None is stored as JSON ``null``, as SQLAlchemy's ``JSON``
        type stores it."""
        ctes: list[str] = []
        params: dict[str, Any] = {}
        counts: list[str] = []
        for name, table, rows in (("r", runs, list(self.new_runs.values())), ("t", tasks, self.tasks),
                                  ("l", task_logs, self.logs), ("o", outbox, self.outbox)):
            if not rows:
                continue
            keys = list(rows[0])
            tail = " RETURNING id" if name == "o" else ""
            ctes.append(f"{name} AS (INSERT INTO {table.name} ({', '.join(keys)}) SELECT {_columns(table, keys)} "
                        f"FROM jsonb_populate_recordset(NULL::{table.name}, CAST(:{name} AS jsonb)){tail})")
            params[name] = json.dumps(rows, default=_json_default)
        expected = 0
        for index, (keys, data) in enumerate(_run_update_groups(self.run_updates).items()):
            name = f"u{index}"
            ctes.append(f"{name} AS ({_run_update_sql(keys, name)} RETURNING r.id, r.status)")
            params[name] = json.dumps(data)
            counts.append(f"(SELECT count(*) FROM {name})")
            counts.append(f"(SELECT count(pg_notify('{RUN_DONE_CHANNEL}', id)) FROM {name} "
                          f"WHERE status IN ({_TERMINAL_SQL}))")
            expected += len(data)
        selected = [f"(SELECT array_agg(id ORDER BY id) FROM o)" if "o" in params else "NULL",
                    " + ".join(c for i, c in enumerate(counts) if i % 2 == 0) or "0",
                    *(c for i, c in enumerate(counts) if i % 2 == 1)]
        if self.notify_outbox:
            selected.append(f"pg_notify('{OUTBOX_CHANNEL}', '')")
        row = conn.execute(text("WITH " + ", ".join(ctes) + " SELECT " + ", ".join(selected)), params).one()
        if row[0]:
            self.outbox_ids.extend(row[0])
        if int(row[1]) != expected:
            # Runs are locked by the transaction: this is a bug, not a race. Roll back.
            raise RuntimeError(f"run status compare-and-set failed for {expected - int(row[1])} of "
                               f"{expected} locked runs")
        self.new_runs.clear()
        self.tasks.clear()
        self.logs.clear()
        self.outbox.clear()
        self.run_updates.clear()
        self.notify_outbox = False


# A flush of at most this many rows goes in one statement (PostgreSQL); larger ones keep
# SQLAlchemy's multi-row inserts (a few round trips for thousands of rows).
TOGETHER_MAX = 5000
# The outbox relay's channel (``engine.store.outbox.OUTBOX_CHANNEL``; repeated here, below it).
OUTBOX_CHANNEL = "flow_outbox"
_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_RUN_STATUSES, key=lambda s: s.value))


def _columns(table: Table, keys: list[str]) -> str:
    return ", ".join(f"COALESCE({k}, 'null'::jsonb)" if isinstance(table.c[k].type, JSON) else k for k in keys)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_RUN_UPDATE_TYPES = {
    "status": "text", "updated_at": "timestamptz", "started_at": "timestamptz",
    "finished_at": "timestamptz", "output": "jsonb", "error": "jsonb",
}


def _run_update_groups(updates: dict[str, dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for run_id, update_ in updates.items():
        values = update_["values"]
        keys = tuple(sorted(values))
        groups.setdefault(keys, []).append({
            "id": run_id, "expected": update_["expected"],
            **{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in values.items()},
        })
    return groups


def _run_update_sql(keys: tuple[str, ...], param: str) -> str:
    return ("UPDATE runs AS r SET " + ", ".join(f"{k} = v.{k}" for k in keys)
            + f" FROM jsonb_to_recordset(CAST(:{param} AS jsonb)) AS v(id text, expected text, "
            + ", ".join(f"{k} {_RUN_UPDATE_TYPES[k]}" for k in keys)
            + ") WHERE r.id = v.id AND r.status = v.expected")


def flush_run_updates(conn: Connection, updates: dict[str, dict[str, Any]]) -> None:
    """Apply buffered run status changes: one ``UPDATE ... FROM jsonb_to_recordset`` per set of
    changed columns (normally one for the whole batch), with the compare-and-set on the status;
    runs that ended are announced on ``flow_run_done`` (delivered at commit)."""
    for keys, rows in _run_update_groups(updates).items():
        statement = text(
            f"WITH u AS ({_run_update_sql(keys, 'data')} RETURNING r.id, r.status) SELECT (SELECT count(*) FROM u), "
            f"(SELECT count(pg_notify('{RUN_DONE_CHANNEL}', id)) FROM u WHERE status IN ({_TERMINAL_SQL}))"
        )
        changed = int(conn.execute(statement, {"data": json.dumps(rows)}).one()[0])
        if changed != len(rows):
            # Runs are locked by the transaction: this is a bug, not a race. Roll back.
            raise RuntimeError(f"run status compare-and-set failed for {len(rows) - changed} of "
                               f"{len(rows)} locked runs")
