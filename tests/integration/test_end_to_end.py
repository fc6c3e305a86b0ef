"""A coordinator and workers (threads of this process) run HTTP workflows on PostgreSQL + RabbitMQ.

The HTTP steps call a local server started by the test, allow-listed for these tests only.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator

import kombu
import pytest

from engine.core.contracts import RESULT_QUEUE, TASK_EXCHANGE, ResultMessage, TaskMessage
from engine.runtime.coordinator import Coordinator
from engine.runtime.messaging import Broker
from engine.runtime.topology import dead_letter_queue
from engine.settings import Settings
from tests.integration.http_sink import Request, Sink

pytestmark = pytest.mark.integration

TERMINAL = {"completed", "failed", "cancelled", "compensated", "compensation_failed"}

CHAIN = """
flow 1
workflow chain(base: string, n: int) {
  defaults { timeout 5s }
  step one: http {
    method: "POST"  url: "${params.base}/one"  body: { n: params.n }
    compensate none "test endpoint"
  }
  step two: http {
    method: "POST"  url: "${params.base}/two"  body: { n: steps.one.output.body.n + 1 }
    compensate none "test endpoint"
  }
  step three: http {
    method: "POST"  url: "${params.base}/three"  body: { n: steps.two.output.body.n * 10 }
    compensate none "test endpoint"
  }
  output { n: steps.three.output.body.n }
}
"""

# charge and reserve run in parallel; the sink answers reserve later, so the completion order is
# charge then reserve and the compensations must run release (reserve's) first, then refund.
SAGA = """
flow 1
workflow order_saga(base: string, order_id: string) {
  defaults {
    timeout 5s
    retry { attempts: 3, delay: 200ms, backoff: 2.0, max_delay: 5s, jitter: false,
            errors: ["http.5xx", "network", "timeout"] }
  }
  step validate: http {
    method: "POST"  url: "${params.base}/validate"  body: { order_id: params.order_id }
    compensate none "read-only call"
  }
  step charge: http {
    method: "POST"  url: "${params.base}/charges"  body: { order_id: steps.validate.output.body.order_id, amount: 42 }
    compensate http {
      method: "POST"  url: "${params.base}/refunds"  body: { charge_id: self.output.body.id }
    }
  }
  step reserve: http {
    method: "POST"  url: "${params.base}/reservations"  body: { order_id: steps.validate.output.body.order_id, sku: "A-1" }
    compensate http {
      method: "DELETE"  url: "${params.base}/reservations/${self.output.body.id}"
    }
  }
  step ship: http {
    method: "POST"  url: "${params.base}/shipments"
    body: { charge: steps.charge.output.body.id, reservation: steps.reserve.output.body.id }
    compensate none "last critical step"
  }
}
"""


@pytest.fixture(scope="module")
def settings(postgres_url: str, amqp_url: str) -> Settings:
    from engine.store import db

    db.upgrade(postgres_url)
    return Settings.from_env({
        "DATABASE_URL": postgres_url,
        "BROKER_URL": amqp_url,
        "FLOW_HTTP_ALLOWLIST": "127.0.0.1",  # the local sink; only these tests allow it
    })


@pytest.fixture(scope="module")
def store(settings: Settings) -> Any:
    from engine.store import Store
    from engine.store.db import make_engine

    return Store(make_engine(settings.database_url), lease_seconds=settings.lease_seconds)


@pytest.fixture(scope="module")
def engine_threads(settings: Settings, store: Any) -> Iterator[None]:
    """A coordinator and a worker (all task types) in threads, stopped gracefully at the end."""
    from workers.consumer import Worker

    stop = threading.Event()
    broker = Broker(settings)
    coordinator = Coordinator(store, broker, settings, task_types=("http_request", "compensation"))
    worker = Worker(settings, ("http_request", "data_processing", "compensation", "noop"),
                    concurrency=8, grace_period=5)
    threads = [threading.Thread(target=coordinator.run, args=(stop,), daemon=True),
               threading.Thread(target=worker.run, args=(stop,), daemon=True)]
    for thread in threads:
        thread.start()
    assert worker.consuming.wait(15), "the worker did not start consuming"
    yield
    stop.set()
    for thread in threads:
        thread.join(20)
    broker.close()


def wait_for_run(store: Any, run_id: Any, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        document = store.get_run(run_id)
        if document["status"] in TERMINAL:
            return document
        assert time.monotonic() < deadline, f"run did not finish in {timeout}s: {document}"
        time.sleep(0.05)


def deploy(store: Any, source: str, name: str) -> int:
    deployed = {d.name: d for d in store.deploy(source, f"{name}.flow")}
    return deployed[name].version


@dataclass
class Outgoing:
    id: int
    exchange: str
    routing_key: str
    body: str
    headers: dict[str, Any] = field(default_factory=dict)


def result(task_id: str) -> Outgoing:
    body = ResultMessage(task_id=task_id, attempt=1, fencing_token=1, status="started").encode()
    return Outgoing(0, TASK_EXCHANGE, RESULT_QUEUE, body)


# First in the module: the coordinator of ``engine_threads`` (started by the tests below) would
# otherwise consume these results. Other modules of the session may have left results and dead
# letters behind, hence the unique ids.
def test_results_are_acked_only_after_the_handler_returned(settings: Settings) -> None:
    tag = uuid.uuid4().hex
    mine = {f"{tag}-a", f"{tag}-b", f"{tag}-c"}
    bad_body = "{not json " + tag
    broker = Broker(settings)
    broker.declare_topology(["noop"])
    consumer = broker.result_consumer(batch_size=50)
    try:
        # Given three results and an undecodable one, published with confirms
        broker.publisher().publish_batch(
            [result(f"{tag}-a"), result(f"{tag}-b"), Outgoing(0, TASK_EXCHANGE, RESULT_QUEUE, bad_body),
             result(f"{tag}-c")])

        # When the handler (the store transaction) fails, nothing is acked
        def failing(batch: list[ResultMessage]) -> None:
            raise RuntimeError("database down")

        with pytest.raises(RuntimeError):
            consumer.drain(failing, timeout=5)
        # Then the batch comes again (the undecodable one went to the dead-letter queue)
        seen: list[str] = []

        def record(batch: list[ResultMessage]) -> None:
            seen.extend(r.task_id for r in batch if r.task_id in mine)

        deadline = time.monotonic() + 10
        while len(seen) < 3 and time.monotonic() < deadline:
            consumer.drain(record, timeout=1)
        assert sorted(seen) == sorted(mine)
        # and once acked, it does not
        consumer.drain(record, timeout=0.5)
        assert len(seen) == 3
    finally:
        consumer.close()
        broker.close()
    dead = take_dead_letters(settings, lambda m: m.body in (bad_body, bad_body.encode()))
    assert len(dead) == 1
    assert "not JSON" in dead[0].headers["x-flow-reason"]


def test_three_step_chain_completes_with_the_right_outputs(store: Any, engine_threads: None) -> None:
    # Given an endpoint that echoes the number it gets
    sink = Sink(lambda r: (200, {"n": r.body["n"], "path": r.path})).start()
    try:
        version = deploy(store, CHAIN, "chain")
        # When a run of the chain starts
        run_id = store.start_run("chain", {"base": sink.url, "n": 1}, version=version)
        document = wait_for_run(store, run_id)
    finally:
        sink.stop()
    # Then it completes, each step once, with the outputs threaded through
    assert document["status"] == "completed", document
    assert document["output"] == {"n": 20}
    steps = {s["name"]: s for s in document["steps"]}
    assert [steps[n]["status"] for n in ("one", "two", "three")] == ["completed"] * 3
    assert [steps[n]["output"]["body"]["n"] for n in ("one", "two", "three")] == [1, 2, 20]
    assert [r.path for r in sink.effects()] == ["/one", "/two", "/three"]
    assert all(r.key for r in sink.requests), "every HTTP step sends an Idempotency-Key"


def saga_sink() -> Sink:
    def respond(request: Request) -> tuple[int, Any]:
        path = request.path
        if path == "/validate":
            return 200, {"order_id": request.body["order_id"], "total": 42}
        if path == "/charges":
            return 201, {"id": "ch_1", "amount": request.body["amount"]}
        if path == "/reservations":
            time.sleep(0.3)  # completes after the charge
            return 201, {"id": "res_7", "sku": request.body["sku"]}
        if path == "/shipments":
            return 503, {"error": "shipping is down"}
        if path == "/refunds" or path.startswith("/reservations/"):
            return 200, {"ok": True}
        return 404, {"error": f"no route {path}"}

    return Sink(respond).start()


def take_dead_letters(settings: Settings, match: Any) -> list[Any]:
    """Take the messages of ``flow.dead`` for which ``match(message)`` is true; put the others back.

    The queue is shared by the whole test session, so other tests' dead letters may be there.
    """
    taken: list[Any] = []
    others: list[Any] = []
    with kombu.Connection(settings.broker_url) as conn:
        queue = dead_letter_queue(settings.quorum_queues)(conn.default_channel)
        while (message := queue.get(no_ack=False)) is not None:
            (taken if match(message) else others).append(message)
        for message in taken:
            message.ack()
        for message in others:
            message.requeue()
    return taken


def dead_letters(settings: Settings, run_id: str) -> list[TaskMessage]:
    """The dead-lettered tasks of ``run_id`` (taken off ``flow.dead``)."""

    def of_run(message: Any) -> bool:
        try:
            return TaskMessage.decode(message.body).run_id == run_id
        except Exception:
            return False

    return [TaskMessage.decode(m.body) for m in take_dead_letters(settings, of_run)]


def test_order_saga_compensates_in_reverse_completion_order(
    settings: Settings, store: Any, engine_threads: None
) -> None:
    # Given a shipping endpoint that always answers 503
    sink = saga_sink()
    try:
        version = deploy(store, SAGA, "order_saga")
        # When an order runs
        run_id = store.start_run("order_saga", {"base": sink.url, "order_id": "o-1"}, version=version)
        document = wait_for_run(store, run_id)
    finally:
        sink.stop()

    # Then ship was tried 3 times, with the backoff of the policy (200 ms, then 400 ms; no jitter)
    ships = sink.sent("/shipments")
    assert len(ships) == 3, [r.path for r in sink.requests]
    gaps = [b.at - a.at for a, b in zip(ships, ships[1:])]
    print(f"\nship retry gaps: {', '.join(f'{g:.3f}s' for g in gaps)} (policy: 0.2s, 0.4s)")
    # never early; late by at most a timer pass plus scheduling slack
    assert 0.2 <= gaps[0] < 0.2 + 0.5 and 0.4 <= gaps[1] < 0.4 + 0.5, gaps

    # and the compensations ran in reverse completion order, exactly once each, with the right bodies
    undo = [(r.method, r.path, r.body) for r in sink.effects()
            if r.path == "/refunds" or r.path.startswith("/reservations/")]
    assert undo == [("DELETE", "/reservations/res_7", None), ("POST", "/refunds", {"charge_id": "ch_1"})]
    assert len(sink.sent("/refunds")) == 1 and len(sink.sent("/reservations/")) == 1

    # and the run is compensated, ship failed, charge and reserve compensated
    assert document["status"] == "compensated", document
    steps = {s["name"]: s for s in document["steps"] if s.get("kind", "step") == "step"}
    assert steps["ship"]["status"] == "failed"
    assert steps["ship"]["attempts"] == 3
    assert steps["charge"]["status"] == "compensated"
    assert steps["reserve"]["status"] == "compensated"

    # and the dead-letter queue holds the failed ship task
    dead = dead_letters(settings, str(run_id))
    assert [t.step for t in dead] == ["ship"], dead

    # and the run's logs say what happened
    text = "\n".join(str(entry.get("message", "")) for entry in store.task_logs(run_id=str(run_id))).lower()
    print("run logs:\n" + text)
    assert "ship" in text and "503" in text
    assert "compensat" in text
