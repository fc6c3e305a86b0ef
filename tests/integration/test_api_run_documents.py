"""The API over the store: task ids in the run document, a fan-out's attempts, compensating a
standalone task, and closed dead letters (real PostgreSQL, no coordinator: results are applied
through the store as the coordinator does)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from engine.core.contracts import Failure, ResultMessage
from engine.core.errors import IllegalTransition, InvalidParams
from engine.settings import Settings
from engine.store import Store
from engine.store.models import Task
from web import create_app

pytestmark = pytest.mark.integration

TOKEN = "additions-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

FAN_OUT = """flow 1

workflow {name}(xs: list<int>) {{
  step items: http {{
    for each x in params.xs
    method: "POST"
    url: "https://example.com/items/${{x}}"
  }}
  step last: noop {{ after items }}
}}
"""


@pytest.fixture(scope="module")
def store(pg_store: Store) -> Store:
    return pg_store


@pytest.fixture
def app(store: Store) -> Flask:
    settings = Settings(database_url=str(store.engine.url), broker_url="memory://", api_token=TOKEN)
    return create_app({"TESTING": True}, settings=settings, store=store)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = AUTH["Authorization"]
    return client


def finish(store: Store, task_id: str, status: str, output: Any = None) -> None:
    with store.engine.connect() as conn:
        attempt, token = conn.execute(sa.select(Task.attempt, Task.fencing_token).where(Task.id == task_id)).one()
    error = Failure("invalid_input", "refused", retryable=False) if status == "failed" else None
    store.apply_results([ResultMessage(task_id, attempt, token, status, output=output, error=error)])


def test_the_run_document_names_each_task_and_a_fan_out_takes_its_slowest_items_attempts(
    store: Store, client: FlaskClient
) -> None:
    name = f"fan_{uuid.uuid4().hex[:8]}"
    assert client.post("/api/workflows", json={"source": FAN_OUT.format(name=name)}).status_code == 201
    run = client.post(f"/api/workflows/{name}/runs", json={"params": {"xs": [1, 2]}}).json
    items, last = run["steps"]
    # Then each item has its task, the fan-out step itself has none, and a step not yet reached has none
    assert items["task_id"] is None and last["task_id"] is None
    assert [item["item"] for item in items["items"]] == [0, 1]
    item_tasks = [item["task_id"] for item in items["items"]]
    assert all(client.get(f"/api/task/{t}").json["step"] == "items" for t in item_tasks)
    # When both items complete at attempt 1, the step took 1 attempt (not 2)
    for task_id in item_tasks:
        finish(store, task_id, "completed", output={"ok": True})
    document = client.get(f"/api/runs/{run['id']}").json
    items, last = document["steps"]
    assert (items["status"], items["attempts"]) == ("completed", 1)
    assert last["task_id"] and client.get(f"/api/task/{last['task_id']}").json["step"] == "last"


def test_compensate_a_standalone_task_once(store: Store, client: FlaskClient) -> None:
    action = {"task_type": "http_request", "config": {"method": "DELETE", "url": "https://x.example/1"}}
    task_id = store.create_task("http_request", {"method": "POST", "url": "https://x.example"})
    with pytest.raises(IllegalTransition):
        store.compensate_task(task_id, action)
    finish(store, task_id, "completed", output={"id": 1})
    with pytest.raises(InvalidParams):
        store.compensate_task(task_id, None)
    with pytest.raises(InvalidParams):
        store.compensate_task(task_id, {"task_type": "compensation", "config": {}})
    # Asked twice (a client retrying after a timeout): one compensation task
    first = store.compensate_task(task_id, action)
    second = client.post(f"/api/task/{task_id}/compensate", json={"action": action})
    assert second.status_code == 202 and second.json["id"] == first
    undo = store.get_task(str(first))
    assert (undo["task_type"], undo["status"]) == ("compensation", "pending")
    assert undo["payload"] == {"action": {"type": "http_request", **action}, "step": None, "item": None,
                               "compensates": task_id}


def test_dead_letters_include_closed(store: Store, client: FlaskClient) -> None:
    task_id = store.create_task("http_request", {"url": "https://x.example"}, max_attempts=1)
    finish(store, task_id, "failed")
    letter = next(d for d in client.get("/api/dead-letters").json["dead_letters"] if d["task_id"] == task_id)
    assert client.delete(f"/api/dead-letters/{letter['id']}").status_code == 204
    open_ids = {d["id"] for d in client.get("/api/dead-letters").json["dead_letters"]}
    all_ids = {d["id"] for d in client.get("/api/dead-letters?include_closed=true&limit=500").json["dead_letters"]}
    assert letter["id"] not in open_ids and letter["id"] in all_ids
    assert client.get("/api/dead-letters?include_closed=maybe").status_code == 400
