"""API tokens and dashboard users on the real PostgreSQL: roles per route, revocation, read access,
the `flow token` / `flow user` commands, and what is stored (hashes only)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from engine.core.errors import Conflict, InvalidParams, NotFound
from engine.settings import Settings
from engine.store import Store, db
from engine.store.auth import TokenIdentity
from engine.store.models import ApiToken, User
from flow.cli.main import main
from web import create_app
from tests.addresses import client_from_new_address
from web.api.openapi import api_routes

pytestmark = pytest.mark.integration

BOOTSTRAP = "bootstrap-admin-token"
NOOP = """flow 1

workflow {name}() {{
  step only: noop {{}}
}}
"""


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database(postgres_url: str) -> str:
    db.upgrade(postgres_url)
    return postgres_url


@pytest.fixture(scope="module")
def store(database: str) -> Iterator[Store]:
    engine = db.make_engine(database)
    yield Store(engine)
    engine.dispose()


def make_app(store: Store, **settings: Any) -> Flask:
    values: dict[str, Any] = {"api_token": BOOTSTRAP}
    values.update(settings)
    return create_app({"TESTING": True}, store=store,
                      settings=Settings(database_url=str(store.engine.url), broker_url="memory://", **values))


@pytest.fixture
def app(store: Store) -> Flask:
    return make_app(store)


@pytest.fixture(scope="module")
def tokens(store: Store) -> dict[str, str]:
    """One stored token per role, and one revoked operator token."""
    made = {role: store.create_token(f"test {role}", role)[1] for role in ("viewer", "operator", "admin")}
    revoked_id, made["revoked"] = store.create_token("test revoked", "operator")
    store.revoke_token(revoked_id)
    return made


def mutating_routes(app: Flask, least_role: str = "viewer") -> list[tuple[str, str]]:
    """``(method, path)`` of every POST/DELETE route whose role is at least ``least_role``."""
    rank = {"viewer": 1, "operator": 2, "admin": 3}
    routes = []
    for rule, method, _endpoint, record in api_routes(app):
        if method in ("POST", "DELETE", "PUT", "PATCH") and rank.get(record.role, 3) >= rank[least_role]:
            path = (rule.replace("<int:version>", "1").replace("<name>", "greet")
                    .replace("<task_id>", "x").replace("<run_id>", "x").replace("<letter_id>", "x"))
            routes.append((method, path))
    return routes


def assert_error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    assert response.json["error"]["code"] == code
    return str(response.json["error"]["message"])


# -- every mutation ----------------------------------------------------------------------------


def test_every_mutation_refuses_missing_wrong_and_revoked_tokens(app: Flask, tokens: dict[str, str]) -> None:
    routes = mutating_routes(app)
    assert len(routes) >= 13
    refused = ({}, bearer("wrong"), bearer("flow_" + "x" * 43), bearer(tokens["revoked"]), {"Authorization": BOOTSTRAP})
    for method, path in routes:
        # A fresh address per route: past 20 wrong tokens from one address the answer is 429
        # (tests/integration/test_throttle.py).
        client = client_from_new_address(app)
        for headers in refused:
            response = client.open(path, method=method, json={}, headers=headers)
            message = assert_error(response, 401, "unauthorized")
            assert tokens["revoked"] not in message and BOOTSTRAP not in message
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_every_mutation_refuses_a_viewer_token_with_403(app: Flask, tokens: dict[str, str]) -> None:
    client = app.test_client()
    # Checking a workflow's source is a POST that changes nothing: viewers may do it.
    assert set(mutating_routes(app)) - set(mutating_routes(app, "operator")) == {("POST", "/api/workflows/check")}
    for method, path in mutating_routes(app, "operator"):
        response = client.open(path, method=method, json={}, headers=bearer(tokens["viewer"]))
        message = assert_error(response, 403, "forbidden")
        assert "viewer" in message


# -- roles ---------------------------------------------------------------------------------------


def test_operator_starts_retries_and_cancels_but_cannot_deploy(app: Flask, tokens: dict[str, str]) -> None:
    client = app.test_client()
    operator, admin = bearer(tokens["operator"]), bearer(tokens["admin"])
    name = unique("noop")
    source = {"source": NOOP.format(name=name)}
    # Given a workflow an admin (a stored admin token) deployed
    assert_error(client.post("/api/workflows", json=source, headers=operator), 403, "forbidden")
    assert client.post("/api/workflows", json=source, headers=admin).status_code == 201
    # When the operator starts, retries and cancels a run
    started = client.post(f"/api/workflows/{name}/runs", json={}, headers=operator)
    assert started.status_code == 201, started.json
    run_id = started.json["id"]
    # Then each is allowed (a running run cannot be retried: 409, not 403)
    assert_error(client.post(f"/api/runs/{run_id}/retry", headers=operator), 409, "illegal_transition")
    cancelled = client.post(f"/api/runs/{run_id}/cancel", headers=operator)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    task = client.post("/api/task", json={"type": "data_processing", "payload": {}}, headers=operator)
    assert task.status_code == 201
    # And schedules stay with admins
    scheduled = {"type": "data_processing", "payload": {}, "scheduledAt": "2099-01-01T00:00:00Z"}
    assert_error(client.post("/api/scheduler/tasks/scheduled", json=scheduled, headers=operator), 403, "forbidden")
    assert client.post("/api/scheduler/tasks/scheduled", json=scheduled, headers=admin).status_code == 201


def test_the_bootstrap_token_is_admin(app: Flask) -> None:
    client = app.test_client()
    response = client.post("/api/workflows", json={"source": NOOP.format(name=unique("boot"))},
                           headers=bearer(BOOTSTRAP))
    assert response.status_code == 201


# -- reads -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/runs", "/api/workflows", "/api/dead-letters", "/api/queue-manager/status"])
def test_reads_need_a_token_unless_opened(store: Store, tokens: dict[str, str], path: str) -> None:
    client = make_app(store).test_client()
    assert_error(client.get(path), 401, "unauthorized")
    assert_error(client.get(path, headers=bearer(tokens["revoked"])), 401, "unauthorized")
    assert client.get(path, headers=bearer(tokens["viewer"])).status_code == 200
    assert client.get("/api/health").status_code in (200, 503)  # public; the broker check may fail here
    assert client.get("/api/openapi.json").status_code == 200

    opened = make_app(store, api_open_reads=True).test_client()
    assert opened.get(path).status_code == 200


def test_open_reads_come_from_the_environment() -> None:
    assert Settings.from_env({}).api_open_reads is False
    assert Settings.from_env({"FLOW_API_OPEN_READS": "true"}).api_open_reads is True
    assert Settings.from_env({"FLOW_API_READ_AUTH": "false"}).api_open_reads is True  # the older spelling


def test_stored_tokens_work_without_a_bootstrap_token(store: Store, tokens: dict[str, str]) -> None:
    client = make_app(store, api_token=None).test_client()
    message = assert_error(client.post("/api/task", json={"type": "data_processing"}), 401, "unauthorized")
    assert "FLOW_API_TOKEN" in message and "flow token create" in message
    created = client.post("/api/task", json={"type": "data_processing", "payload": {}},
                          headers=bearer(tokens["operator"]))
    assert created.status_code == 201


def test_the_embedded_default_stays_open_but_checks_a_token_it_is_sent(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'flow.db'}", broker_url="memory://")
    app = create_app({"TESTING": True}, settings=settings)
    client = app.test_client()
    body = {"type": "data_processing", "payload": {}}
    assert client.get("/api/runs").status_code == 200
    assert client.post("/api/task", json=body).status_code == 201
    viewer = app.extensions["flow"].store.create_token("laptop", "viewer")[1]
    assert_error(client.post("/api/task", json=body, headers=bearer(viewer)), 403, "forbidden")
    app.extensions["flow"].db.dispose()


# -- what is stored ------------------------------------------------------------------------------


def test_tokens_are_stored_hashed_and_listed_by_prefix(store: Store) -> None:
    token_id, token = store.create_token("hashed", "viewer")
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(ApiToken).where(ApiToken.id == token_id)).mappings().one()
    assert token not in json.dumps({k: str(v) for k, v in row.items()})
    assert len(row["token_hash"]) == 64
    listed = next(t for t in store.list_tokens() if t["id"] == token_id)
    assert listed["prefix"] and token.startswith(listed["prefix"]) and len(listed["prefix"]) < 16
    assert "token_hash" not in listed and token not in json.dumps(listed)
    assert listed["last_used_at"] is None
    assert store.authenticate_token(token) == TokenIdentity(name="hashed", role="viewer")
    assert next(t for t in store.list_tokens() if t["id"] == token_id)["last_used_at"] is not None
    with pytest.raises(InvalidParams):
        store.create_token("bad role", "root")
    with pytest.raises(NotFound):
        store.revoke_token(str(uuid.uuid4()))


def test_token_cli_round_trip(database: str, store: Store) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": database, "BROKER_URL": "memory://", "FLOW_API_TOKEN": ""}
    client = make_app(store).test_client()
    body = {"type": "data_processing", "payload": {}}

    # Given a token made with `flow token create --json`
    created = runner.invoke(main, ["token", "create", "--name", "ci", "--role", "operator", "--json"], env=env)
    assert created.exit_code == 0, created.output
    made = json.loads(created.stdout)
    assert made["role"] == "operator" and made["token"].startswith("flow_")
    # When it is used, it works with its role
    assert client.post("/api/task", json=body, headers=bearer(made["token"])).status_code == 201
    assert_error(client.post("/api/workflows", json={"source": "x"}, headers=bearer(made["token"])), 403, "forbidden")
    # And `flow token list` shows it without the token
    listed = runner.invoke(main, ["token", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert made["token"] not in listed.stdout
    assert any(t["id"] == made["id"] and t["revoked_at"] is None for t in json.loads(listed.stdout))
    text = runner.invoke(main, ["token", "list"], env=env)
    assert made["id"] in text.stdout and made["token"] not in text.stdout
    # Then once revoked it is refused as soon as the revocation's NOTIFY reaches the server (which
    # caches token checks while its listener is up): within milliseconds, 2 s allowed here
    revoked = runner.invoke(main, ["token", "revoke", made["id"]], env=env)
    assert revoked.exit_code == 0, revoked.output
    deadline = time.monotonic() + 2.0
    while client.post("/api/task", json=body, headers=bearer(made["token"])).status_code != 401:
        assert time.monotonic() < deadline, "a revoked token was still accepted 2 s after the revocation"
        time.sleep(0.005)
    assert_error(client.post("/api/task", json=body, headers=bearer(made["token"])), 401, "unauthorized")
    assert_error(client.get("/api/runs", headers=bearer(made["token"])), 401, "unauthorized")
    unknown = runner.invoke(main, ["token", "revoke", str(uuid.uuid4())], env=env)
    assert unknown.exit_code == 1 and "does not exist" in unknown.output


def test_token_create_prints_the_token_alone_on_stdout(database: str, store: Store) -> None:
    result = CliRunner().invoke(main, ["token", "create", "--name", "plain", "--role", "viewer"],
                                env={"DATABASE_URL": database, "BROKER_URL": "memory://"})
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert store.authenticate_token(token) == TokenIdentity(name="plain", role="viewer")
    assert "not shown again" in result.stderr


# -- users -----------------------------------------------------------------------------------------


def test_users_create_authenticate_wrong_password_disabled(store: Store) -> None:
    name = unique("ada")
    user = store.create_user(name, "correct horse", "operator")
    assert (user.username, user.role, user.disabled) == (name, "operator", False)
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(User.password_hash).where(User.username == name)).scalar_one()
    assert "correct horse" not in stored and stored.startswith("scrypt:")

    assert store.authenticate_user(name, "correct horse") == user
    assert store.authenticate_user(name, "wrong horse") is None
    assert store.authenticate_user(unique("nobody"), "correct horse") is None

    store.set_password(name, "battery staple")
    assert store.authenticate_user(name, "correct horse") is None
    assert store.authenticate_user(name, "battery staple") is not None

    store.disable_user(name)
    assert store.authenticate_user(name, "battery staple") is None
    assert next(u for u in store.list_users() if u.username == name).disabled is True

    with pytest.raises(Conflict):
        store.create_user(name, "another password", "viewer")
    with pytest.raises(InvalidParams):
        store.create_user(unique("short"), "short", "viewer")
    with pytest.raises(InvalidParams):
        store.create_user(unique("role"), "long enough", "superuser")
    with pytest.raises(NotFound):
        store.disable_user(unique("ghost"))


def test_user_cli(database: str, store: Store) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": database, "BROKER_URL": "memory://"}
    name = unique("grace")
    created = runner.invoke(main, ["user", "create", name, "--role", "admin", "--password-stdin"],
                            input="s3cret-password\n", env=env)
    assert created.exit_code == 0, created.output
    assert store.authenticate_user(name, "s3cret-password").role == "admin"  # type: ignore[union-attr]

    prompted = runner.invoke(main, ["user", "passwd", name], input="new-password\nnew-password\n", env=env)
    assert prompted.exit_code == 0, prompted.output
    assert "new-password" not in prompted.stdout
    assert store.authenticate_user(name, "new-password") is not None

    mismatch = runner.invoke(main, ["user", "passwd", name], input="one-password\ntwo-password\n", env=env)
    assert mismatch.exit_code != 0
    assert store.authenticate_user(name, "new-password") is not None

    listed = runner.invoke(main, ["user", "list", "--json"], env=env)
    assert {"username": name, "role": "admin", "disabled": False}.items() <= next(
        u for u in json.loads(listed.stdout) if u["username"] == name).items()
    assert "password" not in listed.stdout

    assert runner.invoke(main, ["user", "disable", name], env=env).exit_code == 0
    assert store.authenticate_user(name, "new-password") is None
    taken = runner.invoke(main, ["user", "create", name, "--password-stdin"], input="whatever-pass\n", env=env)
    assert taken.exit_code == 1 and "already exists" in taken.output
