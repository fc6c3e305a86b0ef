"""A task held unstarted by a live but stalled worker is dispatched again within its delivery lease.

Worker A has one handler thread, stuck in a handler that does not return; the second task it took
waits in its prefetch and never starts. A stays connected, so the broker never redelivers that
task: only the delivery lease (``received`` report, ``FLOW_LEASE_SECONDS``) gets it to worker B.
On PostgreSQL + RabbitMQ, with a coordinator and both workers as threads of this process.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Iterator

import pytest

from engine.runtime.coordinator import Coordinator
from engine.runtime.messaging import Broker
from engine.settings import Settings
from engine.store.context import LEASE_GRACE_SECONDS
from workers.consumer import RECEIVED_AFTER_LEASE_PART, Worker
from workers.handler_api import TaskContext
from workers.registry import Registry

pytestmark = pytest.mark.integration

LEASE = 2.0
ONE_STEP = """
flow 1
workflow stalled_one(i: int) {
  step only: noop { output: params.i }
}
"""


@pytest.fixture(scope="module")
def settings(postgres_url: str, amqp_url: str) -> Settings:
    from engine.store import db

    db.upgrade(postgres_url)
    return Settings.from_env({"DATABASE_URL": postgres_url, "BROKER_URL": amqp_url,
                              "FLOW_LEASE_SECONDS": str(LEASE)})


@pytest.fixture(scope="module")
def store(settings: Settings) -> Any:
    from engine.store import Store
    from engine.store.db import make_engine

    return Store(make_engine(settings.database_url), lease_seconds=settings.lease_seconds)


class Threads:
    def __init__(self) -> None:
        self.stops: list[threading.Event] = []
        self.threads: list[threading.Thread] = []

    def start(self, target: Any) -> threading.Event:
        stop = threading.Event()
        thread = threading.Thread(target=target, args=(stop,), daemon=True)
        thread.start()
        self.stops.append(stop)
        self.threads.append(thread)
        return stop

    def stop_all(self) -> None:
        for stop in self.stops:
            stop.set()
        for thread in self.threads:
            thread.join(20)


@pytest.fixture(autouse=True)
def empty_queues(settings: Settings) -> None:
    """The session's vhost is shared: tasks other tests left in ``noop``'s queue (or results in
    ``flow.results``) would be taken by these workers first."""
    import kombu

    from engine.runtime import topology

    with kombu.Connection(settings.broker_url) as conn:
        channel = conn.default_channel
        for queue in (topology.task_queue("noop"), topology.results_queue()):
            queue.bind(channel).declare()
            queue.bind(channel).purge()


@pytest.fixture
def threads() -> Iterator[Threads]:
    running = Threads()
    yield running
    running.stop_all()


def registry_with(noop: Any) -> Registry:
    registry = Registry()
    registry.register("noop", noop)
    return registry


def test_a_task_held_unstarted_by_a_stalled_worker_runs_elsewhere_within_the_lease(
        settings: Settings, store: Any, threads: Threads) -> None:
    # Given a coordinator and worker A, whose only handler thread gets stuck in the first task
    broker = Broker(settings)
    threads.start(Coordinator(store, broker, settings, task_types=("noop",)).run)
    release, stuck = threading.Event(), threading.Event()
    ran_on_a: list[Any] = []

    def stuck_handler(task: TaskContext) -> Any:
        ran_on_a.append(task.message.task_id)
        stuck.set()
        release.wait(60)
        return task.payload.get("output")

    worker_a = Worker(settings, ("noop",), concurrency=1, registry=registry_with(stuck_handler), grace_period=1)
    threads.start(worker_a.run)
    assert worker_a.consuming.wait(15), "worker A did not start consuming"
    version = {d.name: d for d in store.deploy(ONE_STEP, "stalled_one.flow")}["stalled_one"].version
    run_ids = [store.start_run("stalled_one", {"i": i}, version=version) for i in range(2)]
    # and A holds both tasks: one stuck in its handler, the other waiting for that thread
    assert stuck.wait(15), "worker A never started a task"
    deadline = time.monotonic() + 10
    while len(worker_a._inflight) < 2:
        assert time.monotonic() < deadline, "worker A did not take the second task"
        time.sleep(0.05)

    # When a healthy worker B joins (the broker gives it nothing: A holds both deliveries)
    ran_on_b: list[Any] = []

    def quick(task: TaskContext) -> Any:
        ran_on_b.append(task.message.task_id)
        return task.payload.get("output")

    worker_b = Worker(settings, ("noop",), concurrency=2, registry=registry_with(quick))
    threads.start(worker_b.run)
    assert worker_b.consuming.wait(15), "worker B did not start consuming"
    began = time.monotonic()

    # Then the waiting task is dispatched again and its run completes on B within the bound,
    # while A's handler is still stuck; the stuck task, although it runs longer than the lease,
    # is not dispatched again: A's heartbeats renew its lease
    stuck_id = ran_on_a[0]
    task_of = {r: store.get_run(r)["steps"][0]["task_id"] for r in run_ids}
    (waiting_run,) = [r for r in run_ids if task_of[r] != stuck_id]
    received_after = LEASE / RECEIVED_AFTER_LEASE_PART
    bound = received_after + LEASE + LEASE_GRACE_SECONDS + 5.0  # + timer pass and scheduling slack
    while store.get_run(waiting_run)["status"] != "completed":
        assert time.monotonic() - began < bound, (
            f"the task held unstarted by the stalled worker did not complete within {bound:.0f}s; "
            f"runs: {[store.get_run(r)['status'] for r in run_ids]}")
        time.sleep(0.1)
    time.sleep(LEASE + LEASE_GRACE_SECONDS)  # past the stuck task's first lease
    assert not release.is_set() and ran_on_b == [task_of[waiting_run]]
    assert store.get_run(run_ids[run_ids.index(waiting_run) ^ 1])["status"] == "running"

    # And once A's handler returns, the other run completes too, and A does not run the task it
    # held past its delivery lease (it only ran on B)
    release.set()
    deadline = time.monotonic() + 20
    while any(store.get_run(r)["status"] != "completed" for r in run_ids):
        assert time.monotonic() < deadline, [store.get_run(r)["status"] for r in run_ids]
        time.sleep(0.1)
    time.sleep(0.5)  # A's freed thread takes the held task, finds its lease expired, drops it
    assert ran_on_a == [stuck_id] and ran_on_b == [task_of[waiting_run]]
    broker.close()


class StalledLoopWorker(Worker):
    """A worker whose loop gets stuck on the first delivery it takes (a deadlock in the pump, say):
    it keeps its broker connection but reports, acks and starts nothing."""

    def __init__(self, *args: Any, release: threading.Event, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = release
        self.took = threading.Event()

    def _on_message(self, message: Any) -> None:
        self.took.set()
        self.release.wait(60)
        super()._on_message(message)


def test_deliveries_of_a_worker_whose_loop_is_stuck_go_to_other_workers_within_the_lease(
        settings: Settings, store: Any, threads: Threads) -> None:
    # Given a coordinator and a worker whose loop is stuck on the first delivery it took
    broker = Broker(settings)
    threads.start(Coordinator(store, broker, settings, task_types=("noop",)).run)
    release = threading.Event()
    ran: list[tuple[str, Any]] = []

    def record(where: str) -> Any:
        def handle(task: TaskContext) -> Any:
            ran.append((where, task.message.task_id))
            return task.payload.get("output")
        return handle

    stalled = StalledLoopWorker(settings, ("noop",), concurrency=1, registry=registry_with(record("A")),
                                grace_period=1, release=release)
    threads.start(stalled.run)
    assert stalled.consuming.wait(15), "worker A did not start consuming"
    version = {d.name: d for d in store.deploy(ONE_STEP, "stalled_one.flow")}["stalled_one"].version
    run_ids = [store.start_run("stalled_one", {"i": i}, version=version) for i in range(2)]
    assert stalled.took.wait(15), "worker A took no delivery"

    # When a healthy worker B joins
    healthy = Worker(settings, ("noop",), concurrency=2, registry=registry_with(record("B")))
    threads.start(healthy.run)
    assert healthy.consuming.wait(15), "worker B did not start consuming"
    began = time.monotonic()

    # Then both runs complete on B within the lease (A's watchdog cut its connection, and the
    # broker delivered what A held to B), although A's loop is still stuck
    bound = LEASE + 8.0  # + redelivery and scheduling slack
    while any(store.get_run(r)["status"] != "completed" for r in run_ids):
        assert time.monotonic() - began < bound, (
            f"the runs did not complete within {bound:.0f}s of a stalled worker's loop: "
            f"{[store.get_run(r)['status'] for r in run_ids]}")
        time.sleep(0.1)
    assert not release.is_set() and sorted(where for where, _ in ran) == ["B", "B"]

    # And once A's loop is free again, it does not run what it held on the cut connection
    release.set()
    time.sleep(1.0)
    assert sorted(where for where, _ in ran) == ["B", "B"]
    broker.close()
