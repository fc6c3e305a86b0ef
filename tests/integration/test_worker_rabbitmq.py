"""The worker against a real RabbitMQ: results, failures, dead letters, graceful stop, reconnect."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import kombu
import pytest

from engine.core.contracts import ResultMessage, TaskMessage
from engine.runtime import topology
from engine.settings import Settings
from workers.consumer import Worker
from workers.handler_api import TaskContext
from workers.registry import Registry

pytestmark = pytest.mark.integration

TASK_TYPES = ("noop", "data_processing", "http_request", "slow", "boom")


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"key": self.headers.get("Idempotency-Key")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def broker(amqp_url: str) -> Iterator[kombu.Connection]:
    """A test-side connection; the topology is declared and every queue starts empty."""
    with kombu.Connection(amqp_url) as conn:
        channel = conn.default_channel
        queues = [topology.task_queue(t) for t in TASK_TYPES]
        queues += [topology.results_queue(), topology.dead_letter_queue()]
        topology.task_exchange().bind(channel).declare()
        topology.dead_letter_exchange().bind(channel).declare()
        for queue in queues:
            queue.bind(channel).declare()
            queue.bind(channel).purge()
        yield conn


Blocker = threading.Event


@pytest.fixture
def release() -> Iterator[Blocker]:
    event = threading.Event()
    yield event
    event.set()  # never leave a handler thread blocked after the test


@pytest.fixture
def start_worker(amqp_url: str, release: Blocker) -> Iterator[Callable[..., Worker]]:
    started: list[tuple[Worker, threading.Thread]] = []

    def start(grace_period: float = 5.0, name: str | None = None) -> Worker:
        registry = Registry.with_builtins()
        registry.register("slow", lambda task: release.wait(30) and task.payload.get("output"))
        registry.register("boom", _boom)
        settings = Settings(database_url="sqlite://", broker_url=amqp_url, http_allowlist=("127.0.0.1",), prefetch=10)
        worker = Worker(settings, TASK_TYPES, concurrency=4, registry=registry, grace_period=grace_period, name=name)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        assert worker.consuming.wait(10), "the worker did not start consuming"
        started.append((worker, thread))
        return worker

    yield start
    for worker, thread in started:
        worker.stop()
        thread.join(15)
        assert not thread.is_alive(), "the worker did not stop"


def _boom(task: TaskContext) -> Any:
    raise RuntimeError("the handler broke")


def task(task_type: str, payload: dict[str, Any], **extra: Any) -> TaskMessage:
    task_id = uuid.uuid4().hex[:8]
    return TaskMessage(task_id, task_type, 1, 7, payload, f"idem-{task_id}", **extra)


def publish(conn: kombu.Connection, *messages: TaskMessage | str) -> None:
    producer = kombu.Producer(conn.default_channel, exchange=topology.task_exchange(), auto_declare=False)
    for message in messages:
        body, key = (message.encode(), message.task_type) if isinstance(message, TaskMessage) else (message, "noop")
        producer.publish(body, routing_key=key, content_type="application/json", delivery_mode=2)


def read(conn: kombu.Connection, queue: kombu.Queue, count: int, timeout: float = 15.0) -> list[kombu.Message]:
    """Wait for ``count`` messages of ``queue`` (acked)."""
    got: list[kombu.Message] = []

    def on_message(message: kombu.Message) -> None:
        got.append(message)
        message.ack()

    channel = conn.channel()
    try:
        with kombu.Consumer(channel, queues=[queue], on_message=on_message, prefetch_count=100):
            deadline = time.monotonic() + timeout
            while len(got) < count and time.monotonic() < deadline:
                try:
                    conn.drain_events(timeout=0.2)
                except TimeoutError:
                    pass
    finally:
        channel.close()
    assert len(got) >= count, f"expected {count} messages on {queue.name}, got {len(got)}"
    return got


def results(conn: kombu.Connection, count: int, timeout: float = 15.0) -> dict[str, list[ResultMessage]]:
    by_task: dict[str, list[ResultMessage]] = {}
    for message in read(conn, topology.results_queue(), count, timeout):
        result = ResultMessage.decode(message.body)
        by_task.setdefault(result.task_id, []).append(result)
    return by_task


def test_noop_data_and_http_tasks_report_completed(broker, start_worker, http_server) -> None:
    # Given a worker, when tasks of each built-in type are published,
    start_worker()
    noop = task("noop", {"output": {"x": 1}})
    double = {"$expr": {"op": "lambda", "param": "item", "body": {
        "op": "binary", "operator": "*", "left": {"op": "name", "name": "item"}, "right": {"op": "lit", "value": 2}}}}
    data = task("data_processing", {"operation": "transform", "input": [1, 2, 3], "map": double})
    http = task("http_request", {"url": f"{http_server}/"}, timeout=5.0)
    publish(broker, noop, data, http)

    # then each reports completed with its output (``started`` first only if it ran for more
    # than STARTED_AFTER: a short task's result moves it pending -> completed by itself).
    got = results(broker, 3)
    while any(got[m.task_id][-1].status == "started" for m in (noop, data, http) if m.task_id in got):
        for task_id, more in results(broker, 1).items():
            got.setdefault(task_id, []).extend(more)
    for message in (noop, data, http):
        statuses = [r.status for r in got[message.task_id]]
        assert statuses in (["completed"], ["started", "completed"]), (message.task_type, got[message.task_id])
        final = got[message.task_id][-1]
        assert (final.attempt, final.fencing_token) == (1, 7)
        assert final.worker and final.started_at and final.finished_at
    assert got[noop.task_id][-1].output == {"x": 1}
    assert got[data.task_id][-1].output == [2, 4, 6]
    assert got[http.task_id][-1].output["body"] == {"key": http.idempotency_key}
    assert any(entry["level"] == "info" for entry in got[http.task_id][-1].logs)


def test_handler_failures_come_back_as_failure_records(broker, start_worker) -> None:
    start_worker()
    unknown = task("data_processing", {"operation": "process_order", "orderId": 1})
    boom = task("boom", {})
    publish(broker, unknown, boom)

    got = results(broker, 2)
    invalid = got[unknown.task_id][-1]
    assert invalid.status == "failed" and invalid.error is not None
    assert invalid.error.type == "invalid_input" and not invalid.error.retryable
    assert "process_order" in invalid.error.message
    crash = got[boom.task_id][-1]
    assert crash.status == "failed" and crash.error is not None
    assert crash.error.type == "handler" and crash.error.retryable
    assert "the handler broke" in crash.error.message and "RuntimeError" in (crash.error.traceback or "")


def test_missing_secret_is_invalid_input_naming_the_secret(broker, start_worker) -> None:
    start_worker()
    secret = {"$expr": {"op": "get", "obj": {"op": "name", "name": "secrets"}, "key": "NOPE"}}
    message = task("noop", {"output": secret})
    publish(broker, message)
    final = results(broker, 1)[message.task_id][-1]
    assert final.status == "failed" and final.error is not None
    assert final.error.type == "invalid_input" and "NOPE" in final.error.message


def test_undecodable_message_goes_to_the_dead_letter_queue(broker, start_worker) -> None:
    start_worker()
    publish(broker, "this is not json")
    dead = read(broker, topology.dead_letter_queue(), 1)
    assert dead[0].body in (b"this is not json", "this is not json")
    # The worker is still healthy afterwards.
    after = task("noop", {"output": 1})
    publish(broker, after)
    assert [r.status for r in results(broker, 1)[after.task_id]] == ["completed"]


def test_stop_finishes_what_it_can_and_hands_back_the_rest(broker, start_worker, release) -> None:
    # Given a worker with a task that will not finish within the grace period,
    worker = start_worker(grace_period=0.5)
    stuck = task("slow", {"output": "late"})
    quick = task("noop", {"output": "done"})
    publish(broker, stuck, quick)
    got = results(broker, 2)
    assert [r.status for r in got[quick.task_id]] == ["completed"]
    assert got[stuck.task_id][0].status == "started"  # it has run longer than STARTED_AFTER

    # when it is stopped (as SIGTERM does),
    worker.stop()
    deadline = time.monotonic() + 10
    while worker.consuming.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # past the grace period

    # then the stuck task is handed back to its queue, marked redelivered, and no result was sent.
    back = read(broker, topology.task_queue("slow"), 1)
    assert TaskMessage.decode(back[0].body).task_id == stuck.task_id
    assert back[0].delivery_info.get("redelivered") is True
    with pytest.raises(AssertionError):
        results(broker, 1, timeout=0.5)


def test_a_stop_during_a_backlog_returns_and_loses_nothing(broker, amqp_url) -> None:
    # Given a backlog of quick tasks, and workers that start on it (a full prefetch window at once)
    # and are stopped as soon as they consume, while their first deliveries arrive (as SIGTERM
    # right after start does; before the fix a worker handed each delivery back as a copy to the
    # queue it was still consuming, got another one for each, and circulated the backlog until it
    # was killed, so that `flow up` did not stop),
    settings = Settings(database_url="sqlite://", broker_url=amqp_url, prefetch=50)
    backlog = [task("noop", {"output": i}) for i in range(3000)]
    publish(broker, *backlog)
    for _ in range(5):
        worker = Worker(settings, ("noop",), concurrency=4, registry=Registry.with_builtins(), grace_period=2.0)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        assert worker.consuming.wait(10)
        worker.stop()
        thread.join(10)
        # then each returns,
        assert not thread.is_alive(), "the worker did not stop within 10 s with a backlog in its queue"

    # and every task was either reported or is back in its queue, none both.
    reported = results(broker, 0, timeout=1.0)
    done = {task_id for task_id, rs in reported.items() if rs[-1].status == "completed"}
    left = [TaskMessage.decode(m.body).task_id
            for m in read(broker, topology.task_queue("noop"), len(backlog) - len(done), timeout=10)]
    assert not done & set(left), "a task was both completed and handed back"
    assert done | set(left) == {t.task_id for t in backlog}


def _connection_pids(name: str) -> list[str]:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return [line.split("\t", 1)[0] for line in out.splitlines() if name in line]


def test_worker_resumes_after_the_broker_closes_its_connection(broker, start_worker) -> None:
    name = f"flow-test-{uuid.uuid4().hex[:8]}"
    worker = start_worker(name=name)
    pids: list[str] = []
    deadline = time.monotonic() + 20
    while not pids and time.monotonic() < deadline:
        pids = _connection_pids(name)
    assert pids, "the worker's connection is not listed by rabbitmqctl"

    # When the broker closes the worker's connection,
    subprocess.run(["rabbitmqctl", "-q", "close_connection", pids[0], "test: simulated broker restart"],
                   check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 20
    while worker.connections < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker.connections >= 2, "the worker did not reconnect"
    assert worker.consuming.wait(10)

    # then it consumes again.
    message = task("noop", {"output": "again"})
    publish(broker, message)
    assert results(broker, 1)[message.task_id][-1].output == "again"


class _Slow(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        time.sleep(3)
        self.send_response(200)
        self.end_headers()


def test_sigterm_stops_a_worker_process_and_hands_back_its_task(broker, amqp_url) -> None:
    # Given a worker process busy with a slow HTTP call,
    import os
    import signal
    import sys

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    env = {**os.environ, "BROKER_URL": amqp_url, "FLOW_HTTP_ALLOWLIST": "127.0.0.1"}
    code = ("from engine.settings import Settings; from workers.consumer import run_worker; "
            "run_worker(Settings.from_env(), ['http_request'], 2, grace_period=0.5)")
    process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=os.getcwd())
    try:
        message = task("http_request", {"url": f"http://127.0.0.1:{httpd.server_address[1]}/"}, timeout=10.0)
        publish(broker, message)
        assert results(broker, 1)[message.task_id][0].status == "started"

        # when it gets SIGTERM,
        process.send_signal(signal.SIGTERM)

        # then it exits cleanly within the grace period, and the task is back in its queue.
        assert process.wait(timeout=10) == 0
        back = read(broker, topology.task_queue("http_request"), 1)
        assert TaskMessage.decode(back[0].body).task_id == message.task_id
    finally:
        if process.poll() is None:
            process.kill()
        httpd.shutdown()
        httpd.server_close()
