"""Faults injected into running workflows: a worker killed -9, a coordinator dying between commit and
publish, every broker connection closed. Each test prints its figures (runs, lost, duplicated,
recovery seconds); "duplicated" counts a step whose effect happened twice at the HTTP sink, which
honours Idempotency-Key like a well-behaved API does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from engine.runtime.coordinator import Coordinator
from engine.runtime.messaging import Broker
from engine.settings import Settings
from tests.faults.harness import faulty_coordinator_cmd
from tests.http_sink import Sink

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"completed", "failed", "cancelled", "compensated", "compensation_failed"}

WORK = """
flow 1
workflow crash_work(base: string, i: int) {
  defaults { timeout 20s  retry { attempts: 5, delay: 100ms, backoff: 2.0, max_delay: 1s, jitter: false } }
  step work: http {
    method: "POST"  url: "${params.base}/work"  body: { run: workflow.run_id, i: params.i }
    compensate none "test sink"
  }
  step done: http {
    method: "POST"  url: "${params.base}/done"  body: { run: workflow.run_id, i: steps.work.output.body.i }
    compensate none "test sink"
  }
  output { i: steps.done.output.body.i }
}
"""


def _flow(*args: str) -> list[str]:
    """The ``flow`` CLI of this checkout, run by this interpreter."""
    return [sys.executable, "-c", "import sys; from flow.cli.main import main; sys.exit(main())", *args]


@pytest.fixture(scope="module")
def settings(postgres_url: str, amqp_url: str) -> Settings:
    from engine.store import db

    db.upgrade(postgres_url)
    return Settings.from_env({"DATABASE_URL": postgres_url, "BROKER_URL": amqp_url,
                              "FLOW_HTTP_ALLOWLIST": "127.0.0.1"})


@pytest.fixture(scope="module")
def env(settings: Settings) -> dict[str, str]:
    """Environment of the subprocesses: the test database and vhost, the sink allow-listed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "RABBITMQ_", "FLOW_"))}
    env.update({"DATABASE_URL": settings.database_url, "BROKER_URL": settings.broker_url,
                "FLOW_HTTP_ALLOWLIST": "127.0.0.1", "FLOW_LOG_FORMAT": "text",
                "PYTHONPATH": str(ROOT)})
    return env


@pytest.fixture(scope="module")
def store(settings: Settings) -> Any:
    from engine.store import Store
    from engine.store.db import make_engine

    return Store(make_engine(settings.database_url), lease_seconds=settings.lease_seconds)


class Background:
    """Coordinators and workers in threads of the test process, stopped gracefully at the end."""

    def __init__(self, settings: Settings, store: Any) -> None:
        self.settings, self.store = settings, store
        self.stops: list[tuple[threading.Event, threading.Thread]] = []
        self.brokers: list[Broker] = []

    def coordinator(self) -> Coordinator:
        broker = Broker(self.settings)
        self.brokers.append(broker)
        coordinator = Coordinator(self.store, broker, self.settings, task_types=("http_request",))
        self._start(coordinator.run)
        return coordinator

    def worker(self, concurrency: int = 16) -> Any:
        from workers.consumer import Worker

        worker = Worker(self.settings, ("http_request",), concurrency=concurrency, grace_period=5)
        self._start(worker.run)
        assert worker.consuming.wait(15), "the worker did not start consuming"
        return worker

    def _start(self, target: Any) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=target, args=(stop,), daemon=True)
        thread.start()
        self.stops.append((stop, thread))

    def close(self) -> None:
        for stop, _ in self.stops:
            stop.set()
        for _, thread in self.stops:
            thread.join(20)
        for broker in self.brokers:
            broker.close()


@pytest.fixture
def background(settings: Settings, store: Any) -> Iterator[Background]:
    bg = Background(settings, store)
    yield bg
    bg.close()


def start_runs(store: Any, base: str, count: int) -> list[Any]:
    version = {d.name: d for d in store.deploy(WORK, "crash_work.flow")}["crash_work"].version
    return [store.start_run("crash_work", {"base": base, "i": i}, version=version) for i in range(count)]


def wait_all(store: Any, run_ids: list[Any], timeout: float) -> dict[Any, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    done: dict[Any, dict[str, Any]] = {}
    while len(done) < len(run_ids) and time.monotonic() < deadline:
        for run_id in run_ids:
            if run_id not in done:
                document = store.get_run(run_id)
                if document["status"] in TERMINAL:
                    done[run_id] = document
        time.sleep(0.2)
    return done


def check_exactly_once(sink: Sink, store: Any, run_ids: list[Any], documents: dict[Any, Any],
                       label: str, recovery: float) -> None:
    """Every run completed; each step had one effect at the sink and one completed task in the DB."""
    lost = [r for r in run_ids if documents.get(r, {}).get("status") != "completed"]
    effects = Counter((r.path, r.body["run"]) for r in sink.effects())
    duplicated = sum(n - 1 for n in effects.values() if n > 1)
    replays = sum(1 for r in sink.requests if r.replay)
    db_dupes = 0
    for run_id, document in documents.items():
        names = Counter(s["name"] for s in document["steps"] if s.get("kind", "step") == "step")
        db_dupes += sum(n - 1 for n in names.values())
    print(f"\n[{label}] runs={len(run_ids)} completed={len(run_ids) - len(lost)} lost={len(lost)} "
          f"duplicated={duplicated} duplicated_in_db={db_dupes} replayed_deliveries={replays} "
          f"recovery={recovery:.2f}s")
    assert not lost, f"{len(lost)} runs did not complete, e.g. {documents.get(lost[0]) or lost[0]}"
    twice = [(r.path, r.key, r.at) for r in sink.requests if effects[(r.path, r.body["run"])] > 1]
    assert duplicated == 0 and db_dupes == 0, f"effects repeated with these keys: {twice}"
    for run_id in run_ids:
        assert effects[("/work", str(run_id))] == 1 and effects[("/done", str(run_id))] == 1
        steps = {s["name"]: s for s in documents[run_id]["steps"]}
        assert steps["work"]["status"] == steps["done"]["status"] == "completed"


def echo(delay: float) -> Sink:
    def respond(request: Any) -> tuple[int, Any]:
        if request.path == "/work":
            time.sleep(delay)
        return 200, {"i": request.body["i"]}

    return Sink(respond).start()


def test_worker_killed_mid_flight_loses_and_duplicates_nothing(
    store: Any, env: dict[str, str], background: Background
) -> None:
    # Given ~200 runs whose first step is slow, a coordinator, and a worker process
    sink = echo(delay=0.5)
    background.coordinator()
    worker = subprocess.Popen(_flow("worker", "--queues", "http_request", "--concurrency", "32"),
                              env={**env, "FLOW_PREFETCH": "32"}, cwd=ROOT)
    replacement = None
    try:
        run_ids = start_runs(store, sink.url, 200)
        # When the worker is killed -9 in the middle of the work
        deadline = time.monotonic() + 60
        while len(sink.effects("/work")) < 60:
            assert time.monotonic() < deadline, "the worker made no progress"
            assert worker.poll() is None, "the worker exited early"
            time.sleep(0.02)
        in_flight_at_kill = len(sink.sent("/work")) - len(sink.effects("/done"))
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        killed_at = time.monotonic()
        # and another worker starts
        replacement = subprocess.Popen(_flow("worker", "--queues", "http_request", "--concurrency", "32"),
                                       env={**env, "FLOW_PREFETCH": "32"}, cwd=ROOT)
        documents = wait_all(store, run_ids, timeout=120)
        recovery = time.monotonic() - killed_at
        print(f"\nkilled with ~{in_flight_at_kill} steps in flight")
    finally:
        for process in (worker, replacement):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
        sink.stop()
    # Then every run completed, and no step had its effect twice
    check_exactly_once(sink, store, run_ids, documents, "worker kill -9", recovery)


def test_coordinator_dying_between_commit_and_publish_loses_nothing(
    settings: Settings, store: Any, env: dict[str, str], background: Background
) -> None:
    # Given a worker, and a coordinator process that dies right after its first result batch
    # committed and before it published the messages that batch created
    sink = echo(delay=0.0)
    background.worker()
    run_ids = start_runs(store, sink.url, 20)
    faulty = subprocess.Popen(faulty_coordinator_cmd("exit_before_publish"), env=env, cwd=ROOT)
    try:
        assert faulty.wait(60) == 70, "the fault hook should have killed the coordinator"
        engine = sa.create_engine(settings.database_url)
        with engine.connect() as conn:
            pending = conn.execute(sa.text("SELECT count(*) FROM outbox")).scalar_one()
        engine.dispose()
        print(f"\noutbox rows left by the dead coordinator: {pending}")
        assert pending > 0, "the dead coordinator should have left committed, unpublished messages"
        # When a coordinator starts again
        restarted_at = time.monotonic()
        healthy = subprocess.Popen(_flow("coordinator"), env=env, cwd=ROOT)
        try:
            documents = wait_all(store, run_ids, timeout=60)
            recovery = time.monotonic() - restarted_at
        finally:
            healthy.send_signal(signal.SIGTERM)
            assert healthy.wait(30) == 0, "SIGTERM stops a coordinator gracefully"
    finally:
        if faulty.poll() is None:
            faulty.kill()
        sink.stop()
    # Then nothing was lost (and nothing done twice)
    check_exactly_once(sink, store, run_ids, documents, "coordinator exit before publish", recovery)


def test_every_consumer_resumes_after_the_broker_closes_all_connections(
    settings: Settings, store: Any, background: Background
) -> None:
    # Given a coordinator and a worker busy with 100 runs
    sink = echo(delay=0.05)
    coordinator = background.coordinator()
    worker = background.worker(concurrency=16)
    run_ids = start_runs(store, sink.url, 100)
    deadline = time.monotonic() + 60
    while len(sink.effects("/done")) < 20:
        assert time.monotonic() < deadline, "no progress before the fault"
        time.sleep(0.02)
    # When RabbitMQ closes every connection of the test vhost
    vhost = settings.broker_url.rsplit("/", 1)[1]
    applied_before = coordinator.applied
    closed_at = time.monotonic()
    subprocess.run(["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "flow crash test"],
                   check=True, capture_output=True, timeout=60)
    done_before = len(sink.effects("/done"))
    while len(sink.effects("/done")) <= done_before and time.monotonic() < closed_at + 60:
        time.sleep(0.01)
    recovery = time.monotonic() - closed_at
    try:
        documents = wait_all(store, run_ids, timeout=90)
    finally:
        sink.stop()
    # Then both consumers reconnected and every run completed exactly once
    print(f"\nworker connections: {worker.connections}; coordinator results applied "
          f"before/after the fault: {applied_before}/{coordinator.applied}")
    assert worker.connections >= 2, "the worker reconnected"
    assert coordinator.applied > applied_before, "the coordinator resumed consuming results"
    check_exactly_once(sink, store, run_ids, documents, "close_all_connections", recovery)
