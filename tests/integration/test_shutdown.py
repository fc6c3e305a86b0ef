"""Graceful shutdown: each long-running ``flow`` process exits cleanly on SIGTERM, losing nothing.

Each test starts the real command as a subprocess against the session's PostgreSQL database and
RabbitMQ virtual host, waits until it says it is working, sends SIGTERM and expects exit status 0
within the grace period. The worker is stopped while a task is in flight: the task is either
finished (its result published, its message acked) or handed back to the queue.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kombu
import pytest

from engine.core.contracts import TaskMessage
from engine.runtime.topology import results_queue, task_exchange, task_queue
from engine.store import db

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FLOW = [sys.executable, "-c", "from flow.cli.main import main; main()"]


@pytest.fixture(scope="module")
def env(postgres_url: str, amqp_url: str) -> dict[str, str]:
    db.upgrade(postgres_url)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLOW_", "DATABASE_URL", "BROKER_URL"))}
    return {**base, "DATABASE_URL": postgres_url, "BROKER_URL": amqp_url, "FLOW_LOG_FORMAT": "json",
            "FLOW_HTTP_ALLOWLIST": "127.0.0.1", "PYTHONUNBUFFERED": "1", "FLOW_API_TOKEN": "t" * 32}


class Process:
    """A ``flow`` subprocess whose stderr lines are collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([*FLOW, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"no {text!r} in the output:\n" + "\n".join(self.lines[-30:]))

    def terminate(self, grace: float) -> float:
        """SIGTERM, then the seconds it took to exit (fails if it took longer than ``grace``)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"still running {grace}s after SIGTERM:\n" + "\n".join(self.lines[-30:]))
        self._reader.join(5)
        assert code == 0, f"exit status {code}:\n" + "\n".join(self.lines[-30:])
        return time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_coordinator_stops_on_sigterm(env: dict[str, str], processes: list[Process]) -> None:
    coordinator = Process(["coordinator"], env)
    processes.append(coordinator)
    coordinator.wait_for("coordinator started")
    time.sleep(0.3)  # inside its loop
    coordinator.terminate(grace=15)
    assert any("coordinator stopped" in line for line in coordinator.lines)


def test_scheduler_stops_on_sigterm(env: dict[str, str], processes: list[Process]) -> None:
    scheduler = Process(["scheduler"], {**env, "FLOW_RETENTION_DAYS": "30"})
    processes.append(scheduler)
    scheduler.wait_for("scheduler started")
    time.sleep(0.3)
    scheduler.terminate(grace=15)
    assert any("scheduler stopped" in line for line in scheduler.lines)


def test_serve_stops_on_sigterm(env: dict[str, str], processes: list[Process]) -> None:
    port = _free_port()
    serve = Process(["serve", "--host", "127.0.0.1", "--port", str(port)], env)
    processes.append(serve)
    serve.wait_for("listening")
    _wait_http(f"http://127.0.0.1:{port}/api/ready")
    serve.terminate(grace=15)


def test_serve_answers_its_servers_refusals_in_json(env: dict[str, str], processes: list[Process]) -> None:
    """gunicorn's own answers (a request line or header too long) are the API's JSON envelope."""
    port = _free_port()
    serve = Process(["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--threads", "2"], env)
    processes.append(serve)
    _wait_http(f"http://127.0.0.1:{port}/api/ready", process=serve)
    # Just past gunicorn's limits (request line 4094, header 16384), so that it has read the whole
    # request when it answers: unread bytes would make the kernel reset the connection.
    for request, status in ((b"GET /api/runs?x=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),
                            (b"GET /api/runs HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 17000 + b"\r\n\r\n", 431)):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split()[1] == str(status).encode(), answer[:300]
        assert b"Content-Type: application/json" in head, head
        assert json.loads(body)["error"]["message"], body
    serve.terminate(grace=15)


def test_up_stops_on_sigterm(env: dict[str, str], processes: list[Process]) -> None:
    port = _free_port()
    up = Process(["up"], {**env, "PORT": str(port)})
    processes.append(up)
    _wait_http(f"http://127.0.0.1:{port}/api/ready", process=up)
    up.terminate(grace=45)
    assert any("stopped" in line for line in up.lines)


def _wait_http(url: str, timeout: float = 30.0, process: Process | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            if process is not None and process.proc.poll() is not None:
                break
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer" + ("\n" + "\n".join(process.lines[-30:]) if process else ""))


# -- the worker: a task in flight when SIGTERM arrives ------------------------------------------


class SlowTarget:
    """An HTTP target that answers after ``delay`` seconds and records when requests arrive."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrived = threading.Event()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                target.arrived.set()
                time.sleep(target.delay)
                body = b'{"ok": true}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slow"

    def close(self) -> None:
        self.server.shutdown()


def _publish_task(amqp_url: str, url: str) -> TaskMessage:
    task = TaskMessage(task_id=str(uuid.uuid4()), task_type="http_request", attempt=1, fencing_token=1,
                       payload={"method": "GET", "url": url}, idempotency_key="k:1", timeout=60)
    with kombu.Connection(amqp_url) as conn:
        channel = conn.channel()
        for entity in (task_exchange(), task_queue("http_request"), results_queue()):
            entity.bind(channel).declare()
        conn.Producer(channel).publish(task.encode(), exchange=task_exchange(), routing_key="http_request",
                                       content_type="application/json", delivery_mode=2)
    return task


def _drain(amqp_url: str, queue: kombu.Queue) -> list[Any]:
    bodies = []
    with kombu.Connection(amqp_url) as conn:
        bound = queue(conn.channel())
        while (message := bound.get(no_ack=True)) is not None:
            bodies.append(json.loads(message.body))
    return bodies


def _depth(amqp_url: str, queue: kombu.Queue) -> int:
    with kombu.Connection(amqp_url) as conn:
        return int(queue(conn.channel()).queue_declare(passive=True).message_count)


@pytest.mark.parametrize("grace, delay, outcome", [(15.0, 1.5, "finished"), (0.5, 6.0, "handed back")])
def test_worker_finishes_or_hands_back_its_task(env: dict[str, str], amqp_url: str, processes: list[Process],
                                               grace: float, delay: float, outcome: str) -> None:
    # Given: a worker running one slow HTTP task (the target answers after ``delay`` seconds)
    _drain(amqp_url, results_queue())
    _drain(amqp_url, task_queue("http_request"))
    target = SlowTarget(delay)
    try:
        worker = Process(["worker", "--queues", "http_request", "--grace-period", str(grace)], env)
        processes.append(worker)
        worker.wait_for("consuming")
        task = _publish_task(amqp_url, target.url)
        assert target.arrived.wait(20), "\n".join(worker.lines)

        # When: SIGTERM arrives while the request is in flight
        worker.terminate(grace=grace + 15)

        # Then: the task was finished (result published, message acked) or handed back (requeued)
        results = [r for r in _drain(amqp_url, results_queue()) if r["task_id"] == task.task_id]
        statuses = [r["status"] for r in results]
        requeued = _drain(amqp_url, task_queue("http_request"))
        if outcome == "finished":
            assert statuses == ["started", "completed"]
            assert requeued == []
        else:
            assert "completed" not in statuses
            assert [m["task_id"] for m in requeued] == [task.task_id]
    finally:
        target.close()
