"""The embedded database of workflow tests: in memory, reset to a snapshot before every test.

Running the migrations and compiling the workflows cost far more than a test, so they are done
once per set of `.flow` sources, into a snapshot; each test starts from a copy of it (SQLite's
backup API, in memory: well under a millisecond). The tests share one engine, so SQLAlchemy
compiles each statement once for all of them.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence

from sqlalchemy import Engine
from sqlalchemy.pool import StaticPool

from engine.store import Store
from engine.store.db import make_engine, upgrade
from flow.testing.clock import DEFAULT_START


def _memory_engine(connection: sqlite3.Connection) -> Engine:
    # One connection for the engine's whole life: an in-memory database is gone once it closes.
    return make_engine("sqlite://", poolclass=StaticPool, creator=lambda: connection)


class Sandbox:
    """One in-memory database that each test resets to the snapshot of the workflows it runs."""

    def __init__(self) -> None:
        self._connection = sqlite3.connect(":memory:", check_same_thread=False)
        self.engine = _memory_engine(self._connection)
        self._migrated: sqlite3.Connection | None = None
        self._snapshots: dict[str, sqlite3.Connection] = {}

    def reset(self, sources: Sequence[tuple[str, str]]) -> None:
        """Make the database the migrated schema with ``sources`` (``(filename, text)``) deployed.

        Raises ``dsl.FlowError`` (via ``Store.deploy``) when a source does not compile."""
        snapshot = self._snapshot(sources)
        # Every store transaction has ended (each method is one), so nothing is open on it.
        snapshot.backup(self._connection)

    def close(self) -> None:
        self.engine.dispose()
        for snapshot in self._snapshots.values():
            snapshot.close()
        self._connection.close()

    def _snapshot(self, sources: Sequence[tuple[str, str]]) -> sqlite3.Connection:
        key = hashlib.sha256(repr(sorted(sources)).encode()).hexdigest()
        if key not in self._snapshots:
            snapshot = sqlite3.connect(":memory:", check_same_thread=False)
            self._migrated_schema().backup(snapshot)
            engine = _memory_engine(snapshot)
            store = Store(engine, clock=lambda: DEFAULT_START)
            for filename, text in sources:
                store.deploy(text, filename)
            self._snapshots[key] = snapshot
        return self._snapshots[key]

    def _migrated_schema(self) -> sqlite3.Connection:
        if self._migrated is None:
            migrated = sqlite3.connect(":memory:", check_same_thread=False)
            upgrade(_memory_engine(migrated))
            self._migrated = migrated
        return self._migrated
