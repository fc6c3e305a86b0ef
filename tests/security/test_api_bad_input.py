"""The API under bad input: the right 4xx, never a 5xx. Plus the command races of issue 8 through
the API: cancel racing completion, a double retry click, compensate on a running run: one winner,
409 for the loser."""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from engine.core.contracts import ResultMessage
from engine.settings import Settings
from web import create_app

pytestmark = pytest.mark.integration

TOKEN = "api-bad-input-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FLOW = """flow 1
workflow bad_input(n: int, who: string = "x") {
  step a: http { method: "GET"  url: "https://example.com/a"  compensate http { method: "POST"  url: "https://example.com/undo" } }
}
"""


@pytest.fixture(scope="module")
def app(postgres_url: str) -> Iterator[Flask]:
    from engine.store import db

    db.upgrade(postgres_url)
    yield create_app({"TESTING": True}, settings=Settings(
        database_url=postgres_url, broker_url="memory://", api_token=TOKEN))


@pytest.fixture(scope="module")
def client(app: Flask) -> FlaskClient:
    c = app.test_client()
    r = c.post("/api/workflows", json={"source": FLOW, "filename": "bad.flow"}, headers=AUTH)
    assert r.status_code in (200, 201), r.get_data(as_text=True)
    return c


def deep(n: int) -> str:
    return "[" * n + "]" * n


SQLISH = ["'; DROP TABLE runs; --", "\" OR 1=1 --", "1; SELECT pg_sleep(10)", "$$; COPY runs TO '/tmp/x'"]

CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/api/workflows/bad_input/runs", {"json": {"params": {"n": "not-int"}}}),
    ("POST", "/api/workflows/bad_input/runs", {"json": {"params": {"n": 1}, "extra": True}}),
    ("POST", "/api/workflows/bad_input/runs", {"json": {"params": {"n": 1, "zzz": 2}}}),
    ("POST", "/api/workflows/bad_input/runs", {"json": {"params": []}}),
    ("POST", "/api/workflows/bad_input/runs", {"json": [1, 2]}),
    ("POST", "/api/workflows/bad_input/runs", {"json": {"params": {"n": 10**400}}}),
    ("POST", "/api/workflows/bad_input/runs", {"data": "{not json", "content_type": "application/json"}),
    ("POST", "/api/workflows/bad_input/runs", {"data": "n=1", "content_type": "application/x-www-form-urlencoded"}),
    ("POST", "/api/workflows/bad_input/runs", {"data": json.dumps({"params": {"n": 1}}), "content_type": "text/plain"}),
    ("POST", "/api/workflows/bad_input/runs", {"data": '{"params": {"n": 1, "who": "' + "x" * (2 * 1024 * 1024) + '"}}',
                                               "content_type": "application/json"}),
    ("POST", "/api/workflows/bad_input/runs", {"data": '{"params": ' + deep(100_000) + "}", "content_type": "application/json"}),
    ("POST", "/api/workflows/bad_input/runs", {"data": '{"params": {"n": 1, "who": "\\u0000"}}', "content_type": "application/json"}),
    ("POST", "/api/workflows/bad_input/runs", {"data": b'{"params": {"n": 1, "who": "\xff\xfe"}}', "content_type": "application/json"}),
    ("POST", "/api/workflows", {"json": {"source": 42}}),
    ("POST", "/api/workflows", {"json": {"source": "flow 1\n" + "x" * (300 * 1024)}}),
    ("POST", "/api/workflows", {"json": {"source": "flow 1\nworkflow w() { step a: nope {} }"}}),
    ("GET", "/api/runs?limit=abc", {}),
    ("GET", "/api/runs?limit=-1", {}),
    ("GET", "/api/runs?cursor=%00%ff", {}),
    ("GET", "/api/runs/not-a-uuid", {}),
    ("GET", "/api/runs/00000000-0000-0000-0000-000000000000", {}),
    ("POST", "/api/runs/00000000-0000-0000-0000-000000000000/cancel", {}),
    ("POST", "/api/tasks/not-a-uuid/retry", {}),
] + [("GET", f"/api/runs?workflow={s}&status={s}", {}) for s in SQLISH] + [
    ("POST", "/api/workflows/bad_input/runs", {"json": {"params": {"n": 1, "who": s}}}) for s in SQLISH
] + [("GET", f"/api/runs/{s}", {}) for s in SQLISH]


@pytest.mark.parametrize("method,path,kwargs", CASES, ids=[f"{m} {p[:60]} {i}" for i, (m, p, _) in enumerate(CASES)])
def test_bad_input_never_5xx(client: FlaskClient, method: str, path: str, kwargs: dict[str, Any]) -> None:
    response = client.open(path, method=method, headers=AUTH, **kwargs)
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:500])
    if response.status_code >= 400:
        body = response.get_json(silent=True)
        assert isinstance(body, dict), "errors are JSON"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic Zm9vOmJhcg=="},
                                     {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": "Bearer "},
                                     {"Authorization": "Bearer " + "a" * 10000}, {"X-Api-Key": TOKEN}])
def test_missing_or_forged_tokens_are_401(client: FlaskClient, headers: dict[str, str]) -> None:
    response = client.post("/api/workflows/bad_input/runs", json={"params": {"n": 1}}, headers=headers)
    assert response.status_code == 401
    assert client.get("/api/runs", headers=headers).status_code == 401


def _race(*calls: Any) -> list[int]:
    codes: list[int] = [0] * len(calls)
    barrier = threading.Barrier(len(calls))

    def go(i: int) -> None:
        barrier.wait()
        codes[i] = calls[i]().status_code

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return sorted(codes)


def _start(client: FlaskClient) -> str:
    r = client.post("/api/workflows/bad_input/runs", json={"params": {"n": 1}}, headers=AUTH)
    assert r.status_code in (200, 201, 202), r.get_data(as_text=True)
    return r.get_json()["id"]


def test_cancel_racing_completion_has_one_winner(app: Flask, client: FlaskClient) -> None:
    store = app.extensions.get("flow_store") or _store(app)
    for _ in range(5):
        run_id = _start(client)
        task = store.get_run(run_id)["steps"][0]["task_id"]
        row = store.get_task(task)

        def complete() -> Any:
            class R:
                status_code = 200

            store.apply_results([ResultMessage(task, 1, 1, "completed", output={"ok": 1}, worker="t")])
            return R

        codes = _race(lambda: client.post(f"/api/runs/{run_id}/cancel", headers=AUTH), complete)
        status = store.get_run(run_id)["status"]
        assert status in ("cancelled", "completed"), status
        task_now = store.get_task(task)
        # Exactly one of them took effect on the task
        assert task_now["status"] in ("cancelled", "completed") and row["attempt"] == 1
        if status == "cancelled":
            assert task_now["status"] == "cancelled"
        else:
            assert codes[0] == 200 and 409 in codes or codes == [200, 200] and status == "completed"


def test_double_retry_click_and_compensate_on_running(app: Flask, client: FlaskClient) -> None:
    store = _store(app)
    run_id = _start(client)
    # Compensate and cancel racing on a running run: one wins, the other gets 409
    codes = _race(lambda: client.post(f"/api/runs/{run_id}/cancel", headers=AUTH),
                  lambda: client.post(f"/api/runs/{run_id}/cancel", headers=AUTH))
    assert codes[0] in (200, 202) and codes[1] == 409, codes
    # A failed run, retried twice at once: one retry, one 409
    run_id = _start(client)
    task = store.get_run(run_id)["steps"][0]["task_id"]
    from engine.core.contracts import Failure

    store.apply_results([ResultMessage(task, 1, 1, "failed", error=Failure("http.4xx", "no", False), worker="t")])
    assert store.get_run(run_id)["status"] == "failed"
    codes = _race(lambda: client.post(f"/api/runs/{run_id}/retry", headers=AUTH),
                  lambda: client.post(f"/api/runs/{run_id}/retry", headers=AUTH))
    assert codes[0] in (200, 202) and codes[1] == 409, codes
    assert store.get_task(task)["attempt"] == 2, "one retry: the next attempt number"
    # Compensate clicked twice on the running run: one winner, 409 for the other
    codes = _race(lambda: client.post(f"/api/runs/{run_id}/compensate", headers=AUTH),
                  lambda: client.post(f"/api/runs/{run_id}/compensate", headers=AUTH))
    assert codes[0] in (200, 202) and codes[1] == 409, codes
    assert store.get_run(run_id)["status"] == "compensating"


def _store(app: Flask) -> Any:
    from engine.store import Store
    from engine.store.db import make_engine

    with app.app_context():
        from web.api.context import store

        try:
            return store()
        except Exception:
            return Store(make_engine(app.config.get("DATABASE_URL")))
