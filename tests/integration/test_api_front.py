"""The API's front door (issue 12): the single start and the batch start share one code path, keep
the idempotency key's promise and commit the first messages with the runs; ``GET /api/runs/ID?wait=``
answers when the run ends; the token check is cached but a revocation is honoured at once.

Real PostgreSQL, no coordinator: results are applied through the store as the coordinator does.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from engine.core.contracts import ResultMessage
from engine.settings import Settings
from engine.store import Store, db
from engine.store.models import ApiToken, Outbox, Task
from web import create_app

pytestmark = pytest.mark.integration

TOKEN = "front-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

ONE = """flow 1
workflow {name}(i: int) {{
  step only: noop {{ output: params.i }}
}}
"""


@pytest.fixture(scope="module")
def store(postgres_url: str) -> Iterator[Store]:
    db.upgrade(postgres_url)
    engine = db.make_engine(postgres_url)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def app(store: Store) -> Flask:
    settings = Settings(database_url=str(store.engine.url), broker_url="memory://", api_token=TOKEN)
    return create_app({"TESTING": True, "FLOW_MAX_WAITERS": 2}, settings=settings, store=store)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = AUTH["Authorization"]
    return client


@pytest.fixture
def workflow(client: FlaskClient) -> str:
    name = f"front_{uuid.uuid4().hex[:8]}"
    assert client.post("/api/workflows", json={"source": ONE.format(name=name)}).status_code == 201
    return name


def finish(store: Store, run_id: str) -> None:
    with store.engine.connect() as conn:
        task_id, attempt, token = conn.execute(
            sa.select(Task.id, Task.attempt, Task.fencing_token).where(Task.run_id == run_id)).one()
    store.apply_results([ResultMessage(task_id, attempt, token, "completed", output=1)])


def outbox_messages(store: Store, run_id: str) -> int:
    with store.engine.connect() as conn:
        task_ids = conn.execute(sa.select(Task.id).where(Task.run_id == run_id)).scalars().all()
        rows = conn.execute(sa.select(Outbox.headers)).scalars().all()
    return sum(1 for headers in rows if (headers or {}).get("task_id") in task_ids)


def test_a_start_answers_the_run_as_stored_with_its_first_message(store: Store, client: FlaskClient,
                                                                  workflow: str) -> None:
    answer = client.post(f"/api/workflows/{workflow}/runs", json={"params": {"i": 1}},
                         headers={"Idempotency-Key": f"k-{uuid.uuid4()}"})
    assert answer.status_code == 201
    run = answer.json
    # The answer (built from what the start wrote) is the document a read gives
    assert client.get(f"/api/runs/{run['id']}").json == run
    assert run["status"] == "running" and run["steps"][0]["status"] == "pending"
    assert run["steps"][0]["task_id"] and outbox_messages(store, run["id"]) == 1


def test_the_idempotency_key_gives_back_the_same_run_single_and_batch(client: FlaskClient, workflow: str) -> None:
    key = f"k-{uuid.uuid4()}"
    first = client.post(f"/api/workflows/{workflow}/runs", json={"params": {"i": 1}},
                        headers={"Idempotency-Key": key}).json
    again = client.post(f"/api/workflows/{workflow}/runs", json={"params": {"i": 1}},
                        headers={"Idempotency-Key": key})
    assert again.status_code == 201 and again.json["id"] == first["id"]
    batch = client.post(f"/api/workflows/{workflow}/runs/batch", json={"runs": [
        {"params": {"i": 2}, "idempotency_key": key},
        {"params": {"i": 3}, "idempotency_key": "dup-" + key},
        {"params": {"i": 4}, "idempotency_key": "dup-" + key},
    ]})
    assert batch.status_code == 200
    runs = batch.json["runs"]
    assert [r["index"] for r in runs] == [0, 1, 2]
    assert runs[0]["run"]["id"] == first["id"]
    assert runs[1]["run"]["id"] == runs[2]["run"]["id"] != first["id"]


def test_a_batch_answers_each_entry_in_order_with_its_run_or_its_error(client: FlaskClient, workflow: str) -> None:
    other = f"front_{uuid.uuid4().hex[:8]}"
    assert client.post("/api/workflows", json={"source": ONE.format(name=other)}).status_code == 201
    used = f"k-{uuid.uuid4()}"
    assert client.post(f"/api/workflows/{other}/runs", json={"params": {"i": 0}},
                       headers={"Idempotency-Key": used}).status_code == 201
    answer = client.post(f"/api/workflows/{workflow}/runs/batch", json={"runs": [
        {"params": {"i": 1}},
        {"params": {"i": "not a number"}},
        {"params": {"i": 3}, "idempotency_key": used},
        {},
        {"params": {"i": 5}, "idempotency_key": f"k-{uuid.uuid4()}"},
    ]})
    assert answer.status_code == 200
    runs = answer.json["runs"]
    assert [r["index"] for r in runs] == [0, 1, 2, 3, 4]
    assert runs[0]["run"]["status"] == "running" and runs[4]["run"]["params"] == {"i": 5}
    assert runs[1]["error"]["code"] == "invalid_params" and runs[1]["error"]["details"]
    assert runs[2]["error"]["code"] == "conflict"
    assert runs[3]["error"]["code"] == "invalid_params"  # i is required
    assert set(runs[1]) == {"index", "error"} and set(runs[0]) == {"index", "run"}
    for entry in (runs[0], runs[4]):
        assert client.get(f"/api/runs/{entry['run']['id']}").json == entry["run"]


def test_a_batch_is_bounded_and_validated(client: FlaskClient, workflow: str) -> None:
    too_many = client.post(f"/api/workflows/{workflow}/runs/batch", json={"runs": [{"params": {"i": 1}}] * 1001})
    assert too_many.status_code == 400 and too_many.json["error"]["code"] == "invalid_body"
    assert client.post(f"/api/workflows/{workflow}/runs/batch", json={"runs": []}).status_code == 400
    missing = client.post("/api/workflows/no_such_workflow/runs/batch", json={"runs": [{"params": {}}]})
    assert missing.status_code == 404
    no_token = client.post(f"/api/workflows/{workflow}/runs/batch", json={"runs": [{"params": {"i": 1}}]},
                           headers={"Authorization": ""})
    assert no_token.status_code == 401


def test_wait_answers_when_the_run_ends(store: Store, client: FlaskClient, workflow: str) -> None:
    run = client.post(f"/api/workflows/{workflow}/runs", json={"params": {"i": 1}}).json
    # Time up first: the document as it is
    start = time.monotonic()
    early = client.get(f"/api/runs/{run['id']}?wait=200ms")
    assert early.status_code == 200 and early.json["status"] == "running"
    assert time.monotonic() - start >= 0.19
    # The run ends while the request waits: the answer comes then, well before the time is up
    threading.Timer(0.3, finish, (store, run["id"])).start()
    start = time.monotonic()
    done = client.get(f"/api/runs/{run['id']}?wait=20s")
    assert done.status_code == 200 and done.json["status"] == "completed"
    assert time.monotonic() - start < 10
    # A finished run answers at once; a bad duration is a 400
    assert client.get(f"/api/runs/{run['id']}?wait=30s").json["status"] == "completed"
    assert client.get(f"/api/runs/{run['id']}?wait=soon").status_code == 400


def test_waiters_are_bounded_with_a_503_beyond(app: Flask, client: FlaskClient, workflow: str) -> None:
    run = client.post(f"/api/workflows/{workflow}/runs", json={"params": {"i": 1}}).json
    answers: list[int] = []

    def wait() -> None:
        other = app.test_client()
        other.environ_base["HTTP_AUTHORIZATION"] = AUTH["Authorization"]
        answers.append(other.get(f"/api/runs/{run['id']}?wait=1500ms").status_code)

    threads = [threading.Thread(target=wait) for _ in range(2)]  # FLOW_MAX_WAITERS = 2
    for thread in threads:
        thread.start()
    time.sleep(0.4)
    beyond = client.get(f"/api/runs/{run['id']}?wait=1s")
    for thread in threads:
        thread.join()
    assert beyond.status_code == 503 and beyond.json["error"]["code"] == "too_many_waiters"
    assert beyond.headers["Retry-After"] == "1"
    assert answers == [200, 200]


def test_a_revoked_token_is_refused_at_once_although_checks_are_cached(store: Store, app: Flask,
                                                                       workflow: str) -> None:
    token_id, token = store.create_token(f"front-{uuid.uuid4().hex[:6]}", "operator")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    listener = store.notifications()
    deadline = time.monotonic() + 10
    while not listener.healthy and time.monotonic() < deadline:
        time.sleep(0.05)
    for _ in range(3):  # the first check reads the database, the next ones the cache
        assert client.get(f"/api/workflows/{workflow}", headers=headers).status_code == 200
    store.revoke_token(token_id)
    assert client.get(f"/api/workflows/{workflow}", headers=headers).status_code == 401
    # last_used_at is written once, not per request
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(ApiToken.last_used_at).where(ApiToken.id == token_id)).scalar() is not None


def test_a_revocation_from_another_process_reaches_the_cache(store: Store, app: Flask, workflow: str,
                                                            postgres_url: str) -> None:
    token_id, token = store.create_token(f"front-{uuid.uuid4().hex[:6]}", "operator")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get(f"/api/workflows/{workflow}", headers=headers).status_code == 200
    other = Store(db.make_engine(postgres_url))  # another process's store: no shared cache
    other.revoke_token(token_id)
    deadline = time.monotonic() + 5
    status: Any = None
    while time.monotonic() < deadline:
        status = client.get(f"/api/workflows/{workflow}", headers=headers).status_code
        if status == 401:
            break
        time.sleep(0.01)
    assert status == 401
    other.engine.dispose()
