"""Database URLs as users write them (issue 16): ``postgresql://`` and ``postgres://`` get the
psycopg2 driver Flow installs (SQLAlchemy 2.1 would pick psycopg 3, which Flow does not ship), and
a URL whose driver is missing fails with a message that names the fix."""

from __future__ import annotations

import sys

import pytest

from engine.store import db
from engine.settings import Settings, normalize_database_url


@pytest.mark.parametrize("given, expected", [
    ("postgresql://u:p@h:5432/flow", "postgresql+psycopg2://u:p@h:5432/flow"),
    ("postgres://u:p@h:5432/flow", "postgresql+psycopg2://u:p@h:5432/flow"),
    ("POSTGRES://u@h/flow", "postgresql+psycopg2://u@h/flow"),
    ("postgres+psycopg2://u@h/flow", "postgresql+psycopg2://u@h/flow"),
    ("postgresql+psycopg2://u@h/flow", "postgresql+psycopg2://u@h/flow"),
    ("postgresql+psycopg://u@h/flow", "postgresql+psycopg://u@h/flow"),  # explicit: kept
    ("postgresql://u:p%40ss@h/flow?sslmode=require", "postgresql+psycopg2://u:p%40ss@h/flow?sslmode=require"),
    ("sqlite:///.flow/flow.db", "sqlite:///.flow/flow.db"),
    ("sqlite://", "sqlite://"),
    ("mysql://u@h/db", "mysql://u@h/db"),
])
def test_normalize_database_url(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_settings_give_the_shipped_driver(scheme: str) -> None:
    settings = Settings.from_env({"DATABASE_URL": f"{scheme}://flow:secret@db.internal/flow"})
    assert settings.database_url == "postgresql+psycopg2://flow:secret@db.internal/flow"


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_make_engine_uses_psycopg2_for_both_spellings(scheme: str) -> None:
    # A URL can reach make_engine without Settings (Settings(...) built in code, the alembic env).
    engine = db.make_engine(f"{scheme}://flow@127.0.0.1:1/flow")
    try:
        assert engine.dialect.name == "postgresql"
        assert engine.dialect.driver == "psycopg2"
    finally:
        engine.dispose()


def test_a_missing_postgres_driver_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # ``import psycopg`` now fails, installed or not
    with pytest.raises(db.DriverMissing) as caught:
        db.make_engine("postgresql+psycopg://flow@127.0.0.1:1/flow")
    message = str(caught.value)
    assert "psycopg" in message and "not installed" in message
    assert "postgresql+psycopg2://" in message, message  # the URL that works
    assert "pip install 'psycopg[binary]'" in message, message  # or the driver to install


def test_a_missing_driver_of_another_database_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "MySQLdb", None)
    with pytest.raises(db.DriverMissing) as caught:
        db.make_engine("mysql+mysqldb://u@127.0.0.1:1/db")
    message = str(caught.value)
    assert "MySQLdb" in message and "install it" in message
    assert "postgresql+psycopg2://" in message and "sqlite:///" in message
