"""Shared fixtures. Integration tests talk to the real PostgreSQL and RabbitMQ of the machine.

Under ``CI=true`` a missing service fails the test; on a laptop without the services it skips.
Each test session gets its own PostgreSQL database and its own RabbitMQ virtual host, so that
parallel sessions and leftovers of earlier runs never interfere.
"""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from tests import servers

PG_ADMIN_URL = os.environ.get("FLOW_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_HOST = os.environ.get("FLOW_TEST_AMQP_HOST", "127.0.0.1:5672")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


# -- the servers' safety net (tests/servers.py) ---------------------------------------------------
# The fault suite may stop RabbitMQ or restart PostgreSQL; whatever it leaves behind, the servers
# that answered when the session started answer again before the next test runs.

_NET = servers.default_net()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "disrupts_servers: may stop PostgreSQL or RabbitMQ (the safety net "
                                       "checks and restarts them after the test)")


def _may_stop_servers(item: pytest.Item) -> bool:
    path = os.path.relpath(str(item.path), str(item.config.rootpath))
    return servers.may_stop_servers(path, [m.name for m in item.iter_markers()])


def pytest_collection_finish(session: pytest.Session) -> None:
    # Which servers answer now, before any test ran; only a session with a disrupting test asks.
    if any(_may_stop_servers(item) for item in session.items):
        _NET.session_started()


def _say(config: pytest.Config, line: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line, yellow=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    # Before the test's fixtures are torn down (the session's database is dropped with the last one);
    # a server that cannot be started is this test's teardown error, after its fixtures ran.
    down: servers.ServerDown | None = None
    if _may_stop_servers(item):
        try:
            started = _NET.check()
        except servers.ServerDown as exc:
            down, started = exc, []
        if started:
            _say(item.config, f"\n{item.nodeid}: {', '.join(started)} did not answer after the test; started again")
    result = yield
    if down is not None:
        raise down
    return result


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    try:
        started = _NET.check()
    except servers.ServerDown as exc:
        _say(session.config, f"\nthe session leaves a server down: {exc}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        return
    if started:
        _say(session.config, f"\n{', '.join(started)} did not answer at the end of the session; started again")


def _unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} is not reachable ({exc}); start it (see .ci/run) to run this test"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """URL of a fresh PostgreSQL database for this test session, dropped at the end."""
    import psycopg2

    name = f"flow_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
    except psycopg2.OperationalError as exc:
        _unavailable("PostgreSQL", exc)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base.replace('postgresql://', 'postgresql+psycopg2://', 1)}/{name}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except psycopg2.OperationalError:
        # The server was restarted meanwhile (tests/faults, FLOW_FAULTS_DISRUPTIVE): a new connection.
        admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=30)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """URL of a fresh RabbitMQ virtual host for this test session, deleted at the end."""
    import kombu

    vhost = f"flow_test_{uuid.uuid4().hex[:10]}"
    try:
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True, timeout=60)
        subprocess.run(
            ["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True, capture_output=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        _unavailable("RabbitMQ (rabbitmqctl)", exc)
    url = f"amqp://guest:guest@{AMQP_HOST}/{vhost}"
    try:
        with kombu.Connection(url, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=2)
    except Exception as exc:  # kombu raises several unrelated types for "cannot connect"
        _unavailable("RabbitMQ", exc)
    yield url
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


# -- test clients from addresses of their own -------------------------------------------------------
# The login throttle counts failures per client address in the database, which the tests of a
# session share; with every test client at 127.0.0.1, the wrong tokens and passwords that tests send
# on purpose would add up and turn later answers into 429.


@pytest.fixture(autouse=True)
def _fresh_client_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask

    from tests.addresses import FreshAddressClient

    monkeypatch.setattr(Flask, "test_client_class", FreshAddressClient)
