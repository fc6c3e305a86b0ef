"""Every long-running process waits for a database (or broker) that is unreachable at start
(issue 16 §2): it stays up, logs each try with its backoff, and starts once the server answers;
``flow serve`` and ``flow up`` answer ``/api/ready`` with 503 meanwhile, then 200. The server is
made unreachable by a TCP proxy in front of it that refuses connections until restored."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text

from engine.store import db
from tests.faults.harness import ROOT, _die_with_parent, flow_cmd, kill_group
from tests.faults.proxy import Proxy

pytestmark = pytest.mark.integration

WAIT_LINE = "is unreachable"


@pytest.fixture
def migrated_schema(postgres_url: str) -> Iterator[str]:
    name = f"w_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    engine = db.make_engine(postgres_url, connect_args={"options": f"-csearch_path={name}"})
    db.upgrade(engine)
    engine.dispose()
    yield name
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    admin.dispose()


@pytest.fixture
def pg_proxy(postgres_url: str) -> Iterator[Proxy]:
    parts = urlsplit(postgres_url.replace("+psycopg2", ""))
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.cut()  # unreachable until the test restores it
    yield proxy
    proxy.close()


def _via(url: str, proxy: Proxy, schema: str | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    netloc = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    query = f"?options=-csearch_path%3D{schema}" if schema else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "RABBITMQ_", "FLOW_"))}
        base.update(FLOW_LOG_FORMAT="text", PYTHONPATH=str(ROOT), FLOW_HTTP_ALLOWLIST="127.0.0.1", **env)
        self.log = log
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(flow_cmd(*args), env=base, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.text()}"
            assert time.monotonic() < deadline, f"no {needle!r} within {timeout}s:\n{self.text()}"
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.proc)
        return self.proc.wait(5)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:
        p.stop()


def _ready(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/ready", timeout=5).status_code
    except httpx.HTTPError:
        return None


def _wait_ready(port: int, want: int, timeout: float = 40.0) -> list[int | None]:
    seen: list[int | None] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(_ready(port))
        if seen[-1] == want:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"/api/ready never answered {want}: {seen[-10:]}")


@pytest.mark.parametrize("command, started", [
    (["coordinator"], "coordinator started"),
    (["scheduler"], "scheduler started"),
])
def test_a_process_waits_for_the_database(command, started, postgres_url, amqp_url, migrated_schema,
                                          pg_proxy, processes, tmp_path) -> None:
    proc = Process(command, {"DATABASE_URL": _via(postgres_url, pg_proxy, migrated_schema),
                             "BROKER_URL": amqp_url}, tmp_path / "p.log")
    processes.append(proc)
    proc.wait_for(WAIT_LINE)  # alive, and says why it waits
    time.sleep(1.0)
    assert proc.proc.poll() is None and started not in proc.text()
    assert "retrying in" in proc.text()
    pg_proxy.restore()
    proc.wait_for(started, timeout=40)
    assert proc.stop() == 0, proc.text()


def test_flow_serve_answers_not_ready_until_the_database_is_up(postgres_url, migrated_schema, pg_proxy,
                                                               processes, tmp_path) -> None:
    port = _free_port()
    proc = Process(["serve", "--port", str(port)],
                   {"DATABASE_URL": _via(postgres_url, pg_proxy, migrated_schema), "BROKER_URL": "memory://",
                    "FLOW_API_TOKEN": "t"}, tmp_path / "serve.log")
    processes.append(proc)
    assert _wait_ready(port, 503)[-1] == 503
    proc.wait_for(WAIT_LINE)
    pg_proxy.restore()
    _wait_ready(port, 200)
    assert proc.stop() == 0, proc.text()


def test_flow_up_answers_not_ready_until_the_database_is_up(postgres_url, amqp_url, migrated_schema,
                                                            pg_proxy, processes, tmp_path) -> None:
    port = _free_port()
    proc = Process(["up"], {"DATABASE_URL": _via(postgres_url, pg_proxy, migrated_schema), "BROKER_URL": amqp_url,
                            "PORT": str(port), "FLOW_API_TOKEN": "t"}, tmp_path / "up.log")
    processes.append(proc)
    assert _wait_ready(port, 503)[-1] == 503
    proc.wait_for(WAIT_LINE)
    pg_proxy.restore()
    _wait_ready(port, 200)
    proc.wait_for("coordinator started", timeout=40)
    assert proc.stop() == 0, proc.text()


def test_a_worker_waits_for_the_broker(amqp_url, processes, tmp_path) -> None:
    parts = urlsplit(amqp_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    proxy.cut()
    try:
        proc = Process(["worker", "--queues", "http_request", "--concurrency", "1"],
                       {"BROKER_URL": _via(amqp_url, proxy)}, tmp_path / "worker.log")
        processes.append(proc)
        proc.wait_for("reconnecting in")
        time.sleep(1.0)
        assert proc.proc.poll() is None and "flow.worker: worker " not in proc.text()
        proxy.restore()
        proc.wait_for("flow.worker: worker ", timeout=60)  # "worker NAME consuming http_request"
        assert proc.stop() == 0, proc.text()
    finally:
        proxy.close()
