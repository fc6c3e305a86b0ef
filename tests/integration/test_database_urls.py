"""A fresh install's URLs on the real PostgreSQL (issue 16): ``flow db upgrade`` with
``DATABASE_URL=postgresql://...`` and ``postgres://...`` (no driver named, as hosting providers hand
them out) migrates the database; a driver that is not installed fails with the fix in the message."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from engine.store import db
from tests.faults.harness import ROOT, flow_cmd

pytestmark = pytest.mark.integration


def _bare(url: str) -> str:
    """The session's ``postgresql+psycopg2://`` URL without its driver."""
    assert url.startswith("postgresql+psycopg2://"), url
    return "postgresql://" + url.split("://", 1)[1]


@pytest.fixture
def schema(postgres_url: str) -> Iterator[str]:
    """An empty schema in the session's database, dropped afterwards."""
    name = f"u_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    yield name
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    admin.dispose()


def _flow(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "FLOW_", "DATABASE_URL"))}
    env.update(DATABASE_URL=database_url, PYTHONPATH=str(ROOT))
    return subprocess.run(flow_cmd(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_flow_db_upgrade_with_a_url_that_names_no_driver(postgres_url: str, schema: str, scheme: str) -> None:
    url = _bare(postgres_url).replace("postgresql://", f"{scheme}://", 1) + f"?options=-csearch_path%3D{schema}"
    done = _flow(url, "db", "upgrade")
    assert done.returncode == 0, done.stderr + done.stdout
    assert f"is at revision {db.head_revision()}" in done.stdout
    assert "No module named" not in done.stderr

    check = db.make_engine(postgres_url, connect_args={"options": f"-csearch_path={schema}"})
    try:
        assert db.current_revision(check) == db.head_revision()
        with check.connect() as conn:
            tables = set(conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s"), {"s": schema}).scalars())
        assert {"runs", "tasks", "outbox", "workflow_versions"} <= tables, tables
    finally:
        check.dispose()

    again = _flow(url, "db", "upgrade")  # safe to run again, same spelling
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_make_engine_connects_with_both_spellings(postgres_url: str, scheme: str) -> None:
    engine = db.make_engine(_bare(postgres_url).replace("postgresql://", f"{scheme}://", 1))
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        assert engine.dialect.driver == "psycopg2"
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", [("db", "upgrade"), ("deploy", "workflows/hello.flow")])
def test_a_missing_driver_names_the_fix(postgres_url: str, command: tuple[str, ...]) -> None:
    # psycopg 3 is not a dependency of Flow; make sure it cannot be imported in the child.
    url = _bare(postgres_url).replace("postgresql://", "postgresql+psycopg://", 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "FLOW_", "DATABASE_URL"))}
    env.update(DATABASE_URL=url, PYTHONPATH=str(ROOT))
    cmd = flow_cmd(*command)
    code = cmd.index("-c") + 1
    cmd[code] = "import sys; sys.modules['psycopg'] = None; " + cmd[code]
    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "No module named 'psycopg'" in done.stderr, done.stderr
    assert "postgresql+psycopg2://" in done.stderr and "pip install" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
