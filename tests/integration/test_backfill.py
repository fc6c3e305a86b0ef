"""Backfills through the API and the CLI, on PostgreSQL and SQLite: one run per fire time of the
range, each with its fire time as `workflow.scheduled_at`, each exactly once, `max_parallel` kept."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from engine.settings import Settings
from engine.store import Store
from engine.store import backfill as backfills
from engine.store.models import ScheduleFire
from engine.store.schedule_deploys import StoreLauncher
from engine.store.schedules import ScheduleStore
from flow.cli.main import main
from tests.integration.conftest import Clock
from web import create_app

pytestmark = pytest.mark.integration

TOKEN = "backfill-admin-token"
# The Clock starts at 1_800_000_000: 2027-01-15T08:00:00Z; the schedule is created then.
NIGHTLY = """flow 1

workflow {name}() {{
  schedule cron "0 3 * * *"
  search {{ day: workflow.scheduled_at }}
  step {step}
}}
"""
NOOP = 'report: noop { output: workflow.scheduled_at }'
WAITS = 'sign_off: approval { }'


def fire(day: int) -> str:
    return f"2027-01-{day:02d}T03:00:00+00:00"


@pytest.fixture
def store(engine: Engine, clock: Clock) -> Store:
    return Store(engine, clock=clock)


@pytest.fixture
def client(store: Store, engine: Engine) -> FlaskClient:
    settings = Settings(database_url=str(engine.url), broker_url="memory://", api_token=TOKEN)
    app: Flask = create_app({"TESTING": True}, settings=settings, store=store)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    return client


def deploy(client: FlaskClient, step: str = NOOP) -> str:
    """Deploy a nightly workflow; the id of its schedule."""
    name = f"nightly_{uuid.uuid4().hex[:8]}"
    assert client.post("/api/workflows", json={"source": NIGHTLY.format(name=name, step=step)}).status_code == 201
    return next(s["id"] for s in client.get("/api/schedules").json["schedules"] if s["workflow"] == name)


def backfill(client: FlaskClient, schedule_id: str, start: str, end: str, **options: Any) -> Any:
    return client.post(f"/api/schedules/{schedule_id}/backfill", json={"from": start, "to": end, **options})


def test_a_backfill_runs_each_fire_time_of_the_range_once(client: FlaskClient, clock: Clock) -> None:
    schedule_id = deploy(client)
    # Given a dry run: the three nightly fire times of [10th, 13th) are listed, nothing starts
    dry = backfill(client, schedule_id, "2027-01-10", "2027-01-13", dry_run=True)
    assert dry.status_code == 200
    assert dry.json["fire_times"] == dry.json["new"] == [fire(10), fire(11), fire(12)]
    assert dry.json["started"] == [] and dry.json["backfill_id"] is None
    # When the range is backfilled
    done = backfill(client, schedule_id, "2027-01-10", "2027-01-13")
    assert done.status_code == 201, done.json
    backfill_id = done.json["backfill_id"]
    started = done.json["started"]
    assert [s["fire_time"] for s in started] == [fire(10), fire(11), fire(12)] and done.json["queued"] == 0
    # Then each run has its fire time as workflow.scheduled_at, and is marked as the backfill's
    for entry in started:
        run = client.get(f"/api/runs/{entry['run_id']}").json
        assert run["scheduled_at"] == entry["fire_time"] and run["backfill_id"] == backfill_id
        assert run["search"] == {"day": entry["fire_time"]}
    listed = client.get("/api/runs", query_string={"search.day": fire(11)}).json["runs"]
    assert [r["id"] for r in listed] == [started[1]["run_id"]] and listed[0]["backfill_id"] == backfill_id
    # When the same range is backfilled again, nothing new starts
    again = backfill(client, schedule_id, "2027-01-10", "2027-01-13")
    assert again.status_code == 200
    assert again.json["new"] == [] and again.json["already"] == [fire(10), fire(11), fire(12)]
    # And an overlapping range, a minute later, starts only the missing fire time
    clock.advance(60)
    wider = backfill(client, schedule_id, "2027-01-11", "2027-01-14").json
    assert [s["fire_time"] for s in wider["started"]] == [fire(13)] and wider["already"] == [fire(11), fire(12)]
    # And the schedule lists both backfills with their fires
    listed_backfills = client.get(f"/api/schedules/{schedule_id}/backfills").json["backfills"]
    assert [b["fires"] for b in listed_backfills] == [{"fired": 1}, {"fired": 3}]


def test_max_parallel_keeps_the_rest_queued_until_runs_finish(client: FlaskClient, store: Store) -> None:
    schedule_id = deploy(client, WAITS)  # each run waits for an approval: it stays in flight
    schedules = ScheduleStore(store.engine, StoreLauncher(store), clock=store.clock)
    result = backfill(client, schedule_id, "2027-01-01", "2027-01-04", max_parallel=1).json
    assert [s["fire_time"] for s in result["started"]] == [fire(1)] and result["queued"] == 2
    # While the first run is in flight, a scheduler pass starts nothing more
    assert backfills.start_queued(schedules) == []
    # When it finishes, the next pass starts the next fire time, and so on
    client.post(f"/api/runs/{result['started'][0]['run_id']}/cancel")
    second = backfills.start_queued(schedules)
    assert [s["fire_time"] for s in second] == [fire(2)]
    assert backfills.start_queued(schedules) == []
    client.post(f"/api/runs/{second[0]['run_id']}/cancel")
    assert [s["fire_time"] for s in backfills.start_queued(schedules)] == [fire(3)]
    assert not backfills.has_queued(schedules)


def test_a_fire_the_scheduler_missed_is_run_by_a_backfill(client: FlaskClient, store: Store, clock: Clock) -> None:
    schedule_id = deploy(client)
    schedules = ScheduleStore(store.engine, StoreLauncher(store), clock=store.clock, catchup_window=60)
    # Given the scheduler was down for three days: it records the fires older than its window missed
    clock.advance(3 * 86400)
    schedules.fire_due()
    fires = {f["fire_time"]: f["status"] for f in schedules.fires(schedule_id)}
    assert fires[fire(16)] == "missed"
    # When the missed stretch is backfilled, the missed fires run, each once
    result = backfill(client, schedule_id, "2027-01-16", "2027-01-18").json
    assert [s["fire_time"] for s in result["started"]] == [fire(16), fire(17)] and result["already"] == []
    fires = {f["fire_time"]: f for f in schedules.fires(schedule_id)}
    assert fires[fire(16)]["status"] == "fired" and fires[fire(16)]["run_id"] == result["started"][0]["run_id"]
    assert backfill(client, schedule_id, "2027-01-16", "2027-01-18").json["new"] == []


@pytest.mark.parametrize("body, status, message", [
    ({"from": "2027-01-13", "to": "2027-01-10"}, 422, "the range is empty"),
    ({"from": "2027-01-10", "to": "2027-02-01"}, 422, "is in the future"),
    ({"from": "yesterday", "to": "2027-01-10"}, 400, "is not an ISO 8601 time"),
    ({"from": "2027-01-10", "to": "2027-01-11", "max_parallel": 0}, 400, "max_parallel"),
])
def test_a_bad_range_says_what_is_wrong(client: FlaskClient, body: dict, status: int, message: str) -> None:
    schedule_id = deploy(client)
    response = client.post(f"/api/schedules/{schedule_id}/backfill", json=body)
    assert response.status_code == status and message in response.json["error"]["message"]


def test_an_unknown_schedule_is_a_404(client: FlaskClient) -> None:
    response = backfill(client, "no-such-schedule", "2027-01-10", "2027-01-11")
    assert response.status_code == 404 and "no-such-schedule" in response.json["error"]["message"]


def test_the_cli_backfills_and_a_second_run_starts_nothing(client: FlaskClient, engine: Engine,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads DATABASE_URL; on PostgreSQL the fixture's schema travels as libpq's PGOPTIONS.
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        monkeypatch.setenv("PGOPTIONS", f"-csearch_path={schema}")
    schedule_id = deploy(client)
    # The CLI runs on the real clock: the range lies before it (and before the schedule's creation).
    days = ["--from", "2026-01-10", "--to", "2026-01-12"]
    runner = CliRunner()
    dry = runner.invoke(main, ["schedules", "backfill", schedule_id, *days, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "2 fire times" in dry.output and "would run 2026-01-11T03:00:00+00:00" in dry.output
    assert "dry run: nothing started" in dry.output
    first = runner.invoke(main, ["schedules", "backfill", schedule_id, *days, "--max-parallel", "5"])
    assert first.exit_code == 0, first.output
    assert "2026-01-10T03:00:00+00:00  run " in first.output and "2 started, 0 queued" in first.output
    second = runner.invoke(main, ["schedules", "backfill", schedule_id, *days, "--json"])
    assert second.exit_code == 0, second.output
    assert json.loads(second.output)["started"] == [] and len(json.loads(second.output)["already"]) == 2
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(ScheduleFire.__table__)
                             .where(ScheduleFire.schedule_id == schedule_id)).scalar_one()
    assert count == 2
    bad = runner.invoke(main, ["schedules", "backfill", schedule_id, "--from", "2026-01-12", "--to", "2026-01-10"])
    assert bad.exit_code == 1 and "the range is empty" in bad.output
    unknown = runner.invoke(main, ["schedules", "backfill", "nope", *days])
    assert unknown.exit_code == 1 and "schedule 'nope' does not exist" in unknown.output


def test_two_backfills_of_one_range_at_once_start_each_fire_time_once(client: FlaskClient, store: Store) -> None:
    import threading

    schedule_id = deploy(client)
    schedules = ScheduleStore(store.engine, StoreLauncher(store), clock=store.clock)
    start, end = datetime(2026, 12, 1, tzinfo=timezone.utc), datetime(2027, 1, 1, tzinfo=timezone.utc)
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def one() -> None:
        barrier.wait()
        results.append(backfills.backfill(schedules, schedule_id, start, end))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Then the 31 fire times of December started 31 runs between them, none twice
    assert len(results) == 2
    started = [s for r in results for s in r.started]
    assert len(started) == 31 and len({s["fire_time"] for s in started}) == 31
    assert len({s["run_id"] for s in started}) == 31
    with store.engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT count(*) FROM runs WHERE idempotency_key LIKE :k"),
                            {"k": f"schedule:{schedule_id}:%"}).scalar_one()
    assert runs == 31


def test_a_fire_time_the_scheduler_fires_and_a_backfill_queued_is_one_run(client: FlaskClient, store: Store,
                                                                          clock: Clock) -> None:
    # Given a backfill that queued the fire time of 2027-01-16 03:00 (its slot taken by the 15th's run)
    schedule_id = deploy(client, WAITS)
    schedules = ScheduleStore(store.engine, StoreLauncher(store), clock=store.clock, catchup_window=7 * 86400)
    clock.advance(86400)  # 2027-01-16T08:00Z
    result = backfill(client, schedule_id, "2027-01-15T03:00:00Z", "2027-01-16T04:00:00Z", max_parallel=1).json
    assert [s["fire_time"] for s in result["started"]] == [fire(15)] and result["queued"] == 1
    # When the scheduler catches up on the same fire time, and then the backfill reaches it too
    schedules.fire_due()
    client.post(f"/api/runs/{result['started'][0]['run_id']}/cancel")
    late = backfills.start_queued(schedules)
    # Then both got the same run: one run for the fire time
    with store.engine.connect() as conn:
        ids = conn.execute(sa.text("SELECT id FROM runs WHERE idempotency_key = :k"),
                           {"k": f"schedule:{schedule_id}:{fire(16)}"}).scalars().all()
    assert len(ids) == 1 and [s["run_id"] for s in late] == ids


def test_cancelling_a_backfill_drops_its_queued_fires(client: FlaskClient, store: Store, engine: Engine,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    schedule_id = deploy(client, WAITS)
    result = backfill(client, schedule_id, "2027-01-01", "2027-01-06", max_parallel=2).json
    assert result["queued"] == 3
    backfill_id = result["backfill_id"]
    # Through the API: the queued fires go, the started runs stay
    cancelled = client.post(f"/api/schedules/{schedule_id}/backfills/{backfill_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json == {"backfill_id": backfill_id, "dropped": 3}
    assert client.get(f"/api/schedules/{schedule_id}/backfills").json["backfills"][0]["fires"] == {"fired": 2}
    assert all(client.get(f"/api/runs/{s['run_id']}").json["status"] == "running" for s in result["started"])
    assert client.post(f"/api/schedules/{schedule_id}/backfills/nope/cancel").status_code == 404
    # And the dropped fire times may be backfilled again
    again = backfill(client, schedule_id, "2027-01-01", "2027-01-06").json
    assert [s["fire_time"] for s in again["started"]] == [fire(3), fire(4), fire(5)]
    # The CLI lists them, and cancels one (nothing queued left: 0 dropped)
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            monkeypatch.setenv("PGOPTIONS", f"-csearch_path={conn.execute(sa.text('SELECT current_schema()')).scalar_one()}")
    listed = CliRunner().invoke(main, ["schedules", "backfills", schedule_id])
    assert listed.exit_code == 0, listed.output
    assert f"{backfill_id}  [2027-01-01T00:00:00+00:00, 2027-01-06T00:00:00+00:00)  2 fired  max 2 at once" in listed.output
    dropped = CliRunner().invoke(main, ["schedules", "backfills", schedule_id, "--cancel", again["backfill_id"]])
    assert dropped.exit_code == 0 and "cancelled, 0 queued fires dropped" in dropped.output
    unknown = CliRunner().invoke(main, ["schedules", "backfills", schedule_id, "--cancel", "nope"])
    assert unknown.exit_code == 1 and "backfill 'nope' does not exist" in unknown.output


def test_retention_keeps_a_backfills_queued_fires_however_old(client: FlaskClient, store: Store) -> None:
    from datetime import timedelta

    from engine.store.prune import prune

    schedule_id = deploy(client, WAITS)
    result = backfill(client, schedule_id, "2026-01-01", "2026-01-04", max_parallel=1).json
    assert result["queued"] == 2
    # When old work is pruned (the fire times are a year old), the queued fires stay to be run
    prune(store.engine, timedelta(days=30), now=datetime(2027, 1, 15, 8, tzinfo=timezone.utc))
    fires = {f["fire_time"]: f["status"] for f in ScheduleStore(store.engine, StoreLauncher(store)).fires(schedule_id)}
    assert fires == {"2026-01-02T03:00:00+00:00": "queued", "2026-01-03T03:00:00+00:00": "queued"}
