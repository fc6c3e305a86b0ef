"""The client library against a real server, as a user's program drives it.

Each test runs twice: against ``flow up`` on the embedded default (SQLite and the in-memory broker,
no token), and against ``flow serve`` + ``flow coordinator`` + ``flow worker`` on the session's
PostgreSQL (a schema of its own) and RabbitMQ, with tokens. The servers are subprocesses on free
ports; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import flow

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FLOW_CLI = [sys.executable, "-c", "import sys; from flow.cli.main import main; sys.exit(main())"]
ADMIN_TOKEN = "client-test-" + "a" * 24

SOURCE = """
flow 1
workflow greet(name: string, times: int = 1) {
  step hello: transform { input: [params.name], map: "Hello, ${item}!" }
  output { greeting: steps.hello.output[0], times: params.times }
}
workflow strict(n: int) {
  step check: validate { input: [params.n], schema: { type: "string" }, on_invalid: "fail" }
}
workflow gated(order: string) {
  step nap: sleep { duration: 1s }
  step ok: approval { prompt: "ship ${params.order}?" }
  output { approved: steps.ok.output.approved, by: steps.ok.output.by }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """Flow processes on a free port; their output goes to files under ``tmp``."""

    def __init__(self, tmp: Path, env: dict[str, str], token: str | None) -> None:
        self.tmp, self.env, self.token = tmp, env, token
        self.port = _free_port()
        self.env["PORT"] = str(self.port)
        self.url = f"http://127.0.0.1:{self.port}"
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def cli(self, *args: str) -> str:
        done = subprocess.run([*FLOW_CLI, *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def cli_input(self, args: list[str], stdin: str) -> str:
        done = subprocess.run([*FLOW_CLI, *args], env=self.env, cwd=ROOT, input=stdin, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def spawn(self, *args: str) -> None:
        log = self.tmp / f"{args[0]}-{len(self.processes)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([*FLOW_CLI, *args], env=self.env, cwd=ROOT, stdout=out,
                                    stderr=subprocess.STDOUT)
        self.processes.append((proc, log))

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        with flow.Client(self.url, retries=1, timeout=2) as client:
            while time.monotonic() < deadline:
                for proc, log in self.processes:
                    assert proc.poll() is None, f"{proc.args} exited:\n{log.read_text()[-3000:]}"
                try:
                    if client.health()["status"] == "ok":
                        return
                except flow.FlowError:
                    pass
                time.sleep(0.2)
        pytest.fail("the server did not become healthy:\n" + self.logs())

    def logs(self) -> str:
        return "\n".join(log.read_text()[-2000:] for _, log in self.processes)

    def stop(self) -> None:
        for proc, _ in self.processes:
            proc.terminate()
        for proc, _ in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("FLOW_", "DB_", "RABBITMQ_", "DATABASE_URL", "BROKER_URL", "PORT"))}


def _embedded(tmp: Path) -> Server:
    server = Server(tmp, {**_clean_env(), "FLOW_DATA_DIR": str(tmp / "data"), "FLOW_LOG_FORMAT": "json",
                          "PYTHONUNBUFFERED": "1"}, token=None)
    server.spawn("up", "--concurrency", "4")
    return server


def _distributed(tmp: Path, postgres_url: str, amqp_url: str) -> Server:
    import sqlalchemy as sa

    schema = f"client_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    database_url = f"{postgres_url}?options=-csearch_path%3D{schema}"
    server = Server(tmp, {**_clean_env(), "DATABASE_URL": database_url, "BROKER_URL": amqp_url,
                          "FLOW_API_TOKEN": ADMIN_TOKEN, "FLOW_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"},
                    token=ADMIN_TOKEN)
    server.cli("db", "upgrade")
    server.spawn("serve", "--threads", "8")
    server.spawn("coordinator")
    server.spawn("worker", "--queues", "data_processing,compensation", "--concurrency", "4")
    return server


@pytest.fixture(scope="module", params=["embedded", "postgres+rabbitmq"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(request.param.replace("+", "_"))
    if request.param == "embedded":
        started = _embedded(tmp)
    else:
        started = _distributed(tmp, request.getfixturevalue("postgres_url"), request.getfixturevalue("amqp_url"))
    try:
        started.wait_ready()
        with flow.Client(started.url, started.token) as client:
            client.deploy(SOURCE, filename="client_test.flow")
        yield started
    finally:
        started.stop()


@pytest.fixture
def client(server: Server) -> Iterator[flow.Client]:
    with flow.Client(server.url, server.token) as c:
        yield c


def test_deploy_start_and_result(client: flow.Client, tmp_path: Path) -> None:
    # Given the source in a file, deployed once already by the fixture
    path = tmp_path / "client_test.flow"
    path.write_text(SOURCE)

    # When it is deployed again and a run started
    versions = client.deploy(path)
    run = client.start("greet", {"name": "Ada", "times": 2})

    # Then nothing new is stored, and the run completes with the workflow's output
    assert {(v.name, v.created) for v in versions} == {("greet", False), ("strict", False), ("gated", False)}
    assert run.result(timeout=60) == {"greeting": "Hello, Ada!", "times": 2}
    assert run.status == "completed" and run.step("hello")["status"] == "completed"
    assert run.finished_at is not None and run.finished_at >= run.created_at


def test_a_start_with_the_same_idempotency_key_returns_the_same_run(client: flow.Client) -> None:
    key = f"greet-{uuid.uuid4()}"
    first = client.start("greet", {"name": "Bo"}, idempotency_key=key)
    again = client.start("greet", {"name": "Bo"}, idempotency_key=key)
    assert again.id == first.id
    assert client.get(first.id).wait(60).output["greeting"] == "Hello, Bo!"


def test_runs_are_found_by_their_business_keys(client: flow.Client) -> None:
    # Given a workflow with a search clause, and two of its runs
    name = f"orders_{uuid.uuid4().hex[:8]}"
    client.deploy(f"flow 1\nworkflow {name}(order_id: int, rush: bool = false) {{\n"
                  "  search { order: params.order_id, rush: params.rush }\n  step a: noop { output: 1 }\n}\n",
                  filename="orders.flow")
    first = client.start(name, {"order_id": 4711, "rush": True})
    client.start(name, {"order_id": 4712})
    # Then each is found by its keys, typed as the workflow declares them
    assert [r.id for r in client.list(search={"order": 4711})] == [first.id]
    assert [r.id for r in client.list(workflow=name, search={"rush": True})] == [first.id]
    assert len(list(client.list(search={"order": 4711, "rush": False}))) == 0


def test_bad_params_raise_with_every_problem(client: flow.Client) -> None:
    with pytest.raises(flow.InvalidParamsError) as caught:
        client.start("greet", {"times": "twice"})
    problems = caught.value.problems
    assert caught.value.status_code == 422 and len(problems) == 2, problems
    assert any("name" in p for p in problems) and any("times" in p for p in problems)


def test_source_that_does_not_compile_raises_with_every_diagnostic(client: flow.Client) -> None:
    broken = ("flow 1\nworkflow w1() {\n  step a: transform { input: steps.nope.output, map: item }\n}\n"
              "workflow w2() {\n  step b: no_such_type { }\n}\n")
    with pytest.raises(flow.CompileError) as caught:
        client.deploy(broken, filename="broken.flow")
    errors = [d for d in caught.value.diagnostics if d["severity"] == "error"]
    assert len(errors) >= 2, caught.value.diagnostics
    assert {d["span"]["line"] for d in errors} >= {3, 6}
    assert "broken.flow:3:" in str(caught.value) and "broken.flow:6:" in str(caught.value)


def test_a_failed_run_raises_its_error_record_and_leaves_a_dead_letter(client: flow.Client) -> None:
    run = client.start("strict", {"n": 7})

    with pytest.raises(flow.RunFailedError) as caught:
        run.result(timeout=60)

    assert caught.value.status == "failed"
    assert caught.value.error is not None
    assert caught.value.error["step"] == "check" and caught.value.error["type"] == "invalid_input"

    # The task that failed for good is a dead letter; requeue it, and it is closed.
    letter = next(d for d in client.dead_letters.list() if d.run_id == run.id)
    assert letter.error is not None and letter.error["type"] == "invalid_input"
    requeued = client.dead_letters.requeue(letter)
    assert not requeued.open
    with pytest.raises(flow.ConflictError):
        client.dead_letters.requeue(letter)

    # An operator's retry of the failed run runs its failed step again (and it fails again).
    retried = client.retry(client.get(run.id).wait(60))
    assert retried.status in {"running", "pending", "failed"}
    with pytest.raises(flow.RunFailedError):
        retried.result(timeout=60)


def test_wait_times_out_then_approve_completes_the_run(client: flow.Client) -> None:
    run = client.start("gated", {"order": "42"})

    started = time.monotonic()
    with pytest.raises(flow.WaitTimeoutError):
        run.wait(timeout=1.5)
    assert 1.4 <= time.monotonic() - started < 10
    assert run.status == "running"

    _wait_for_step(client, run.id, "ok", "processing")
    run.approve("ok", comment="stock checked")
    assert run.result(timeout=60)["approved"] is True


def test_a_rejection_and_a_cancel(client: flow.Client) -> None:
    rejected = client.start("gated", {"order": "43"})
    _wait_for_step(client, rejected.id, "ok", "processing")
    assert client.reject(rejected, "ok").result(timeout=60)["approved"] is False

    cancelled = client.start("gated", {"order": "44"})
    assert cancelled.cancel().status == "cancelled"
    with pytest.raises(flow.IllegalTransitionError) as caught:
        client.cancel(cancelled.id)
    assert caught.value.status_code == 409
    with pytest.raises(flow.RunFailedError) as failed:
        cancelled.result(timeout=5)
    assert failed.value.status == "cancelled"


def test_compensate_a_completed_run(client: flow.Client) -> None:
    run = client.start("greet", {"name": "Cy"})
    run.wait(60)
    assert client.compensate(run).wait(60).status == "compensated"
    with pytest.raises(flow.IllegalTransitionError):
        run.compensate()


def test_list_filters_and_follows_pages(client: flow.Client) -> None:
    name = f"u{uuid.uuid4().hex[:8]}"
    client.deploy(f"flow 1\nworkflow {name}(i: int) {{\n  step s: transform {{ input: [params.i], map: item }}\n}}\n")
    started = [client.start(name, {"i": i}) for i in range(5)]
    for run in started:
        run.wait(60)

    listed = list(client.list(workflow=name, page_size=2))
    pages = list(client.list_pages(workflow=name, page_size=2))

    assert [r.id for r in listed] == [r.id for r in reversed(started)]  # newest first
    assert [len(p) for p in pages] == [2, 2, 1] and pages[-1].next_cursor is None
    assert [r.id for r in client.list(workflow=name, limit=3)] == [r.id for r in reversed(started)][:3]
    assert list(client.list(workflow=name, status="failed")) == []
    assert len(list(client.list(workflow=name, since=started[0].created_at))) == 5


def test_start_many_starts_each_and_reports_the_bad_ones(client: flow.Client) -> None:
    params = [{"name": f"n{i}"} for i in range(4)] + [{"name": 5}]
    keys = [f"many-{uuid.uuid4()}" for _ in params]

    with pytest.raises(flow.BatchStartError) as caught:
        client.start_many("greet", params, idempotency_keys=keys)

    results = caught.value.results
    assert [type(r).__name__ for r in results] == ["Run"] * 4 + ["InvalidParamsError"]
    assert [r.result(timeout=60)["greeting"] for r in results[:4]] == [f"Hello, n{i}!" for i in range(4)]

    # The same keys again: the same runs, nothing started twice.
    again = client.start_many("greet", params[:4], idempotency_keys=keys[:4])
    assert [r.id for r in again] == [r.id for r in results[:4]]


def test_unknown_run_and_unreachable_server(client: flow.Client) -> None:
    with pytest.raises(flow.NotFoundError):
        client.get(str(uuid.uuid4()))
    with flow.Client(f"http://127.0.0.1:{_free_port()}", retries=flow.Retries(attempts=2, base=0.01)) as dead:
        with pytest.raises(flow.APIConnectionError):
            dead.get("x")


def test_the_async_client(server: Server) -> None:
    async def scenario() -> list[object]:
        async with flow.AsyncClient(server.url, server.token) as client:
            runs = [await client.start("greet", {"name": f"a{i}"}) for i in range(3)]
            outputs = await asyncio.gather(*(run.result(timeout=60) for run in runs))
            with pytest.raises(flow.NotFoundError):
                await client.get(str(uuid.uuid4()))
            return [o["greeting"] for o in outputs]

    assert asyncio.run(scenario()) == ["Hello, a0!", "Hello, a1!", "Hello, a2!"]


def test_tokens_are_checked(server: Server) -> None:
    if server.token is None:
        pytest.skip("the embedded default needs no token")
    with flow.Client(server.url, "wrong-token") as stranger:
        with pytest.raises(flow.AuthenticationError) as caught:
            stranger.get(str(uuid.uuid4()))
        assert caught.value.code == "unauthorized"
    viewer = json.loads(server.cli("token", "create", "--name", "client-viewer", "--role", "viewer", "--json"))
    with flow.Client(server.url, viewer["token"]) as reader:
        assert list(reader.list(workflow="greet", limit=1))
        with pytest.raises(flow.PermissionDeniedError) as denied:
            reader.start("greet", {"name": "nope"})
        assert denied.value.code == "forbidden"


def _wait_for_step(client: flow.Client, run_id: str, step: str, status: str, timeout: float = 60) -> None:
    """Until the run's ``step`` has ``status`` (an approval step waits in ``processing``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(run_id).step(step)["status"] == status:
            return
        time.sleep(0.1)
    pytest.fail(f"step {step} of run {run_id} never became {status}")
