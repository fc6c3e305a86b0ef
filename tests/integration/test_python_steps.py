"""Python step types end to end: ``@step_type`` functions in a module of the test's own, run by
``flow worker --import`` (PostgreSQL + RabbitMQ, separate ``serve``/``coordinator``/``worker``
processes) and by ``flow up --import`` (the embedded default), driven with the client.

The step functions append what they saw (idempotency key, attempt, times) to a JSON-lines file, so
the tests can check what ran, how often and when, from outside the worker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import flow
from tests.integration.test_client import ADMIN_TOKEN, FLOW_CLI, ROOT, Server, _clean_env

pytestmark = pytest.mark.integration

STEPS = '''
import asyncio, json, os, time
from flow import NonRetryable, Retryable, step_type

JOURNAL = os.environ["E2E_JOURNAL"]


def note(ctx, **data):
    with open(JOURNAL, "a") as out:
        out.write(json.dumps({"run": ctx.run_id, "step": ctx.step, "attempt": ctx.attempt,
                              "key": ctx.idempotency_key, "time": time.time(), **data}) + "\\n")


def seen(key):
    with open(JOURNAL) as journal:
        return any(json.loads(line).get("key") == key for line in journal)


@step_type("e2e.charge", config={"amount": int, "delay": float})
def charge(ctx, amount, delay=0.0):
    ctx.logger.info("charging %s, attempt %s", amount, ctx.attempt, amount=amount)
    note(ctx, event="start")
    if ctx.attempt == 1 and delay:
        note(ctx, event="retryable")
        raise Retryable("gateway busy", delay=delay)
    return {"charged": amount, "attempt": ctx.attempt}


@step_type("e2e.declined")
def declined(ctx, reason: str):
    note(ctx, event="start")
    raise NonRetryable(reason)


@step_type("e2e.buggy")
def buggy(ctx):
    note(ctx, event="start")
    return {"x": 1} ["y"]


@step_type("e2e.mail")
async def mail(ctx, to: str):
    await asyncio.sleep(0.01)
    ctx.logger.warning("mailed %s", to)
    return {"to": to}


@step_type("e2e.slow")
def slow(ctx, seconds: float):
    again = seen(ctx.idempotency_key)
    note(ctx, event="start", again=again)
    if not again:
        time.sleep(seconds)  # the first delivery: the worker is killed meanwhile
    return {"again": again}
'''

SOURCE = """
flow 1
workflow e2e_pay(amount: int, delay: float = 0.0) {
  step charge: e2e.charge { amount: params.amount, delay: params.delay }
  step mail: e2e.mail { to: "ada@example.com", after charge }
  output { charge: steps.charge.output, mail: steps.mail.output }
}
workflow e2e_declined() {
  step pay: e2e.declined { reason: "card declined" }
}
workflow e2e_buggy() {
  defaults { retry { attempts: 3, delay: 100ms, jitter: false } }
  step pay: e2e.buggy { }
}
workflow e2e_slow() {
  step wait: e2e.slow { seconds: 120 }
}
"""

LONELY = "flow 1\nworkflow e2e_lonely() {\n  step x: e2e.nobody { }\n}\n"


class StepsServer(Server):
    """A server whose workers import the test's step module; ``journal()`` is what the steps saw."""

    def __init__(self, tmp: Path, env: dict[str, str], token: str | None) -> None:
        (tmp / "e2e_steps.py").write_text(STEPS)
        self.journal_path = tmp / "journal.jsonl"
        self.journal_path.write_text("")
        env = {**env, "E2E_JOURNAL": str(self.journal_path),
               "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT), env.get("PYTHONPATH", "")])}
        super().__init__(tmp, env, token)

    def journal(self, **match: Any) -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in self.journal_path.read_text().splitlines() if line]
        return [e for e in entries if all(e.get(k) == v for k, v in match.items())]


@pytest.fixture(scope="module", params=["postgres+rabbitmq", "embedded"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StepsServer]:
    tmp = tmp_path_factory.mktemp("steps_" + request.param.replace("+", "_"))
    if request.param == "embedded":
        started = StepsServer(tmp, {**_clean_env(), "FLOW_DATA_DIR": str(tmp / "data"), "PYTHONUNBUFFERED": "1"},
                              token=None)
        started.spawn("up", "--import", "e2e_steps", "--concurrency", "4")
    else:
        import sqlalchemy as sa

        postgres_url, amqp_url = request.getfixturevalue("postgres_url"), request.getfixturevalue("amqp_url")
        schema = f"steps_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(postgres_url)
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        engine.dispose()
        started = StepsServer(tmp, {**_clean_env(), "DATABASE_URL": f"{postgres_url}?options=-csearch_path%3D{schema}",
                                    "BROKER_URL": amqp_url, "FLOW_API_TOKEN": ADMIN_TOKEN, "PYTHONUNBUFFERED": "1"},
                              token=ADMIN_TOKEN)
        started.cli("db", "upgrade")
        started.spawn("serve", "--threads", "4")
        started.spawn("coordinator")
        # The Python steps' queues only: a worker that imports the module and nothing else.
        started.spawn("worker", "--queues", "", "--import", "e2e_steps", "--concurrency", "4", "--grace-period", "1")
    try:
        started.wait_ready()
        if request.param != "embedded":
            _wait_for_consumers(started, "e2e.charge")
        with flow.Client(started.url, started.token) as client:
            client.deploy(SOURCE, filename="e2e.flow")
        yield started
    finally:
        started.stop()


@pytest.fixture
def client(server: StepsServer) -> Iterator[flow.Client]:
    with flow.Client(server.url, server.token) as c:
        yield c


def test_a_retryable_error_is_retried_after_the_delay_it_asks_for(server: StepsServer, client: flow.Client) -> None:
    # Given a step that raises Retryable(delay=2) on its first attempt
    run = client.start("e2e_pay", {"amount": 42, "delay": 2.0})

    # When the run finishes
    output = run.result(timeout=90)

    # Then the second attempt succeeded, no sooner than 2 s after the first failed (the policy's
    # own backoff would have been at most 1 s)
    assert output["charge"] == {"charged": 42, "attempt": 2}
    assert output["mail"] == {"to": "ada@example.com"}
    failed = server.journal(run=run.id, event="retryable")[0]
    second = server.journal(run=run.id, step="charge", attempt=2)[0]
    assert second["time"] - failed["time"] >= 2.0
    assert run.step("charge")["attempts"] == 2


def test_the_logger_reaches_the_runs_logs(client: flow.Client) -> None:
    run = client.start("e2e_pay", {"amount": 7})
    run.result(timeout=60)

    # The store keeps an entry's keyword arguments under "data" (as for the built-in handlers' entries).
    logs = [(e["level"], e["message"], (e.get("data") or {}).get("data") or {}) for e in run.logs()]

    assert ("info", "charging 7, attempt 1", {"amount": 7}) in logs
    assert ("warning", "mailed ada@example.com", {}) in logs


def test_a_non_retryable_error_fails_the_step_at_once(server: StepsServer, client: flow.Client) -> None:
    run = client.start("e2e_declined")

    with pytest.raises(flow.RunFailedError) as caught:
        run.result(timeout=60)

    assert caught.value.error is not None
    assert caught.value.error["type"] == "non_retryable" and "card declined" in caught.value.error["message"]
    assert run.step("pay")["attempts"] == 1 and len(server.journal(run=run.id)) == 1


def test_any_other_exception_is_retried_and_keeps_its_traceback(server: StepsServer, client: flow.Client) -> None:
    run = client.start("e2e_buggy")

    with pytest.raises(flow.RunFailedError):
        run.result(timeout=60)

    step = run.step("pay")
    assert step["attempts"] == 3 and len(server.journal(run=run.id)) == 3
    assert step["error"]["type"] == "handler" and step["error"]["message"] == "KeyError: 'y'"
    assert "e2e_steps.py" in step["error"]["traceback"] and "KeyError" in step["error"]["traceback"]


def test_a_worker_killed_mid_function_is_redelivered_with_the_same_idempotency_key(
        server: StepsServer, client: flow.Client) -> None:
    if server.token is None:
        pytest.skip("the embedded default's worker is a thread of `flow up`: killing it kills everything")
    # Given a step function running in the worker
    run = client.start("e2e_slow")
    _until(lambda: server.journal(run=run.id), "the slow step to start")
    worker = next(p for p, log in server.processes if log.name.startswith("worker") and p.poll() is None)

    # When the worker is killed -9 mid-function and another one starts
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    server.spawn("worker", "--queues", "", "--import", "e2e_steps", "--concurrency", "4", "--grace-period", "1")

    # Then the task is delivered again, with the same attempt and idempotency key, and completes
    run.result(timeout=120)
    assert run.status == "completed"
    first, second = server.journal(run=run.id)
    assert (second["key"], second["attempt"]) == (first["key"], first["attempt"])
    assert (first["again"], second["again"]) == (False, True)
    assert run.step("wait")["output"] == {"again": True}


def test_a_step_type_no_worker_serves_is_warned_at_deploy_and_shown_with_no_consumer(
        server: StepsServer, client: flow.Client) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        client.deploy(SOURCE, filename="e2e.flow")
        assert caught == []  # every step type of SOURCE is served
        client.deploy(LONELY, filename="lonely.flow")
    [warning] = [w for w in caught if issubclass(w.category, flow.NoWorkerWarning)]
    assert "e2e.nobody" in str(warning.message) and "flow worker --import" in str(warning.message)

    if server.token is None:
        return  # the in-memory broker counts no consumers; the dashboard shows none for any queue
    run = client.start("e2e_lonely")
    username = f"viewer{uuid.uuid4().hex[:6]}"
    server.cli_input(["user", "create", username, "--role", "viewer", "--password-stdin"], "pw-" + "x" * 12 + "\n")
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=10) as browser:
        page = browser.get("/login").text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', page)
        assert csrf, page[:500]
        answer = browser.post("/login", data={"username": username, "password": "pw-" + "x" * 12,
                                              "csrf_token": csrf.group(1)})
        assert answer.status_code == 303, answer.text[:500]
        row = _until(lambda: _queue_row(browser.get("/").text, "e2e.nobody"), "the queue on the overview", 30)
    assert row["consumers"] == "0" and int(row["pending"]) >= 1
    assert client.cancel(run).status == "cancelled"


def test_a_module_that_fails_to_import_is_named_without_a_traceback(server: StepsServer, tmp_path: Path) -> None:
    (tmp_path / "e2e_broken.py").write_text(textwrap.dedent("""
        import json
        raise RuntimeError("settings missing: set BILLING_URL")
    """))
    env = {**server.env, "PYTHONPATH": os.pathsep.join([str(tmp_path), server.env["PYTHONPATH"]])}
    for module, expected in (("e2e_no_such_module", "cannot import module 'e2e_no_such_module': ModuleNotFoundError"),
                             ("e2e_broken", "cannot import module 'e2e_broken': RuntimeError: settings missing")):
        done = subprocess.run([*FLOW_CLI, "worker", "--import", module], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert expected in done.stderr, done.stderr
        assert "Traceback" not in done.stderr + done.stdout
    assert "e2e_broken.py:3" in done.stderr  # where it failed


# --- helpers ----------------------------------------------------------------------------------------


def _until(probe: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _wait_for_consumers(server: StepsServer, task_type: str) -> None:
    """Until the worker consumes ``task_type`` (its queue has a consumer)."""
    from engine.store.dashboard import broker_queues

    _until(lambda: ((broker_queues(server.env["BROKER_URL"], [task_type])["queues"].get(task_type) or {})
                    .get("consumers")), f"a consumer of {task_type}")


def _queue_row(html: str, task_type: str) -> dict[str, str] | None:
    found = re.search(rf"<code>{re.escape(task_type)}</code></th>\s*<td[^>]*>([^<]*)</td>\s*<td[^>]*>([^<]*)</td>"
                      rf"\s*<td[^>]*>([^<]*)</td>", html)
    return None if found is None else {"messages": found.group(1), "consumers": found.group(2),
                                       "pending": found.group(3)}


def test_the_example_app_runs_as_its_readme_says(tmp_path: Path) -> None:
    app = ROOT / "examples" / "python-app"
    env = {**_clean_env(), "FLOW_DATA_DIR": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(app), str(ROOT)])}
    server = Server(tmp_path, env, token=None)
    server.spawn("up", "--import", "steps", "--concurrency", "2")
    try:
        server.wait_ready()
        script = {**server.env, "FLOW_URL": server.url}

        def start(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "start.py", *args], cwd=app, env=script, capture_output=True,
                                  text=True, timeout=120)

        ok, busy, zero = start("ada", "42"), start("busy", "10"), start("ada", "0")
    finally:
        server.stop()
    assert ok.returncode == 0 and re.fullmatch(r"\{'charge_id': 'ch_\w{8}', 'receipt': 'ch_\w{8}: 42 EUR'\}\n",
                                               ok.stdout), ok.stdout + ok.stderr
    assert busy.returncode == 0 and "10 EUR" in busy.stdout, busy.stdout + busy.stderr
    assert zero.returncode == 1 and zero.stderr.strip() == "failed: NonRetryable: cannot charge 0 EUR", zero.stderr
