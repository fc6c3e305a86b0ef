"""The JSON API against the real PostgreSQL, with Flask's test client.

No coordinator runs here (except in the last test): a run just started is ``running`` with its first
tasks ``pending``, and a standalone task stays ``pending``. Counts are compared as deltas, since the
tests share one database.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from engine.settings import Settings
from web import create_app
from web.api.openapi import api_routes, build_document

pytestmark = pytest.mark.integration

TOKEN = "s3cret-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET_VALUE = "hunter2-very-secret"
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"

GREET = """flow 1

workflow {name}(who: string, times: int = 1) {{
  step hello: http {{
    method: "POST"
    url: "https://example.com/hello/${{params.who}}"
    headers: {{ Authorization: "Bearer ${{secrets.API_KEY}}" }}
    body: {{ times: params.times }}
  }}
  step bye: http {{
    after hello
    method: "GET"
    url: "https://example.com/bye"
  }}
}}
"""

SEED_CURL_BODY = """{
    "type": "http_request",
    "payload": {
      "method": "POST",
      "url": "https://api.example.com/webhook",
      "headers": {"Authorization": "Bearer token"},
      "body": {"event": "task_completed"}
    }
  }"""


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database(postgres_url: str) -> str:
    from engine.store import db

    db.upgrade(postgres_url)
    return postgres_url


def make_app(database_url: str, broker_url: str = "memory://", **settings: Any) -> Flask:
    config = settings.pop("config", None)
    values: dict[str, Any] = {"api_token": TOKEN, "secrets": {"API_KEY": SECRET_VALUE}}
    values.update(settings)
    app = create_app({"TESTING": True, **(config or {})},
                     settings=Settings(database_url=database_url, broker_url=broker_url, **values))
    return app


@pytest.fixture
def app(database: str) -> Iterator[Flask]:
    app = make_app(database)
    yield app
    app.extensions["flow"].db.dispose()


def reader(app: Flask) -> FlaskClient:
    """A test client that sends the admin token with every request: reads need one too by default."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = AUTH["Authorization"]
    return client


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return reader(app)


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def deploy_greet(client: FlaskClient) -> str:
    name = unique("greet")
    response = client.post("/api/workflows", json={"source": GREET.format(name=name), "filename": "greet.flow"},
                           headers=AUTH)
    assert response.status_code == 201, response.json
    return name


def start_run(client: FlaskClient, name: str, params: dict[str, Any] | None = None, **headers: str) -> Any:
    return client.post(f"/api/workflows/{name}/runs", json={"params": params or {"who": "ada"}},
                       headers={**AUTH, **headers})


def create_task(client: FlaskClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = client.post("/api/task", json=body or {"type": "data_processing", "payload": {"operation": "noop"}},
                           headers=AUTH)
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == "application/json"
    error = response.json["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["message"] and "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code
    return error  # type: ignore[no-any-return]


# -- health and queue manager ------------------------------------------------------------------


def test_health_checks_database_and_broker_with_latency(client: FlaskClient) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json["status"] == "ok"
    for check in ("database", "broker"):
        assert response.json["checks"][check]["status"] == "up"
        assert response.json["checks"][check]["latency_ms"] >= 0


def test_health_against_the_real_rabbitmq(database: str, amqp_url: str) -> None:
    response = make_app(database, amqp_url).test_client().get("/api/health")
    assert response.status_code == 200
    assert response.json["checks"]["broker"]["status"] == "up"


def test_health_is_503_when_the_broker_is_down(database: str) -> None:
    response = make_app(database, "amqp://guest:guest@127.0.0.1:1//").test_client().get("/api/health")
    assert response.status_code == 503
    assert response.json["status"] == "down"
    assert response.json["checks"]["broker"]["status"] == "down"
    assert response.json["checks"]["database"]["status"] == "up"
    assert response.json["error"]["code"] == "unavailable"


def test_database_down_gives_503_on_health_and_on_reads(database: str) -> None:
    client = reader(make_app("postgresql+psycopg2://postgres@127.0.0.1:1/nothing"))
    response = client.get("/api/health")
    assert response.status_code == 503
    assert response.json["checks"]["database"]["status"] == "down"
    assert_error(client.get("/api/queue-manager/status"), 503, "database_unavailable")
    assert_error(client.post("/api/task", json={"type": "http_request", "payload": {}}, headers=AUTH),
                 503, "database_unavailable")


def test_queue_manager_counts_follow_new_tasks(client: FlaskClient) -> None:
    before = client.get("/api/queue-manager/pending-count").json["count"]
    create_task(client)
    assert client.get("/api/queue-manager/pending-count").json == {"status": "pending", "count": before + 1}
    failed = client.get("/api/queue-manager/failed-count").json
    assert failed["status"] == "failed" and failed["count"] >= 0
    status = client.get("/api/queue-manager/status").json
    assert status["counts"]["pending"] == before + 1
    assert status["pending"] == before + 1
    assert status["overloaded"] is False


def test_overloaded_uses_the_pending_threshold(database: str) -> None:
    client = reader(make_app(database, overload_pending_threshold=1))
    create_task(client)
    verdict = client.get("/api/queue-manager/overloaded").json
    assert verdict["overloaded"] is True
    assert "FLOW_OVERLOAD_PENDING" in verdict["reasons"][0]
    assert verdict["thresholds"]["pending"] == 1


def test_overload_verdict_is_pure() -> None:
    from web.api.queue_manager import overload

    settings = Settings(database_url="sqlite://", broker_url="memory://", overload_failed_ratio=0.5)
    assert overload({"completed": 10, "failed": 10}, settings)["overloaded"] is True
    assert overload({"completed": 1, "failed": 2}, settings)["overloaded"] is False  # too few to judge
    assert overload({"completed": 30, "failed": 10}, settings)["overloaded"] is False


# -- tasks (the seed) ------------------------------------------------------------------------------


def test_seed_curl_example_verbatim(client: FlaskClient) -> None:
    # curl -X POST http://localhost:3030/api/task -H "Content-Type: application/json" -d '{...}'
    response = client.post("/api/task", data=SEED_CURL_BODY,
                           headers={"Content-Type": "application/json", **AUTH})
    assert response.status_code == 201, response.json
    task = response.json
    assert task["type"] == "http_request"
    assert task["status"] == "pending"
    assert task["payload"]["url"] == "https://api.example.com/webhook"
    assert response.headers["Location"].endswith(f"/api/task/{task['id']}")


def test_seed_curl_example_verbatim_needs_no_token_on_the_embedded_default(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/flow.db", broker_url="memory://")
    client = create_app({"TESTING": True}, settings=settings).test_client()
    response = client.post("/api/task", data=SEED_CURL_BODY, headers={"Content-Type": "application/json"})
    assert response.status_code == 201, response.json
    assert response.json["status"] == "pending"


def test_get_task_and_unknown_task(client: FlaskClient) -> None:
    task = create_task(client, {"type": "http_request", "payload": {"method": "GET", "url": "https://x.example"},
                                "maxRetries": 4})
    response = client.get(f"/api/task/{task['id']}")
    assert response.status_code == 200
    assert response.json["id"] == task["id"]
    assert response.json["max_attempts"] == 5
    error = assert_error(client.get("/api/task/does-not-exist"), 404, "not_found")
    assert "does-not-exist" in error["message"]


def test_retry_of_a_task_that_is_not_failed_is_409(client: FlaskClient) -> None:
    task = create_task(client)
    assert_error(client.post(f"/api/task/{task['id']}/retry", headers=AUTH), 409, "illegal_transition")
    assert_error(client.post("/api/task/nope/retry", headers=AUTH), 404)


def test_compensate_a_standalone_task(client: FlaskClient) -> None:
    task = create_task(client)
    # no declared undo
    assert_error(client.post(f"/api/task/{task['id']}/compensate", headers=AUTH), 422, "no_compensation")
    # an undo, but the task has not completed
    action = {"action": {"task_type": "http_request", "config": {"method": "DELETE", "url": "https://x.example/1"}}}
    assert_error(client.post(f"/api/task/{task['id']}/compensate", json=action, headers=AUTH), 409)
    assert_error(client.post("/api/task/nope/compensate", headers=AUTH), 404)


def test_compensate_a_task_of_a_run_compensates_the_run(app: Flask, client: FlaskClient) -> None:
    run = start_run(client, deploy_greet(client)).json
    task_id = _first_task_id(app, run["id"])
    client.post(f"/api/runs/{run['id']}/cancel", headers=AUTH)
    response = client.post(f"/api/task/{task_id}/compensate", headers=AUTH)
    assert response.status_code == 202, response.json
    assert client.get(f"/api/runs/{run['id']}").json["status"] in ("compensating", "compensated")


def test_secrets_are_never_returned(app: Flask, client: FlaskClient) -> None:
    task = create_task(client, {"type": "http_request",
                                "payload": {"url": "https://x.example", "note": f"token={SECRET_VALUE}"}})
    assert SECRET_VALUE not in json.dumps(client.get(f"/api/task/{task['id']}").json)
    assert client.get(f"/api/task/{task['id']}").json["payload"]["note"] == "token=***"
    run = start_run(client, deploy_greet(client)).json
    body = json.dumps(client.get(f"/api/runs/{run['id']}").json)
    assert SECRET_VALUE not in body
    hello = client.get(f"/api/task/{_first_task_id(app, run['id'])}").json
    assert "secrets.API_KEY" in json.dumps(hello["payload"])


# -- scheduler (the seed) -----------------------------------------------------------------------


def test_scheduled_task_is_created_and_listed(client: FlaskClient) -> None:
    body = {"type": "http_request", "payload": {"method": "GET", "url": "https://x.example"},
            "scheduledAt": "2031-05-01T09:00:00Z"}
    response = client.post("/api/scheduler/tasks/scheduled", json=body, headers=AUTH)
    assert response.status_code == 201, response.json
    assert response.json["kind"] == "at"
    assert response.json["task"]["type"] == "http_request"
    assert response.json["next_fire_at"].startswith("2031-05-01T09:00:00")
    listed = client.get("/api/scheduler/tasks/scheduled").json["tasks"]
    assert response.json["id"] in [t["id"] for t in listed]


def test_recurring_task(client: FlaskClient) -> None:
    body = {"type": "data_processing", "payload": {"operation": "cleanup"},
            "cronExpression": "0 3 * * *", "timezone": "Europe/Berlin"}
    response = client.post("/api/scheduler/tasks/recurring", json=body, headers=AUTH)
    assert response.status_code == 201, response.json
    assert response.json["kind"] == "cron"
    assert response.json["expression"] == "0 3 * * *"
    assert len(response.json["upcoming"]) >= 2


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/scheduler/tasks/recurring", {"type": "http_request", "cron": "not a cron"}, 422),
        ("/api/scheduler/tasks/recurring", {"type": "http_request", "cron": "0 3 * * *", "timezone": "Mars/Base"}, 422),
        ("/api/scheduler/tasks/recurring", {"type": "http_request"}, 400),
        ("/api/scheduler/tasks/scheduled", {"type": "http_request", "scheduledAt": "tomorrow"}, 400),
        ("/api/scheduler/tasks/scheduled", {"type": "teleport", "scheduledAt": "2031-01-01T00:00:00Z"}, 400),
    ],
)
def test_scheduler_rejects_bad_bodies(client: FlaskClient, path: str, body: dict[str, Any], status: int) -> None:
    assert_error(client.post(path, json=body, headers=AUTH), status)


# -- workflows ------------------------------------------------------------------------------------


def test_deploy_is_idempotent_and_versions_are_listed(client: FlaskClient) -> None:
    name = unique("greet")
    source = GREET.format(name=name)
    first = client.post("/api/workflows", json={"source": source}, headers=AUTH)
    assert first.status_code == 201
    assert first.json["versions"] == [{"name": name, "version": 1, "created": True}]
    again = client.post("/api/workflows", data=source, headers={**AUTH, "Content-Type": "text/plain"})
    assert again.json["versions"] == [{"name": name, "version": 1, "created": False}]
    changed = client.post("/api/workflows", json={"source": source.replace("/bye", "/ciao")}, headers=AUTH)
    assert changed.json["versions"][0]["version"] == 2

    assert name in [w["name"] for w in client.get("/api/workflows").json["workflows"]]
    detail = client.get(f"/api/workflows/{name}")
    assert detail.status_code == 200
    version = client.get(f"/api/workflows/{name}/versions/1").json
    assert version["source"] == source
    assert version["spec"]["name"] == name
    assert_error(client.get(f"/api/workflows/{name}/versions/9"), 404)
    assert_error(client.get("/api/workflows/no_such_flow"), 404)


def test_deploy_the_seed_definition(client: FlaskClient) -> None:
    definition = json.loads((WORKFLOWS / "order_processing.json").read_text())
    response = client.post("/api/workflows", json=definition, headers=AUTH)
    assert response.status_code == 201, response.json
    assert len(response.json["versions"]) == 1
    bad = {"name": "broken", "definition": {"transitions": {}}}
    error = assert_error(client.post("/api/workflows", json=bad, headers=AUTH), 422, "compile_failed")
    assert "initialTask" in error["details"][0]["message"]


def test_deploy_of_broken_source_is_422_with_diagnostics(client: FlaskClient) -> None:
    error = assert_error(client.post("/api/workflows", json={"source": "flow 1\nworkflow x( {\n"}, headers=AUTH),
                         422, "compile_failed")
    assert error["details"][0]["span"]["line"] >= 1


def test_check_answers_diagnostics_with_spans_and_stores_nothing(client: FlaskClient) -> None:
    name = unique("checked")
    ok = client.post("/api/workflows/check", json={"source": GREET.format(name=name)}, headers=AUTH)
    assert ok.status_code == 200
    assert ok.json["ok"] is True and ok.json["workflows"] == [name]
    assert_error(client.get(f"/api/workflows/{name}"), 404)
    bad = client.post("/api/workflows/check", data="flow 1\nworkflow x( {\n",
                      headers={**AUTH, "Content-Type": "text/plain"})
    assert bad.status_code == 200
    assert bad.json["ok"] is False
    diagnostic = bad.json["diagnostics"][0]
    assert diagnostic["severity"] == "error"
    assert set(diagnostic["span"]) >= {"file", "line", "column", "end_line", "end_column"}


def test_graph_svg(client: FlaskClient) -> None:
    name = deploy_greet(client)
    response = client.get(f"/api/workflows/{name}/graph.svg")
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    assert b"<svg" in response.data and b"hello" in response.data
    assert client.get(f"/api/workflows/{name}/graph.svg?version=1").status_code == 200
    assert_error(client.get(f"/api/workflows/{name}/graph.svg?version=x"), 400)
    assert_error(client.get("/api/workflows/nothing_here/graph.svg"), 404)


# -- runs -----------------------------------------------------------------------------------------


def _first_task_id(app: Flask, run_id: str) -> str:
    """The id of the run's first task. The run document names steps, not task ids, so read the table."""
    import sqlalchemy as sa

    from engine.store.models import Task

    with app.extensions["flow"].db.connect() as conn:
        task_id = conn.execute(
            sa.select(Task.id).where(Task.run_id == run_id).order_by(Task.created_at, Task.id).limit(1)
        ).scalar()
    assert task_id is not None, f"run {run_id} has no task"
    return str(task_id)


def test_start_a_run(client: FlaskClient) -> None:
    name = deploy_greet(client)
    response = start_run(client, name, {"who": "ada", "times": 2})
    assert response.status_code == 201, response.json
    run = response.json
    assert run["status"] == "running"
    assert response.headers["Location"].endswith(f"/api/runs/{run['id']}")
    detail = client.get(f"/api/runs/{run['id']}")
    assert detail.status_code == 200
    assert detail.json["id"] == run["id"]
    assert detail.json["params"] == {"who": "ada", "times": 2}


def test_start_with_bad_params_is_422_listing_every_problem(client: FlaskClient) -> None:
    name = deploy_greet(client)
    error = assert_error(start_run(client, name, {"times": "many", "extra": 1}), 422, "invalid_params")
    assert len(error["details"]) >= 2
    assert any("who" in problem for problem in error["details"])
    assert_error(start_run(client, "no_such_workflow"), 404)


def test_idempotency_key_returns_the_same_run(client: FlaskClient) -> None:
    name = deploy_greet(client)
    key = unique("key")
    first = start_run(client, name, **{"Idempotency-Key": key})
    second = start_run(client, name, **{"Idempotency-Key": key})
    assert first.status_code == 201 and second.status_code in (200, 201)
    assert first.json["id"] == second.json["id"]
    other = start_run(client, name, **{"Idempotency-Key": unique("key")})
    assert other.json["id"] != first.json["id"]
    assert_error(start_run(client, name, **{"Idempotency-Key": "k" * 300}), 400)


def test_list_runs_with_filters_and_cursor_pagination(client: FlaskClient) -> None:
    name = deploy_greet(client)
    started = [start_run(client, name).json["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        query = f"/api/runs?workflow={name}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(query)
        assert page.status_code == 200, page.json
        assert len(page.json["runs"]) <= 2
        seen += [run["id"] for run in page.json["runs"]]
        cursor = page.json["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(started))  # newest first, each once
    assert client.get(f"/api/runs?workflow={name}&status=completed").json["runs"] == []
    assert len(client.get(f"/api/runs?workflow={name}&status=running").json["runs"]) == 5
    assert len(client.get(f"/api/runs?workflow={name}&since=2000-01-01T00:00:00Z").json["runs"]) == 5
    assert client.get(f"/api/runs?workflow={name}&until=2000-01-01T00:00:00Z").json["runs"] == []
    assert_error(client.get("/api/runs?status=sleeping"), 400)
    assert_error(client.get("/api/runs?limit=0"), 400)
    assert_error(client.get("/api/runs?limit=many"), 400)
    assert_error(client.get("/api/runs?since=yesterday"), 400)


def test_run_logs_cancel_retry_compensate(client: FlaskClient) -> None:
    run = start_run(client, deploy_greet(client)).json
    logs = client.get(f"/api/runs/{run['id']}/logs")
    assert logs.status_code == 200 and isinstance(logs.json["logs"], list)
    assert_error(client.post(f"/api/runs/{run['id']}/retry", headers=AUTH), 409, "illegal_transition")
    cancelled = client.post(f"/api/runs/{run['id']}/cancel", headers=AUTH)
    assert cancelled.status_code == 200
    assert cancelled.json["status"] == "cancelled"
    assert_error(client.post(f"/api/runs/{run['id']}/cancel", headers=AUTH), 409, "illegal_transition")
    compensated = client.post(f"/api/runs/{run['id']}/compensate", headers=AUTH)
    assert compensated.status_code == 200
    assert compensated.json["status"] in ("compensating", "compensated")
    for path in ("", "/logs"):
        assert_error(client.get(f"/api/runs/nope{path}"), 404)
    for action in ("cancel", "retry", "compensate"):
        assert_error(client.post(f"/api/runs/nope/{action}", headers=AUTH), 404)


# -- dead letters ---------------------------------------------------------------------------------


def test_dead_letters_list_and_unknown(client: FlaskClient) -> None:
    response = client.get("/api/dead-letters")
    assert response.status_code == 200 and isinstance(response.json["dead_letters"], list)
    assert_error(client.get("/api/dead-letters/nope"), 404)
    assert_error(client.post("/api/dead-letters/nope/requeue", headers=AUTH), 404)
    assert_error(client.delete("/api/dead-letters/nope", headers=AUTH), 404)


# -- errors -----------------------------------------------------------------------------------


def test_malformed_json_is_400(client: FlaskClient) -> None:
    assert_error(client.post("/api/task", data="{not json", headers={**AUTH, "Content-Type": "application/json"}),
                 400, "malformed_json")


def test_body_that_breaks_the_schema_is_400_with_paths(client: FlaskClient) -> None:
    error = assert_error(client.post("/api/task", json={"type": "fax", "payload": []}, headers=AUTH),
                         400, "invalid_body")
    assert {p["path"] for p in error["details"]} == {"type", "payload"}


def test_not_json_is_415(client: FlaskClient) -> None:
    assert_error(client.post("/api/task", data="type=http_request", headers={**AUTH, "Content-Type":
                             "application/x-www-form-urlencoded"}), 415, "unsupported_media_type")
    assert_error(client.post("/api/task", data='{"type": "http_request"}', headers=AUTH), 415)


def test_body_over_one_mib_is_413(client: FlaskClient) -> None:
    big = json.dumps({"type": "http_request", "payload": {"blob": "x" * (1024 * 1024)}})
    assert_error(client.post("/api/task", data=big, headers={**AUTH, "Content-Type": "application/json"}),
                 413, "payload_too_large")


def test_unknown_path_is_404_and_wrong_method_405(client: FlaskClient) -> None:
    assert_error(client.get("/api/nothing"), 404, "not_found")
    error = assert_error(client.put("/api/task", headers=AUTH), 405, "method_not_allowed")
    assert "PUT" in error["message"]


# -- auth -----------------------------------------------------------------------------------


def _mutating_routes(app: Flask) -> list[tuple[str, str]]:
    routes = []
    for rule, method, _endpoint, _record in api_routes(app):
        if method in ("POST", "DELETE", "PUT", "PATCH"):
            path = (rule.replace("<int:version>", "1").replace("<name>", "greet")
                    .replace("<task_id>", "x").replace("<run_id>", "x").replace("<letter_id>", "x")
                    .replace("<step>", "ask").replace("<schedule_id>", "x").replace("<backfill_id>", "x"))
            routes.append((method, path))
    return routes


def test_every_mutation_refuses_a_missing_or_wrong_token(app: Flask) -> None:
    client = app.test_client()
    routes = _mutating_routes(app)
    assert len(routes) == 17  # with .../approve, .../runs/batch, /api/schedules/<id>/backfill and .../backfills/<id>/cancel
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
            response = client.open(path, method=method, json={}, headers=headers)
            error = assert_error(response, 401, "unauthorized")
            assert TOKEN not in error["message"]
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_without_a_configured_token_mutations_say_to_set_it(database: str) -> None:
    client = make_app(database, api_token=None).test_client()
    error = assert_error(client.post("/api/task", json={"type": "http_request"}), 401)
    assert "FLOW_API_TOKEN" in error["message"]
    assert_error(client.get("/api/queue-manager/pending-count"), 401)
    opened = make_app(database, api_token=None, api_open_reads=True).test_client()
    assert opened.get("/api/queue-manager/pending-count").status_code == 200


def test_reads_need_a_token_unless_opened(database: str) -> None:
    client = make_app(database).test_client()
    assert_error(client.get("/api/runs"), 401)
    assert client.get("/api/runs", headers=AUTH).status_code == 200
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/openapi.json").status_code == 200
    opened = make_app(database, api_open_reads=True).test_client()
    assert opened.get("/api/runs").status_code == 200
    assert_error(opened.post("/api/task", json={"type": "http_request"}), 401)


# -- OpenAPI ------------------------------------------------------------------------------------


def test_every_route_is_documented(app: Flask, client: FlaskClient) -> None:
    document = client.get("/api/openapi.json").json
    assert document["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}
    for rule, method, endpoint, record in api_routes(app):
        assert record is not None, f"{method} {rule} ({endpoint}) has no @operation"
        path = rule.replace("<int:", "<").replace("<", "{").replace(">", "}")
        assert (method, path) in documented
    assert build_document(app)["components"]["schemas"]["CreateTask"]["required"] == ["type"]
    assert client.get("/api/docs").mimetype == "text/html"


def test_answers_match_their_documented_schemas(app: Flask, client: FlaskClient) -> None:
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    document = client.get("/api/openapi.json").json
    registry = Registry().with_resource("urn:flow", Resource.from_contents({**document, "$schema":
                                        "https://json-schema.org/draft/2020-12/schema"}))

    def check(path: str, template: str, method: str, response: Any) -> None:
        answer = document["paths"][template][method]["responses"][str(response.status_code)]
        schema = answer["content"]["application/json"]["schema"]
        ref = {"$ref": "urn:flow" + schema["$ref"]}
        Draft202012Validator(ref, registry=registry).validate(response.json)

    task = client.post("/api/task", json={"type": "http_request", "payload": {}}, headers=AUTH)
    check("/api/task", "/api/task", "post", task)
    check("", "/api/task/{task_id}", "get", client.get(f"/api/task/{task.json['id']}"))
    check("", "/api/task/{task_id}", "get", client.get("/api/task/nope"))
    run = start_run(client, deploy_greet(client))
    check("", "/api/workflows/{name}/runs", "post", run)
    check("", "/api/runs", "get", client.get("/api/runs?limit=3"))
    check("", "/api/health", "get", client.get("/api/health"))
    check("", "/api/queue-manager/status", "get", client.get("/api/queue-manager/status"))
    check("", "/api/queue-manager/overloaded", "get", client.get("/api/queue-manager/overloaded"))


# -- tasks that finished (results applied as the coordinator would) -----------------------------


def finish_task(app: Flask, task_id: str, status: str, output: Any = None) -> None:
    """Apply a worker result to a task through the store, as the coordinator does."""
    import sqlalchemy as sa

    from engine.core.contracts import Failure, ResultMessage
    from engine.store.models import Task

    with app.extensions["flow"].db.connect() as conn:
        attempt, token = conn.execute(
            sa.select(Task.attempt, Task.fencing_token).where(Task.id == task_id)
        ).one()
    error = Failure("invalid_input", "the handler refused it", retryable=False) if status == "failed" else None
    app.extensions["flow"].store.apply_results(
        [ResultMessage(task_id, attempt, token, status, output=output, error=error)]
    )


def failed_task(app: Flask, client: FlaskClient) -> dict[str, Any]:
    task = create_task(client, {"type": "http_request", "payload": {"url": "https://x.example"}, "max_attempts": 1})
    finish_task(app, task["id"], "failed")
    return client.get(f"/api/task/{task['id']}").json  # type: ignore[no-any-return]


def test_retry_a_failed_task_and_not_a_completed_one(app: Flask, client: FlaskClient) -> None:
    failed_before = client.get("/api/queue-manager/failed-count").json["count"]
    task = failed_task(app, client)
    assert task["status"] == "failed"
    assert client.get("/api/queue-manager/failed-count").json["count"] == failed_before + 1
    retried = client.post(f"/api/task/{task['id']}/retry", headers=AUTH)
    assert retried.status_code == 200, retried.json
    assert retried.json["status"] == "pending"

    done = create_task(client)
    finish_task(app, done["id"], "completed", output={"ok": True})
    assert client.get(f"/api/task/{done['id']}").json["output"] == {"ok": True}
    error = assert_error(client.post(f"/api/task/{done['id']}/retry", headers=AUTH), 409, "illegal_transition")
    assert error["details"]["current"] == "completed"


def test_compensate_a_completed_standalone_task_runs_the_given_undo(app: Flask, client: FlaskClient) -> None:
    task = create_task(client, {"type": "http_request", "payload": {"method": "POST", "url": "https://x.example/orders"}})
    finish_task(app, task["id"], "completed", output={"status": 201, "body": {"id": 7}})
    action = {"action": {"task_type": "http_request", "config": {"method": "DELETE", "url": "https://x.example/orders/7"}}}
    response = client.post(f"/api/task/{task['id']}/compensate", json=action, headers=AUTH)
    assert response.status_code == 202, response.json
    undo = response.json
    assert undo["type"] == "compensation" and undo["status"] == "pending"
    assert undo["payload"]["action"]["config"]["method"] == "DELETE"
    assert undo["payload"]["compensates"] == task["id"]


def test_dead_letters_inspect_requeue_discard(app: Flask, client: FlaskClient) -> None:
    first, second = failed_task(app, client), failed_task(app, client)
    letters = {letter["task_id"]: letter for letter in client.get("/api/dead-letters").json["dead_letters"]}
    assert {first["id"], second["id"]} <= set(letters)

    letter = client.get(f"/api/dead-letters/{letters[first['id']]['id']}")
    assert letter.status_code == 200
    assert letter.json["task_type"] == "http_request"
    requeued = client.post(f"/api/dead-letters/{letter.json['id']}/requeue", headers=AUTH)
    assert requeued.status_code == 200, requeued.json
    assert requeued.json["requeued_at"] is not None
    assert client.get(f"/api/task/{first['id']}").json["status"] == "pending"
    assert_error(client.post(f"/api/dead-letters/{letter.json['id']}/requeue", headers=AUTH), 409)

    other = letters[second["id"]]["id"]
    discarded = client.delete(f"/api/dead-letters/{other}", headers=AUTH)
    assert discarded.status_code == 204 and discarded.data == b""
    assert client.get(f"/api/dead-letters/{other}").json["discarded_at"] is not None
    assert_error(client.delete(f"/api/dead-letters/{other}", headers=AUTH), 409)
    remaining = {letter["task_id"] for letter in client.get("/api/dead-letters").json["dead_letters"]}
    assert not {first["id"], second["id"]} & remaining


# -- with a coordinator and a worker in this process -------------------------------------------

DOUBLE = """flow 1

workflow {name}(xs: list<int>) {{
  step doubled: transform {{
    input: params.xs
    map: item * 2
  }}
  output {{ result: steps.doubled.output }}
}}
"""


def test_a_run_started_through_the_api_completes(database: str, amqp_url: str) -> None:
    import threading
    import time

    from engine.runtime.coordinator import Coordinator
    from engine.runtime.messaging import Broker
    from workers.consumer import Worker

    # Given the API, a coordinator and a worker on the real RabbitMQ
    app = make_app(database, amqp_url)
    client = reader(app)
    settings = app.extensions["flow"].settings
    stop = threading.Event()
    broker = Broker(settings)
    coordinator = Coordinator(app.extensions["flow"].store, broker, settings, task_types=("data_processing",))
    worker = Worker(settings, ("data_processing",), concurrency=2, grace_period=5)
    threads = [threading.Thread(target=coordinator.run, args=(stop,), daemon=True),
               threading.Thread(target=worker.run, args=(stop,), daemon=True)]
    for thread in threads:
        thread.start()
    try:
        assert worker.consuming.wait(15), "the worker did not start consuming"
        # When a workflow is deployed and run through the API
        name = unique("double")
        assert client.post("/api/workflows", json={"source": DOUBLE.format(name=name)}, headers=AUTH).status_code == 201
        run = start_run(client, name, {"xs": [1, 2, 3]}).json
        # Then the run completes with its output
        deadline = time.monotonic() + 30
        while (document := client.get(f"/api/runs/{run['id']}").json)["status"] not in ("completed", "failed"):
            assert time.monotonic() < deadline, document
            time.sleep(0.05)
        assert document["status"] == "completed", document
        assert document["output"] == {"result": [2, 4, 6]}
        assert document["steps"][0]["status"] == "completed"
        assert client.get(f"/api/runs?workflow={name}&status=completed").json["runs"][0]["id"] == run["id"]
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
        broker.close()


# -- Schemathesis: generated requests from /api/openapi.json ------------------------------------


def test_generated_requests_get_no_5xx_and_documented_answers(app: Flask) -> None:
    """A bounded Schemathesis pass (about 25 cases per operation) with a valid token: no 5xx, every
    status documented, every answer matching its schema. Requests that fit the schema but not the
    semantics (a bad cron, a NUL in a string) are rightly refused, so that check is left out."""
    import schemathesis  # a test dependency: missing means a broken install, not a skip
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings
    from schemathesis.checks import positive_data_acceptance

    from tests.addresses import fresh_address

    # Schemathesis also sends wrong tokens on purpose; from one address they would soon get 429
    # (the login throttle), so each request comes from an address of its own.
    wsgi = app.wsgi_app

    def from_fresh_address(environ: dict[str, Any], start_response: Any) -> Any:
        environ["REMOTE_ADDR"] = fresh_address()
        return wsgi(environ, start_response)

    app.wsgi_app = from_fresh_address  # type: ignore[method-assign]
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis_settings(max_examples=25, deadline=None, database=None,
                             suppress_health_check=list(HealthCheck))
        @given(operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])

        try:
            check()
        except BaseException as exc:  # Schemathesis raises an exception group of its findings
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:800]}")
    assert not failures, "\n\n".join(failures)
