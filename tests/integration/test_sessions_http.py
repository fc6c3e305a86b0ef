"""Sessions, cookie flags, login throttling, token expiry and the audit trail, over real HTTP.

The app is served by werkzeug's threaded server (as ``flow up`` does, with its JSON error handler)
on the embedded default (SQLite) and on PostgreSQL, with an injected clock so that idle timeouts
and expiries are tested without sleeping. It trusts one proxy (``FLOW_TRUSTED_PROXIES=1``), so each
test's client sends ``X-Forwarded-For`` with an address of its own: the throttle counts per address
in the shared database, and tests must not add up.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from engine.settings import Settings
from engine.store import Store, db
from engine.store.models import DashboardSession, User
from tests.addresses import fresh_address
from web import create_app
from web.wire_errors import JsonErrorRequestHandler

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
ADMIN_TOKEN = "sessions-test-admin-token"
ECHO = """flow 1

workflow {name}(who: string) {{
  step echo: transform {{ input: [params.who], map: "Hello ${{item}}" }}
}}
"""


@dataclass
class Clock:
    """Seconds since the epoch, moved by the test."""

    now: float = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Served:
    url: str
    store: Store
    clock: Clock
    database_url: str
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, address: str | None = None) -> httpx.Client:
        """A client from an address of its own (sent as X-Forwarded-For to the trusted proxy fix)."""
        client = httpx.Client(base_url=self.url, follow_redirects=False, timeout=30,
                              headers={"X-Forwarded-For": address or fresh_address()})
        self.clients.append(client)
        return client

    def user(self, role: str = "operator") -> str:
        username = f"{role}_{uuid.uuid4().hex[:8]}"
        self.store.create_user(username, PASSWORD, role)
        return username


@contextmanager
def serve(database_url: str, clock: Clock, **settings: Any) -> Iterator[Served]:
    from werkzeug.serving import make_server

    values: dict[str, Any] = {"secret_key": "sessions-test-key", "api_token": ADMIN_TOKEN, "trusted_proxies": 1}
    values.update(settings)
    config = Settings(database_url=database_url, broker_url="memory://", **values)
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    store = Store(engine, clock=clock)
    app = create_app({"TESTING": False}, settings=config, store=store)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=JsonErrorRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served = Served(f"http://127.0.0.1:{server.server_port}", store, clock, database_url)
    try:
        yield served
    finally:
        for client in served.clients:
            client.close()
        server.shutdown()
        thread.join(10)
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'flow.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def served(database_url: str) -> Iterator[Served]:
    with serve(database_url, Clock()) as served:
        yield served


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:500]
    return found.group(1)


def post_login(client: httpx.Client, username: str, password: str = PASSWORD) -> httpx.Response:
    token = csrf_of(client.get("/login").text)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def log_in(client: httpx.Client, username: str) -> str:
    """Log in through the form; the CSRF token of the session."""
    response = post_login(client, username)
    assert response.status_code == 303, response.text
    return csrf_of(client.get("/runs").text)


def admin_api(served: Served, path: str, **params: Any) -> Any:
    response = served.client().get(path, params=params, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.json()


# --- cookie flags -----------------------------------------------------------------------------


def test_the_session_cookie_is_named_httponly_and_samesite_lax(served: Served) -> None:
    response = served.client().get("/login")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("flow_session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP, no FLOW_COOKIE_SECURE


def test_the_cookie_is_secure_when_a_trusted_proxy_says_https(served: Served) -> None:
    response = served.client().get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" in response.headers["set-cookie"]


def test_an_untrusted_forwarded_proto_is_ignored_and_the_setting_forces_secure(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flow.db'}"
    with serve(url, Clock(), trusted_proxies=0) as served:
        cookie = served.client().get("/login", headers={"X-Forwarded-Proto": "https"}).headers["set-cookie"]
        assert "Secure" not in cookie
    with serve(url, Clock(), trusted_proxies=0, cookie_secure=True) as served:
        cookie = served.client().get("/login").headers["set-cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_the_cookie_carries_no_user_or_role(served: Served) -> None:
    import base64
    import zlib

    client = served.client()
    username = served.user("admin")
    log_in(client, username)
    raw = client.cookies["flow_session"]
    payload = raw.lstrip(".").split(".")[0]
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    text = (zlib.decompress(data) if raw.startswith(".") else data).decode()
    assert username not in text and "admin" not in text
    assert set(re.findall(r'"(\w+)":', text)) <= {"sid", "csrf_token", "_flashes"}


# --- sessions the server ends -----------------------------------------------------------------


def _disable(served: Served, username: str) -> None:
    served.store.disable_user(username)


def _demote(served: Served, username: str) -> None:
    served.store.set_role(username, "viewer")


def _new_password(served: Served, username: str) -> None:
    served.store.set_password(username, "another password")


def _remove(served: Served, username: str) -> None:
    served.store.delete_user(username)


def _cli_logout(served: Served, username: str) -> None:
    result = CliRunner().invoke(_flow(), ["user", "logout", username],
                                env={"DATABASE_URL": served.database_url, "BROKER_URL": "memory://"})
    assert result.exit_code == 0, result.output
    assert "1 session ended" in result.output


def _flow() -> Any:
    from flow.cli.main import main

    return main


@pytest.mark.parametrize(("change", "reason"), [
    (_disable, "Your account was disabled."),
    (_demote, "Your role changed to viewer"),
    (_new_password, "Your session was ended"),
    (_remove, "Your session ended"),
    (_cli_logout, "Your session was ended"),
])
def test_an_open_session_is_refused_on_its_next_request(served: Served, change: Any, reason: str) -> None:
    # Given alice logged in, with a page open
    client = served.client()
    username = served.user("admin")
    log_in(client, username)
    assert client.get("/runs").status_code == 200
    # When an admin changes her account on the server
    change(served, username)
    # Then her next request goes to the login page, which says why
    refused = client.get("/runs")
    assert refused.status_code == 303 and refused.headers["location"].startswith("/login")
    assert reason in client.get(refused.headers["location"]).text
    # and an htmx request is told to load the login page
    assert client.get("/runs", headers={"HX-Request": "true"}).status_code == 401


def test_an_action_without_a_session_is_refused_and_audited(served: Served) -> None:
    name = f"echo_{uuid.uuid4().hex[:8]}"
    served.store.deploy(ECHO.format(name=name), "echo.flow")
    run_id = served.store.start_run(name, {"who": "x"})
    client = served.client()
    csrf = csrf_of(client.get("/login").text)
    response = client.post(f"/runs/{run_id}/cancel", data={"csrf_token": csrf})
    assert response.status_code == 303 and response.headers["location"].startswith("/login")
    assert served.store.get_run(run_id)["status"] != "cancelled"
    (event,) = admin_api(served, "/api/audit", run_id=run_id)["events"]
    assert (event["actor"], event["action"], event["outcome"]) == ("anonymous", "run.cancel", "refused")


def test_logout_ends_the_session_on_the_server(served: Served) -> None:
    client = served.client()
    log_in(client, served.user())
    saved = client.cookies["flow_session"]
    token = csrf_of(client.get("/runs").text)
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303

    replay = served.client()
    replay.cookies.set("flow_session", saved)
    response = replay.get("/runs")
    assert response.status_code == 303 and response.headers["location"].startswith("/login")


def test_idle_timeout_and_lifetime(database_url: str) -> None:
    with serve(database_url, Clock(), session_idle_seconds=3600, session_lifetime_seconds=7200) as served:
        idle = served.client()
        log_in(idle, served.user())
        served.clock.advance(3601)
        response = idle.get("/runs")
        assert response.status_code == 303
        assert "without activity" in idle.get(response.headers["location"]).text

        busy = served.client()
        log_in(busy, served.user())
        for _ in range(2):  # active every 50 minutes: never idle ...
            served.clock.advance(3000)
            assert busy.get("/runs").status_code == 200
        served.clock.advance(1300)  # ... but past the lifetime of 2 h
        response = busy.get("/runs")
        assert response.status_code == 303
        assert "maximum lifetime" in busy.get(response.headers["location"]).text


def test_last_seen_is_written_at_most_once_a_minute(served: Served) -> None:
    client = served.client()
    username = served.user()
    log_in(client, username)

    def last_seen() -> Any:
        with served.store.engine.connect() as conn:
            return conn.execute(sa.select(DashboardSession.last_seen_at).join(User)
                                .where(User.username == username)).scalar_one()

    first = last_seen()
    served.clock.advance(30)
    client.get("/runs")
    assert last_seen() == first
    served.clock.advance(31)
    client.get("/runs")
    assert last_seen() != first


def test_flow_user_sessions_lists_the_open_sessions(served: Served) -> None:
    username = served.user()
    address = fresh_address()
    log_in(served.client(address), username)
    log_in(served.client(), username)
    env = {"DATABASE_URL": served.database_url, "BROKER_URL": "memory://"}
    result = CliRunner().invoke(_flow(), ["user", "sessions", username, "--json"], env=env)
    assert result.exit_code == 0, result.output
    import json

    listed = json.loads(result.stdout)
    assert len(listed) == 2 and all(s["active"] for s in listed)
    assert address in {s["client_address"] for s in listed}


# --- throttling -------------------------------------------------------------------------------


def test_five_wrong_passwords_for_a_user_then_429_with_retry_after(served: Served) -> None:
    username = served.user()
    client = served.client()
    for _ in range(5):
        assert post_login(client, username, "wrong password").status_code == 401
    # The right password no longer helps, from this address or another one
    for attempt in (client, served.client()):
        response = post_login(attempt, username)
        assert response.status_code == 429
        assert 1 <= int(response.headers["retry-after"]) <= 900
        assert "Too many failed logins" in response.text
    # Fifteen minutes later the user may try again
    served.clock.advance(15 * 60 + 1)
    assert post_login(served.client(), username).status_code == 303


def test_twenty_failures_from_one_address_then_429(served: Served) -> None:
    client = served.client()
    for n in range(20):
        assert post_login(client, f"nobody_{n}_{uuid.uuid4().hex[:6]}", "wrong password").status_code == 401
    response = post_login(client, served.user())
    assert response.status_code == 429 and "retry-after" in response.headers
    assert post_login(served.client(), served.user()).status_code == 303  # other addresses are not held


def test_a_success_resets_the_users_count(served: Served) -> None:
    username = served.user()
    client = served.client()
    for _ in range(4):
        assert post_login(client, username, "wrong password").status_code == 401
    assert post_login(client, username).status_code == 303
    for _ in range(4):
        assert post_login(served.client(), username, "wrong password").status_code == 401
    assert post_login(served.client(), username).status_code == 303


def test_a_burst_of_wrong_tokens_from_one_address_gets_429(served: Served) -> None:
    client = served.client()
    statuses = [client.get("/api/runs", headers={"Authorization": f"Bearer flow_wrong{n}"}).status_code
                for n in range(21)]
    assert statuses[:20] == [401] * 20 and statuses[20] == 429
    last = client.get("/api/runs", headers={"Authorization": "Bearer flow_wrong"})
    assert last.status_code == 429 and int(last.headers["retry-after"]) >= 1
    assert last.json()["error"]["code"] == "too_many_requests"
    # A right token from the same address is still served: it cannot be guessed
    assert client.get("/api/runs", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 200


# --- tokens that expire -----------------------------------------------------------------------


def test_an_expired_token_gets_401_saying_so(served: Served) -> None:
    from datetime import timedelta

    _, token = served.store.create_token("short-lived", "viewer", timedelta(minutes=1))
    client = served.client()
    assert client.get("/api/runs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    served.clock.advance(61)
    response = client.get("/api/runs", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "token_expired" and "expired" in error["message"] and "short-lived" in error["message"]
    listed = next(t for t in served.store.list_tokens() if t["name"] == "short-lived")
    assert listed["expires_at"] is not None and listed["last_used_at"] is not None


# --- audit ------------------------------------------------------------------------------------


def test_every_action_names_who_did_it(served: Served) -> None:
    name = f"echo_{uuid.uuid4().hex[:8]}"
    served.store.deploy(ECHO.format(name=name), "echo.flow")
    first, second = served.store.start_run(name, {"who": "a"}), served.store.start_run(name, {"who": "b"})
    # Given an operator in the dashboard and a client with an operator token
    address = fresh_address()
    browser = served.client(address)
    username = served.user()
    csrf = log_in(browser, username)
    _, token = served.store.create_token("deploy-bot", "operator")
    # When each cancels a run
    assert browser.post(f"/runs/{first}/cancel", data={"csrf_token": csrf}).status_code == 303
    api = served.client()
    assert api.post(f"/api/runs/{second}/cancel", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # and the operator tries to cancel the cancelled run again
    assert browser.post(f"/runs/{first}/cancel", data={"csrf_token": csrf}).status_code == 303
    # Then the audit trail names them, the run, the address and the outcome
    events = admin_api(served, "/api/audit", action="run.cancel")["events"]
    mine = [e for e in events if e["run_id"] in (first, second)]
    assert [(e["actor"], e["via"], e["run_id"], e["outcome"]) for e in mine] == [
        (username, "dashboard", first, "failed"), ("deploy-bot", "api", second, "ok"),
        (username, "dashboard", first, "ok")]
    assert mine[2]["client_address"] == address and mine[2]["target"] == f"run {first}"
    logins = admin_api(served, "/api/audit", actor=username, action="login")["events"]
    assert logins and logins[0]["outcome"] == "ok"
    # and the run page shows who cancelled it
    page = browser.get(f"/runs/{first}").text
    assert "Operator actions" in page and username in page and "run.cancel" in page


def test_the_audit_page_is_for_admins_and_filters(served: Served) -> None:
    operator = served.client()
    operator_name = served.user("operator")
    log_in(operator, operator_name)
    assert operator.get("/audit").status_code == 403
    admin = served.client()
    log_in(admin, served.user("admin"))
    page = admin.get("/audit", params={"actor": operator_name, "action": "login"})
    assert page.status_code == 200 and operator_name in page.text
    assert admin.get("/audit", params={"since": "not a time"}).status_code == 200


def test_api_audit_needs_an_admin_token(served: Served) -> None:
    _, viewer = served.store.create_token("viewer", "viewer")
    client = served.client()
    assert client.get("/api/audit").status_code == 401
    assert client.get("/api/audit", headers={"Authorization": f"Bearer {viewer}"}).status_code == 403
    bad = client.get("/api/audit", params={"limit": "0"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_body"


def test_failed_and_throttled_logins_are_audited(served: Served) -> None:
    username = served.user()
    client = served.client()
    for _ in range(6):
        post_login(client, username, "wrong password")
    outcomes = [e["outcome"] for e in admin_api(served, "/api/audit", actor=username, action="login")["events"]]
    assert outcomes == ["refused"] + ["failed"] * 5


# --- errors are JSON at every layer -----------------------------------------------------------


def _admin(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}", **(headers or {})}


def test_an_unknown_body_field_is_refused_with_422_naming_it(served: Served) -> None:
    name = f"echo_{uuid.uuid4().hex[:8]}"
    served.store.deploy(ECHO.format(name=name), "echo.flow")
    response = served.client().post(f"/api/workflows/{name}/runs", json={"params": {"who": "x"}, "foo": 1},
                                    headers=_admin())
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_field" and "foo" in error["message"] and error["details"]["unknown"] == ["foo"]


def test_a_large_chunked_body_gets_a_json_413(served: Served) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"params": {"who": "'
        for _ in range(160):
            yield b"x" * 65536
        yield b'"}}'

    response = served.client().post("/api/workflows/anything/runs", content=chunks(),
                                    headers=_admin({"Content-Type": "application/json"}))
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "payload_too_large"


def _raw(url: str, request: bytes) -> tuple[int, dict[str, str], Any]:
    """Send ``request`` on a socket (httpx refuses URLs this long); status, headers, JSON body."""
    import json
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in header_lines)}
    return int(status_line.split()[1]), headers, json.loads(body)


def test_the_servers_own_refusals_are_json(served: Served) -> None:
    auth = f"Authorization: Bearer {ADMIN_TOKEN}\r\n".encode()
    status, headers, body = _raw(served.url, b"GET /api/runs?x=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n"
                                 + auth + b"Connection: close\r\n\r\n")
    assert status == 414 and headers["content-type"] == "application/json"
    assert body["error"]["code"] == "uri_too_long"
    status, headers, body = _raw(served.url, b"GET /api/runs HTTP/1.1\r\nHost: x\r\n" + auth
                                 + b"X-Big: " + b"b" * 100_000 + b"\r\nConnection: close\r\n\r\n")
    assert status == 431 and headers["content-type"] == "application/json"
    assert body["error"]["code"] == "headers_too_large"


def test_waitress_refuses_a_large_body_in_json(tmp_path: Path) -> None:
    """``flow serve``'s server, with its limit of 2 MiB: the refusal is the API's envelope."""
    from web.wire_errors import waitress_server

    config = Settings(database_url=f"sqlite:///{tmp_path / 'flow.db'}", broker_url="memory://", secret_key="k")
    app = create_app({"TESTING": False}, settings=config)
    server = waitress_server(app, host="127.0.0.1", port=0, threads=2, max_request_body_size=2 * 1024 * 1024,
                             ident="flow")
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        port = server.socket.getsockname()[1]
        response = httpx.post(f"http://127.0.0.1:{port}/api/task", content=b"x" * (3 * 1024 * 1024),
                              headers={"Content-Type": "application/json"}, timeout=30)
        assert response.status_code == 413
        assert response.headers["content-type"] == "application/json"
        assert response.json()["error"]["code"] == "payload_too_large"
    finally:
        server.close()
        thread.join(10)
        app.extensions["flow"].db.dispose()


def test_an_api_start_commits_its_audit_row_with_the_run(served: Served) -> None:
    name = f"echo_{uuid.uuid4().hex[:8]}"
    served.store.deploy(ECHO.format(name=name), "echo.flow")
    _, token = served.store.create_token("start-bot", "operator")
    api = served.client()
    auth = {"Authorization": f"Bearer {token}"}
    # When a token starts a run, repeats the start with its key, and tries one with bad params
    first = api.post(f"/api/workflows/{name}/runs", json={"params": {"who": "x"}},
                     headers={**auth, "Idempotency-Key": f"k-{name}"})
    again = api.post(f"/api/workflows/{name}/runs", json={"params": {"who": "x"}},
                     headers={**auth, "Idempotency-Key": f"k-{name}"})
    refused = api.post(f"/api/workflows/{name}/runs", json={"params": {"who": 3}}, headers=auth)
    assert (first.status_code, again.status_code, refused.status_code) == (201, 201, 422)
    run_id = first.json()["id"]
    assert again.json()["id"] == run_id
    # Then the trail has one row per call, newest first: the two starts name the run
    events = [e for e in admin_api(served, "/api/audit", actor="start-bot", action="run.start")["events"]]
    assert [(e["run_id"], e["target"], e["outcome"], e["status"]) for e in events] == [
        (None, f"workflow {name}", "failed", 422),
        (run_id, f"run {run_id}", "ok", 201), (run_id, f"run {run_id}", "ok", 201)]
    assert all(e["via"] == "api" for e in events)
