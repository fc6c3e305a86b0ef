"""Two schedulers on the real PostgreSQL, one SIGKILLed and restarted over and over.

Each scheduler is a separate process running ``engine.runtime.scheduler.Scheduler`` on a real clock with
fast ``every`` schedules. What a fire starts is written by a launcher that is idempotent only by
looking its key up before inserting, into a table *without* a unique key: so two schedulers
launching the same fire at the same moment would show up as two rows. Only the schedule row
lock and the ``schedule_fires`` unique key can keep the count at one.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from dsl.spec import Schedule
from engine.core.timing import Timing, fires
from engine.store import db
from engine.store.schedules import ScheduleStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCHEDULES = 4
EVERY = 0.1  # seconds between fires of each schedule
KILL_PHASE = 15.0  # seconds of SIGKILL and restart

CHILD = r'''
import os, signal, sys, threading, time
from sqlalchemy import text
from engine.store import db
from engine.runtime.scheduler import Scheduler
from engine.settings import Settings
from engine.store.schedules import ScheduleStore

url, schema = sys.argv[1], sys.argv[2]
engine = db.make_engine(url, connect_args={"options": f"-csearch_path={schema}"})
pause = float(os.environ.get("LAUNCH_PAUSE", "0"))

class TableLauncher:
    """Idempotent by lookup, on a table without a unique key (see the test's docstring)."""

    def _launch(self, kind, key, fire):
        with engine.begin() as conn:
            found = conn.execute(text("SELECT id FROM launches WHERE key = :k"), {"k": key}).scalar()
            if found is not None:
                conn.execute(text("UPDATE launches SET calls = calls + 1 WHERE id = :i"), {"i": found})
                return str(found)
            new = conn.execute(
                text("INSERT INTO launches (key, kind, fire_time, pid, calls) "
                     "VALUES (:k, :kind, :f, :p, 1) RETURNING id"),
                {"k": key, "kind": kind, "f": fire, "p": os.getpid()},
            ).scalar()
        time.sleep(pause)  # widen the window between the launch and the fire's record
        return str(new)

    def start_run(self, workflow, params, *, idempotency_key, scheduled_at, backfill_id=None):
        return self._launch("run", idempotency_key, scheduled_at)

    def create_task(self, task_type, payload, *, idempotency_key, scheduled_at):
        return self._launch("task", idempotency_key, scheduled_at)

stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
schedules = ScheduleStore(engine, TableLauncher())
Scheduler(schedules, Settings.from_env({"DATABASE_URL": url})).run(stop)
'''


@pytest.fixture
def pg(postgres_url: str) -> Iterator[tuple[Engine, str, str]]:
    """A migrated schema of its own on the session's PostgreSQL database, plus the launches table."""
    schema = f"sched_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = db.make_engine(postgres_url, connect_args={"options": f"-csearch_path={schema}"})
    db.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TABLE launches (id bigserial PRIMARY KEY, key text NOT NULL, kind text NOT NULL, "
            "fire_time timestamptz NOT NULL, pid int NOT NULL, calls int NOT NULL)"
        ))
    yield engine, postgres_url, schema
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def _spawn(url: str, schema: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LAUNCH_PAUSE": "0.005"}
    return subprocess.Popen([sys.executable, "-c", CHILD, url, schema], cwd=ROOT, env=env)


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_two_schedulers_one_killed_repeatedly_fire_each_time_exactly_once(pg) -> None:
    engine, url, schema = pg
    store = ScheduleStore(engine, launcher=None)  # type: ignore[arg-type]  # registers only
    rng = random.Random(5)

    # Given: fast schedules (three workflow runs, one seed-style recurring task) and two schedulers
    ids = [store.sync_workflow(f"wf{i}", 1, [Schedule("every", every=EVERY)])[0] for i in range(SCHEDULES - 1)]
    ids.append(store.sync_workflow("wf_task", 1, [Schedule("every", every=EVERY)])[0])
    with engine.begin() as conn:  # the last one starts a standalone task, like the task API's recurring task
        conn.execute(text("UPDATE schedules SET task = CAST(:t AS jsonb) WHERE id = :i"),
                     {"t": '{"type": "noop", "payload": {}}', "i": ids[-1]})
    victim, survivor = _spawn(url, schema), _spawn(url, schema)
    kills = 0

    # When: the victim is SIGKILLed at random moments and restarted, for KILL_PHASE seconds
    try:
        end = time.monotonic() + KILL_PHASE
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.1, 0.8))
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            kills += 1
            if kills % 5 == 0:  # now and then the other one dies too: no scheduler at all for a moment
                survivor.send_signal(signal.SIGKILL)
                survivor.wait()
                kills += 1
                survivor = _spawn(url, schema)
            victim = _spawn(url, schema)
        stop_at = datetime.now(timezone.utc)

        # Then: the schedulers catch up to the moment the kills stopped
        def caught_up() -> bool:
            with engine.connect() as conn:
                behind = conn.execute(
                    text("SELECT count(*) FROM schedules WHERE last_fire_at IS NULL OR last_fire_at < :t"),
                    {"t": stop_at},
                ).scalar()
            return behind == 0

        assert _wait_until(caught_up, timeout=60), "the schedulers did not catch up"
    finally:
        for proc in (victim, survivor):
            proc.send_signal(signal.SIGTERM)
        for proc in (victim, survivor):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    with engine.connect() as conn:
        schedule_rows = conn.execute(text("SELECT id, created_at FROM schedules")).all()
        fire_rows = conn.execute(
            text("SELECT schedule_id, fire_time, status, run_id, task_id FROM schedule_fires WHERE fire_time <= :t"),
            {"t": stop_at},
        ).all()
        launch_rows = conn.execute(
            text("SELECT key, calls FROM launches WHERE fire_time <= :t"), {"t": stop_at}
        ).all()

    expected: set[tuple[str, datetime]] = set()
    for schedule_id, created_at in schedule_rows:
        timing = Timing("every", created_at.astimezone(timezone.utc), every=EVERY)
        for fire in fires(timing, timing.anchor):
            if fire > stop_at:
                break
            expected.add((schedule_id, fire))
    fired = {(r.schedule_id, r.fire_time.astimezone(timezone.utc)) for r in fire_rows if r.status == "fired"}
    per_key = Counter(r.key for r in launch_rows)
    duplicates = sum(n - 1 for n in per_key.values() if n > 1)
    missed = expected - fired
    relaunches = sum(r.calls - 1 for r in launch_rows)
    print(
        f"\nscheduler figures: {SCHEDULES} schedules every {EVERY}s, {kills} SIGKILLs in {KILL_PHASE:.0f}s; "
        f"fires expected={len(expected)} fired={len(fired)} duplicates={duplicates} "
        f"missed={len(missed)} recorded-missed={sum(r.status == 'missed' for r in fire_rows)} "
        f"relaunches-absorbed={relaunches} launches={len(launch_rows)}"
    )

    assert kills >= 10
    assert duplicates == 0
    assert missed == set()
    assert fired == expected  # and nothing fired that was not a fire time
    assert len(launch_rows) == len(fired)  # one run or task per fire time
    assert all(r.status == "fired" and (r.run_id or r.task_id) for r in fire_rows)
    assert {r.schedule_id for r in fire_rows if r.task_id} == {ids[-1]}


SOURCE = '''
workflow nightly(x: string = "a") {
  schedule every 1m { params: { x: "b" } }
  schedule cron "30 2 * * *" { timezone: "Europe/Berlin" }
  step a: noop {}
}
'''


def test_deployed_schedules_start_runs_of_the_store_once_per_fire_time(pg) -> None:
    from engine.store import Store
    from engine.store.schedule_deploys import StoreLauncher, deploy_with_schedules

    engine, _url, _schema = pg
    now = [datetime(2026, 3, 28, 23, 0, tzinfo=timezone.utc).timestamp()]  # an injected clock
    store = Store(engine, clock=lambda: now[0])
    schedules = ScheduleStore(engine, StoreLauncher(store), clock=lambda: now[0])

    # Given: a deployed workflow with two schedules, and a seed-style recurring task
    deploy_with_schedules(store, SOURCE, "nightly.flow", schedules)
    task_schedule = schedules.create_recurring_task("noop", {"n": 1}, "0 * * * *", "Europe/Berlin")
    assert len(schedules.list_schedules()) == 3

    # When: the clock moves past the Berlin spring-forward and the scheduler fires twice
    now[0] += 2.5 * 3600  # 01:30 UTC; the window reaches back to 00:30 UTC
    first = schedules.fire_due(limit=1000)
    second = schedules.fire_due(limit=1000)

    # Then: the every-minute schedule fired 61 times (00:30 to 01:30, the window's edge included;
    # 23:01 to 00:29 missed), the
    # 02:30 cron once at 03:00 CEST (01:00 UTC), the hourly task at 01:00 UTC (02:00 and 03:00
    # local are one instant) while its 00:00 UTC fire is older than the window: missed
    assert (first.fired, first.missed, second.fired, second.duplicates) == (61 + 1 + 1, 89 + 1, 0, 0)
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT idempotency_key, scheduled_at, params FROM runs")).all()
        tasks = conn.execute(text("SELECT idempotency_key FROM tasks WHERE kind = 'standalone'")).all()
    assert len(runs) == 62 and len({r.idempotency_key for r in runs}) == 62
    assert all(r.idempotency_key.startswith("schedule:") for r in runs)
    assert datetime(2026, 3, 29, 1, 0, tzinfo=timezone.utc) in {r.scheduled_at for r in runs}
    assert len(tasks) == 1
    assert [f["status"] for f in schedules.fires(task_schedule)] == ["fired", "missed"]

    # When: the source is redeployed without the cron schedule
    deploy_with_schedules(store, SOURCE.replace('schedule cron "30 2 * * *" { timezone: "Europe/Berlin" }', ""),
                          "nightly.flow", schedules)
    # Then: the every schedule keeps its identity and history, the cron one is gone
    names = sorted(i.name for i in schedules.list_schedules())
    assert names[0].startswith("nightly: every") and len(names) == 2
