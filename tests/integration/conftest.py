"""Fixtures shared by the integration tests: a migrated database per test, on PostgreSQL (its own
schema in the session's database) and on SQLite (a new file), a clock the test moves by hand, the
store on both (``store``), and the store on the session's PostgreSQL database (``pg_store``)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from engine.store import OutboxMessage, Store, db


class Clock:
    """A clock for ``Store(clock=...)`` that only moves when the test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Any, postgres_url: str) -> Iterator[Engine]:
    """A migrated, empty database: its own schema on PostgreSQL, a new file on SQLite."""
    if request.param == "sqlite":
        eng = db.make_engine(f"sqlite:///{tmp_path / 'flow.db'}")
        db.upgrade(eng)
        yield eng
        eng.dispose()
        return
    schema = f"s_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    eng = db.make_engine(postgres_url, connect_args={"options": f"-csearch_path={schema}"})
    db.upgrade(eng)
    yield eng
    eng.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(engine: Engine, clock: Clock) -> Store:
    """A store on ``engine`` (both dialects) with the test's clock and a seeded random source."""
    return Store(engine, clock=clock, rng=random.Random(7), lease_seconds=30.0)


@pytest.fixture(scope="module")
def pg_store(postgres_url: str) -> Iterator[Store]:
    """A store on the session's PostgreSQL database (migrated), shared by a module's tests."""
    db.upgrade(postgres_url)
    engine = db.make_engine(postgres_url)
    yield Store(engine)
    engine.dispose()


def relay(store: Store) -> list[OutboxMessage]:
    """Everything in the outbox, as the broker would receive it."""
    sent: list[OutboxMessage] = []
    while store.relay_outbox(sent.extend, limit=100):
        pass
    return sent
