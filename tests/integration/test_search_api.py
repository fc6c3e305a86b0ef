"""Runs found by their business keys (`search { ... }`) through the API, on real PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest
from flask import Flask
from flask.testing import FlaskClient

from engine.settings import Settings
from engine.store import Store
from web import create_app

pytestmark = pytest.mark.integration

TOKEN = "search-admin-token"

ORDERS = """flow 1

workflow {name}(order_id: int, customer: string, express: bool = false, note: string? = null) {{
  let region = "eu"
  search {{ order: params.order_id, customer: params.customer, express: params.express, region: region,
           note: params.note }}
  step pack: noop {{ output: params.order_id }}
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
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    return client


@pytest.fixture
def workflow(client: FlaskClient) -> str:
    name = f"orders_{uuid.uuid4().hex[:8]}"
    assert client.post("/api/workflows", json={"source": ORDERS.format(name=name)}).status_code == 201
    return name


def start(client: FlaskClient, workflow: str, **params: object) -> dict:
    response = client.post(f"/api/workflows/{workflow}/runs", json={"params": params})
    assert response.status_code == 201, response.json
    return response.json


def ids(client: FlaskClient, query: str) -> list[str]:
    response = client.get(f"/api/runs?{query}")
    assert response.status_code == 200, response.json
    return [run["id"] for run in response.json["runs"]]


def test_a_run_is_found_by_each_of_its_business_keys(client: FlaskClient, workflow: str) -> None:
    # Given three orders, two of one customer (the customer is unique to this test)
    customer = f"acme-{uuid.uuid4().hex[:6]}"
    order = 4_000_000 + uuid.uuid4().int % 1_000_000
    first = start(client, workflow, order_id=order, customer=customer, express=True)
    second = start(client, workflow, order_id=order + 1, customer=customer)
    start(client, workflow, order_id=order + 2, customer=f"{customer}-other")
    # Then the order number finds its run, and the run shows its keys as text
    assert ids(client, f"search.order={order}") == [first["id"]]
    assert first["search"] == {"order": str(order), "customer": customer, "express": "true", "region": "eu"}
    # And the customer finds both of theirs, newest first; keys combine with AND
    assert ids(client, f"search.customer={customer}") == [second["id"], first["id"]]
    assert ids(client, f"search.customer={customer}&search.express=true") == [first["id"]]
    assert ids(client, f"search.customer={customer}&search.order={order + 1}&workflow={workflow}") == [second["id"]]
    # And the list shows the keys of each run; an unknown value finds nothing
    listed = client.get(f"/api/runs?search.order={order}").json["runs"][0]
    assert listed["search"]["customer"] == customer and listed["backfill_id"] is None
    assert ids(client, f"search.order={order}0") == []


def test_a_null_key_leaves_the_run_out_of_that_index(client: FlaskClient, workflow: str) -> None:
    note = f"gift-{uuid.uuid4().hex[:6]}"
    with_note = start(client, workflow, order_id=1, customer="x", note=note)
    without = start(client, workflow, order_id=2, customer="x")
    assert ids(client, f"search.note={note}") == [with_note["id"]]
    assert "note" not in without["search"]


def test_search_pages_with_the_cursor(client: FlaskClient, workflow: str) -> None:
    customer = f"pager-{uuid.uuid4().hex[:6]}"
    started = [start(client, workflow, order_id=i, customer=customer)["id"] for i in range(5)]
    page = client.get(f"/api/runs?search.customer={customer}&limit=2").json
    seen = [r["id"] for r in page["runs"]]
    while page["next_cursor"]:
        page = client.get(f"/api/runs?search.customer={customer}&limit=2&cursor={page['next_cursor']}").json
        seen += [r["id"] for r in page["runs"]]
    assert seen == started[::-1]


@pytest.mark.parametrize("query, message", [
    ("search.a-b=1", "search.a-b: a search key is a name of letters, digits and `_` (at most 64)"),
    ("search.order=" + "9" * 256, "is too long"),
])
def test_a_bad_search_filter_is_a_400_that_says_why(client: FlaskClient, query: str, message: str) -> None:
    response = client.get(f"/api/runs?{query}")
    assert response.status_code == 400
    assert message in response.json["error"]["message"]


def test_the_openapi_document_describes_the_search_parameter(client: FlaskClient) -> None:
    operation = client.get("/api/openapi.json").json["paths"]["/api/runs"]["get"]
    search = next(p for p in operation["parameters"] if p["name"] == "search.{key}")
    assert search["in"] == "query" and "search.order=4711" in search["description"]
    assert search["schema"] == {"type": "string", "maxLength": 255}


def test_the_cli_lists_runs_by_business_key(client: FlaskClient, workflow: str, postgres_url: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from flow.cli.main import main

    monkeypatch.setenv("DATABASE_URL", postgres_url)
    customer = f"cli-{uuid.uuid4().hex[:6]}"
    run = start(client, workflow, order_id=77, customer=customer)
    result = CliRunner().invoke(main, ["runs", "list", "--search", f"customer={customer}", "--search", "order=77"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(run["id"]) and f"customer={customer}" in result.output
    assert len(result.output.strip().splitlines()) == 1
    as_json = CliRunner().invoke(main, ["runs", "list", "--search", f"customer={customer}", "--json"])
    assert [r["id"] for r in json.loads(as_json.output)["runs"]] == [run["id"]]
    none = CliRunner().invoke(main, ["runs", "list", "--search", f"customer={customer}-nobody"])
    assert none.exit_code == 0 and none.output.strip() == "no runs match"
    bad = CliRunner().invoke(main, ["runs", "list", "--search", "order"])
    assert bad.exit_code == 2 and "write KEY=VALUE" in bad.output


def test_a_value_only_known_at_start_must_still_fit_the_index(client: FlaskClient) -> None:
    name = f"loose_{uuid.uuid4().hex[:8]}"
    source = f"flow 1\nworkflow {name}(o: object) {{\n  search {{ ref: params.o.ref }}\n  step a: noop {{ output: 1 }}\n}}\n"
    assert client.post("/api/workflows", json={"source": source}).status_code == 201
    ok = client.post(f"/api/workflows/{name}/runs", json={"params": {"o": {"ref": "R-1"}}})
    assert ok.status_code == 201 and ok.json["search"] == {"ref": "R-1"}
    refused = client.post(f"/api/workflows/{name}/runs", json={"params": {"o": {"ref": [1, 2]}}})
    assert refused.status_code == 422
    assert refused.json["error"]["details"] == ["search ref: a search value must be a string, number or boolean, not list"]


def test_runs_started_in_bulk_are_indexed_too(store: Store, workflow: str) -> None:
    customer = f"bulk-{uuid.uuid4().hex[:6]}"
    ids = store.start_runs(workflow, [{"order_id": i, "customer": customer} for i in range(3)])
    found = store.list_runs(search={"customer": customer})["runs"]
    assert sorted(r["id"] for r in found) == sorted(ids)
    assert [r["id"] for r in store.list_runs(search={"customer": customer, "order": "2"})["runs"]] == [ids[2]]
