"""What every store module shares: the table handles, the value types the store returns, the
transaction context, ids and time.

The writes a transaction collects are ``engine.store.writes``; the task-row helpers
``engine.store.task_rows``.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from sqlalchemy import Connection, Engine, Select, Table

from dsl.spec import WorkflowSpec
from engine.store.listen import Listener, LocalBus, listener_for
from engine.store.models import (
    DeadLetter,
    Outbox,
    Run,
    RunSearchKey,
    Task,
    TaskLog,
    WorkflowVersion,
)

log = logging.getLogger("flow.store")

# The store writes through SQLAlchemy Core on the models' tables: batches of plain dicts, no ORM
# identity map to grow or flush.
runs = cast(Table, Run.__table__)
run_search_keys = cast(Table, RunSearchKey.__table__)
tasks = cast(Table, Task.__table__)
task_logs = cast(Table, TaskLog.__table__)
outbox = cast(Table, Outbox.__table__)
dead_letters = cast(Table, DeadLetter.__table__)
versions = cast(Table, WorkflowVersion.__table__)

# Statements with ``IN (...)`` are cut into chunks: PostgreSQL and SQLite limit bound parameters.
CHUNK = 900
# How long past its lease (the last report of its worker) a silent worker loses its task.
LEASE_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class DeployedVersion:
    name: str
    version: int
    created: bool


@dataclass(frozen=True)
class BatchOutcome:
    """What one transaction did: transitions ``applied``, results ``dropped`` (late or duplicate),
    and the runs it re-planned."""

    applied: int = 0
    dropped: int = 0
    runs_touched: tuple[str, ...] = ()
    # Outbox rows the transaction committed, for the coordinator to publish at once (may be
    # empty where the dialect does not return ids; the relay publishes those).
    outbox_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class OutboxMessage:
    id: int
    exchange: str
    routing_key: str
    body: str
    headers: dict[str, Any]


@dataclass
class StoreContext:
    """The store's configuration, shared by its modules (no connection: one per transaction)."""

    engine: Engine
    clock: Callable[[], float]
    rng: random.Random | None
    lease_seconds: float
    # Lease expiries of one attempt before it counts as a failed attempt (FLOW_MAX_DELIVERIES).
    max_deliveries: int = 5
    # Compiled specs by workflow version id: a version never changes once deployed.
    specs: dict[str, WorkflowSpec] = field(default_factory=dict)
    # The database notifications of a server process (``engine.store.listen``), made on first use.
    _listener: Any = None
    # Active tokens checked before, by hash (``engine.store.auth``): only while the listener is
    # healthy, dropped on every revocation.
    token_cache: dict[str, Any] = field(default_factory=dict)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def notifications(self) -> Listener | LocalBus:
        """The listener of this store (started): PostgreSQL ``LISTEN``, or the in-process bus."""
        if self._listener is None:
            listener = listener_for(self.engine)
            if self._listener is None:
                self._listener = listener
                listener.start()
        return self._listener  # type: ignore[no-any-return]

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=timezone.utc)




def new_id() -> str:
    return str(uuid.uuid4())


def aware(value: datetime | None) -> datetime | None:
    """SQLite gives timestamps back without an offset; every timestamp we write is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    value = aware(value)
    return value.isoformat() if value is not None else None


def to_datetime(value: datetime | float | int | str | None) -> datetime | None:
    """Accept a datetime, epoch seconds or an ISO string (as the API and the scheduler pass them)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return aware(value)
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    return aware(datetime.fromisoformat(value))


def after(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def select_in(statement: Select[Any], column: Any, ids: Iterable[str], conn: Connection) -> list[Any]:
    """Rows of ``statement`` whose ``column`` is in ``ids``, in chunks."""
    wanted = list(dict.fromkeys(ids))
    rows: list[Any] = []
    for part in chunks(wanted):
        rows.extend(conn.execute(statement.where(column.in_(part))).mappings().all())
    return rows


