"""Fixtures shared by the store-level integration tests: a migrated database per test, on
PostgreSQL (its own schema in the session's database) and on SQLite (a new file), and a clock the
test moves by hand."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from engine.store import db


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
