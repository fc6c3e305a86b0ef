"""The migrated schema equals the models, on PostgreSQL and on SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

from engine.store import db
from engine.store.models import Base

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_engine(request: pytest.FixtureRequest, tmp_path, postgres_url: str) -> Iterator[Engine]:
    """An engine on an empty database: a fresh schema on PostgreSQL, a new file on SQLite."""
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'data' / 'flow.db'}")
        yield engine
        engine.dispose()
        return
    schema = f"m_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = db.make_engine(postgres_url, connect_args={"options": f"-csearch_path={schema}"})
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def test_upgrade_gives_the_schema_of_the_models(empty_engine: Engine) -> None:
    assert db.current_revision(empty_engine) is None
    assert not db.is_up_to_date(empty_engine)

    db.upgrade(empty_engine)

    assert db.current_revision(empty_engine) == db.head_revision()
    assert db.is_up_to_date(empty_engine)
    with empty_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(context, Base.metadata)
    assert diffs == []


def test_upgrade_twice_is_a_no_op(empty_engine: Engine) -> None:
    db.upgrade(empty_engine)
    db.upgrade(empty_engine)
    assert db.is_up_to_date(empty_engine)


def test_upgrade_accepts_a_url(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'dir' / 'flow.db'}"
    db.upgrade(url)
    assert db.is_up_to_date(url)
