"""The client library without a server: error mapping, the retry rules, backoff, waiting, the batch
start and its fallback, paging. Each test answers through ``httpx.MockTransport`` (a real httpx
client, a fake server) and a clock the test moves by hand."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import flow
from flow import _api
from flow.errors import error_from_body

RUN = {"id": "r1", "workflow": "w", "version": 1, "status": "running", "params": {}, "output": None,
       "error": None, "created_at": "2030-01-31T09:00:00Z", "started_at": None, "finished_at": None,
       "steps": []}


def run_doc(status: str = "running", **fields: Any) -> dict[str, Any]:
    return {**RUN, "status": status, **fields}


def error(status: int, code: str, message: str = "m", details: Any = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message, "details": details}})


class FakeTime:
    """``Client._clock`` and ``Client._sleep``: time only moves when slept or advanced."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def client_for(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> tuple[flow.Client, FakeTime]:
    client = flow.Client("http://flow.test", transport=httpx.MockTransport(handler), **kwargs)
    fake = FakeTime()
    client._clock, client._sleep = fake.clock, fake.sleep
    return client, fake


# --- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "code", "cls"), [
    (400, "invalid_body", flow.BadRequestError),
    (401, "unauthorized", flow.AuthenticationError),
    (403, "forbidden", flow.PermissionDeniedError),
    (404, "not_found", flow.NotFoundError),
    (409, "conflict", flow.ConflictError),
    (409, "illegal_transition", flow.IllegalTransitionError),
    (413, "payload_too_large", flow.PayloadTooLargeError),
    (422, "invalid_schedule", flow.UnprocessableEntityError),
    (422, "invalid_params", flow.InvalidParamsError),
    (422, "compile_failed", flow.CompileError),
    (503, "database_unavailable", flow.ServiceUnavailableError),
    (500, "internal", flow.ServerError),
    (418, "teapot", flow.APIStatusError),
])
def test_each_error_status_maps_to_its_class_with_code_and_details(status: int, code: str, cls: type) -> None:
    client, _ = client_for(lambda request: error(status, code, "it went wrong", {"k": "v"}), retries=1)

    with pytest.raises(cls) as caught:
        client.get("r1")

    assert type(caught.value) is cls
    assert (caught.value.status_code, caught.value.code, caught.value.message) == (status, code, "it went wrong")
    assert caught.value.details == {"k": "v"}


def test_an_invalid_params_error_lists_every_problem() -> None:
    problems = ["missing required param 'order_id'", "param 'items': expected list<object>, got string"]
    client, _ = client_for(lambda r: error(422, "invalid_params", "invalid params for workflow 'w': ...", problems))

    with pytest.raises(flow.InvalidParamsError) as caught:
        client.start("w", {"items": "x"})

    assert caught.value.problems == problems
    assert all(problem in str(caught.value) for problem in problems)


def test_a_compile_error_carries_and_shows_every_diagnostic() -> None:
    diagnostics = [
        {"severity": "error", "code": "E101", "message": "expected '{'", "span": {"file": "a.flow", "line": 3, "column": 14}},
        {"severity": "error", "code": "E201", "message": "unknown step 'shp'", "span": {"file": "a.flow", "line": 9, "column": 5}},
    ]
    client, _ = client_for(lambda r: error(422, "compile_failed", "The workflow source does not compile.", diagnostics))

    with pytest.raises(flow.CompileError) as caught:
        client.deploy("flow 1\nworkflow a() {")

    assert caught.value.diagnostics == diagnostics
    assert "a.flow:3:14: error E101: expected '{'" in str(caught.value)
    assert "a.flow:9:5: error E201: unknown step 'shp'" in str(caught.value)


def test_an_answer_that_is_not_the_api_envelope_still_raises_by_status() -> None:
    exc = error_from_body(502, None, text="<html>Bad gateway</html>")
    assert isinstance(exc, flow.ServerError) and exc.code == "http_502" and "Bad gateway" in exc.message


def test_a_code_that_does_not_fit_its_status_gets_the_status_class() -> None:
    assert type(error_from_body(400, {"error": {"code": "invalid_params", "message": "x"}})) is flow.BadRequestError


# --- retries --------------------------------------------------------------------------------------


def flaky(failures: int, answer: httpx.Response) -> tuple[Callable[[httpx.Request], httpx.Response], list[httpx.Request]]:
    """A handler whose first ``failures`` requests fail to connect; the requests it saw."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) <= failures:
            raise httpx.ConnectError("connection refused", request=request)
        return answer

    return handler, seen


def test_a_read_is_retried_after_connection_errors_with_backoff() -> None:
    handler, seen = flaky(2, httpx.Response(200, json=run_doc("completed")))
    client, fake = client_for(handler)

    assert client.get("r1").status == "completed"

    assert len(seen) == 3
    assert len(fake.sleeps) == 2 and all(0 <= s <= 5.0 for s in fake.sleeps)


def test_a_read_gives_up_after_its_attempts() -> None:
    handler, seen = flaky(10, httpx.Response(200, json=run_doc()))
    client, _ = client_for(handler, retries=4)

    with pytest.raises(flow.APIConnectionError) as caught:
        client.get("r1")

    assert len(seen) == 4
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


def test_a_start_without_an_idempotency_key_is_never_resent() -> None:
    handler, seen = flaky(1, httpx.Response(201, json=run_doc()))
    client, _ = client_for(handler)

    with pytest.raises(flow.APIConnectionError):
        client.start("w", {"x": 1})

    assert len(seen) == 1  # the server may have started it: a resend could start a second run


def test_a_start_with_an_idempotency_key_is_resent_with_the_same_key() -> None:
    handler, seen = flaky(1, httpx.Response(201, json=run_doc()))
    client, _ = client_for(handler)

    run = client.start("w", {"x": 1}, idempotency_key="order-42", version=3)

    assert run.id == "r1" and len(seen) == 2
    assert [r.headers["Idempotency-Key"] for r in seen] == ["order-42", "order-42"]
    assert json.loads(seen[1].content) == {"params": {"x": 1}, "version": 3}


@pytest.mark.parametrize("verb", ["cancel", "retry", "compensate"])
def test_run_commands_are_not_resent(verb: str) -> None:
    handler, seen = flaky(1, httpx.Response(200, json=run_doc()))
    client, _ = client_for(handler)

    with pytest.raises(flow.APIConnectionError):
        getattr(client, verb)("r1")

    assert len(seen) == 1 and seen[0].url.path == f"/api/runs/r1/{verb}"


def test_a_503_is_retried_for_a_read_but_not_for_a_command() -> None:
    answers = iter([error(503, "database_unavailable"), httpx.Response(200, json=run_doc())])
    client, _ = client_for(lambda r: next(answers))
    assert client.get("r1").id == "r1"

    calls: list[httpx.Request] = []
    client, _ = client_for(lambda r: calls.append(r) or error(503, "database_unavailable"))
    with pytest.raises(flow.ServiceUnavailableError):
        client.cancel("r1")
    assert len(calls) == 1


def test_health_answers_a_503_instead_of_raising() -> None:
    client, fake = client_for(lambda r: httpx.Response(503, json={"status": "down", "checks": {}}))
    assert client.health()["status"] == "down" and fake.sleeps == []


def test_backoff_is_exponential_capped_and_jittered() -> None:
    retries = flow.Retries(attempts=10, base=0.25, cap=5.0)
    assert [retries.delay(n, rand=lambda: 1.0) for n in range(1, 8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert retries.delay(3, rand=lambda: 0.5) == 0.5
    assert [_api.poll_delay(n) for n in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert [_api.hold_seconds(r) for r in (None, 100.0, 7.9, 0.5)] == [30, 30, 7, 0]


# --- configuration ------------------------------------------------------------------------------------


def test_url_and_token_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_URL", "http://flow.env:4040/api/")
    monkeypatch.setenv("FLOW_API_TOKEN", "s3cret")
    seen: list[httpx.Request] = []
    client = flow.Client(transport=httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200, json=run_doc())))

    client.get("r1")

    assert str(seen[0].url) == "http://flow.env:4040/api/runs/r1"
    assert seen[0].headers["Authorization"] == "Bearer s3cret"


def test_arguments_win_over_the_environment_and_no_token_sends_no_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOW_URL", "http://flow.env:4040")
    monkeypatch.delenv("FLOW_API_TOKEN", raising=False)
    seen: list[httpx.Request] = []
    client = flow.Client("http://other:1", transport=httpx.MockTransport(
        lambda r: seen.append(r) or httpx.Response(200, json=run_doc())))

    client.get("r 1/x")

    assert seen[0].url.host == "other" and seen[0].url.raw_path == b"/api/runs/r%201%2Fx"
    assert "Authorization" not in seen[0].headers


# --- deploy ---------------------------------------------------------------------------------------------


def deploy_capture() -> tuple[flow.Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    answer = {"versions": [{"name": "hello", "version": 2, "created": False}]}
    client, _ = client_for(lambda r: seen.append(r) or httpx.Response(201, json=answer))
    return client, seen


def test_deploy_reads_a_path_and_sends_its_name(tmp_path: Path) -> None:
    source = "flow 1\nworkflow hello() {}\n"
    (tmp_path / "hello.flow").write_text(source)
    client, seen = deploy_capture()

    for target in (tmp_path / "hello.flow", str(tmp_path / "hello.flow")):
        assert client.deploy(target) == [flow.DeployedVersion("hello", 2, False)]

    assert [json.loads(r.content) for r in seen] == [{"source": source, "filename": "hello.flow"}] * 2


def test_deploy_sends_a_source_string_as_is_and_refuses_a_missing_file() -> None:
    client, seen = deploy_capture()
    client.deploy("flow 1\nworkflow hello() {}\n", filename="mine.flow")
    assert json.loads(seen[0].content)["filename"] == "mine.flow"

    with pytest.raises(FileNotFoundError):
        client.deploy("workflows/no_such_file.flow")
    assert len(seen) == 1


# --- waiting --------------------------------------------------------------------------------------------


def test_wait_holds_on_the_server_when_it_supports_it() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        fake.now += 30.0 if len(seen) == 1 else 4.0  # the server holds: 30 s, then the run ends
        return httpx.Response(200, json=run_doc("completed" if len(seen) == 2 else "running", output={"ok": 1}))

    client, fake = client_for(handler)
    run = flow.Run(run_doc(), client)

    assert run.result() == {"ok": 1}

    assert [r.url.params.get("wait") for r in seen] == ["30s", "30s"]
    assert fake.sleeps == []  # no polling pause: the server did the waiting


def test_wait_polls_with_backoff_when_the_server_ignores_the_hold() -> None:
    seen: list[httpx.Request] = []
    client, fake = client_for(lambda r: seen.append(r) or httpx.Response(200, json=run_doc()))
    run = flow.Run(run_doc(), client)

    with pytest.raises(flow.WaitTimeoutError) as caught:
        run.wait(timeout=3.0)

    assert fake.sleeps[:5] == [0.1, 0.2, 0.4, 0.8, 1.5]  # the last pause is cut at the deadline
    assert fake.now == pytest.approx(3.0)
    assert caught.value.run.status == "running" and isinstance(caught.value, TimeoutError)
    # The hold asked for shrinks with the time left, and is dropped under a second.
    assert [r.url.params.get("wait") for r in seen] == ["3s", "2s", "2s", "2s", "1s"]


def test_result_of_a_run_that_did_not_complete_raises_with_its_error_record() -> None:
    failure = {"type": "http.503", "message": "payments answered 503", "step": "charge"}
    client, _ = client_for(lambda r: httpx.Response(200, json=run_doc("compensated", error=failure)))
    run = flow.Run(run_doc(), client)

    with pytest.raises(flow.RunFailedError) as caught:
        run.result(timeout=10)

    assert caught.value.status == "compensated" and caught.value.error == failure
    assert "step charge: http.503: payments answered 503" in str(caught.value)
    assert run.status == "compensated"  # the handle is up to date


# --- start_many -------------------------------------------------------------------------------------------


def batch_server(seen: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        runs = json.loads(request.content)["runs"]
        return httpx.Response(200, json={"runs": [
            {"index": i, "error": {"code": "invalid_params", "message": "bad", "details": ["param 'n': bad"]}}
            if item["params"].get("n") == "bad" else {"index": i, "run": run_doc(id=f"r{item['params']['n']}")}
            for i, item in enumerate(runs)
        ]})
    return handler


def test_start_many_uses_the_batch_endpoint_in_chunks_of_1000() -> None:
    seen: list[httpx.Request] = []
    client, _ = client_for(batch_server(seen))

    runs = client.start_many("w", [{"n": n} for n in range(2500)], idempotency_keys=[f"k{n}" for n in range(2500)])

    assert [r.id for r in runs] == [f"r{n}" for n in range(2500)]
    assert [r.url.path for r in seen] == ["/api/workflows/w/runs/batch"] * 3
    assert [len(json.loads(r.content)["runs"]) for r in seen] == [1000, 1000, 500]
    assert json.loads(seen[0].content)["runs"][7] == {"params": {"n": 7}, "idempotency_key": "k7"}

    client.start_many("w", [{"n": 1}], version=4)
    assert json.loads(seen[-1].content) == {"runs": [{"params": {"n": 1}}], "version": 4}


def test_start_many_reports_the_items_that_failed_without_losing_the_others() -> None:
    client, _ = client_for(batch_server([]))

    with pytest.raises(flow.BatchStartError) as caught:
        client.start_many("w", [{"n": 0}, {"n": "bad"}, {"n": 2}])

    assert [type(r).__name__ for r in caught.value.results] == ["Run", "InvalidParamsError", "Run"]
    assert caught.value.errors[0][0] == 1 and caught.value.errors[0][1].problems == ["param 'n': bad"]

    results = client.start_many("w", [{"n": 0}, {"n": "bad"}], return_exceptions=True)
    assert isinstance(results[1], flow.InvalidParamsError)


@pytest.mark.parametrize("refusal", [404, 405])
def test_start_many_falls_back_to_one_start_per_item_and_remembers(refusal: int) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/batch"):
            return error(refusal, "not_found" if refusal == 404 else "method_not_allowed")
        return httpx.Response(201, json=run_doc(id=json.loads(request.content)["params"]["n"]))

    client, _ = client_for(handler)

    first = client.start_many("w", [{"n": "a"}, {"n": "b"}], idempotency_keys=["ka", "kb"])
    second = client.start_many("w", [{"n": "c"}])

    assert [r.id for r in first + second] == ["a", "b", "c"]
    assert [r.url.path for r in seen] == ["/api/workflows/w/runs/batch"] + ["/api/workflows/w/runs"] * 3
    assert [r.headers.get("Idempotency-Key") for r in seen[1:]] == ["ka", "kb", None]


def test_start_many_of_an_unknown_workflow_does_not_give_up_on_the_batch_endpoint() -> None:
    seen: list[httpx.Request] = []
    client, _ = client_for(lambda r: seen.append(r) or error(404, "not_found", "Workflow w doesn't exist."))

    results = client.start_many("w", [{"n": 1}, {"n": 2}, {"n": 3}], return_exceptions=True)

    assert all(isinstance(r, flow.NotFoundError) for r in results)
    assert len(seen) == 2  # the batch, then one start: the workflow is missing for every item
    assert client._batch_supported is None  # the 404 named the workflow, not a missing route


def test_start_many_splits_a_batch_over_the_body_limit() -> None:
    seen: list[int] = []
    inner = batch_server([])

    def handler(request: httpx.Request) -> httpx.Response:
        count = len(json.loads(request.content)["runs"])
        seen.append(count)
        return error(413, "payload_too_large") if count > 2 else inner(request)

    client, _ = client_for(handler)

    assert [r.id for r in client.start_many("w", [{"n": n} for n in range(5)])] == [f"r{n}" for n in range(5)]
    assert seen == [5, 2, 3, 1, 2]


def test_start_many_needs_one_key_per_params() -> None:
    client, _ = client_for(batch_server([]))
    with pytest.raises(ValueError, match="2 params but 1 idempotency keys"):
        client.start_many("w", [{}, {}], idempotency_keys=["k"])


# --- listing ----------------------------------------------------------------------------------------------


def test_list_follows_the_cursor_lazily_and_passes_the_filters() -> None:
    seen: list[httpx.Request] = []
    pages = {None: (["a", "b"], "c1"), "c1": (["c", "d"], "c2"), "c2": (["e"], None)}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        ids, cursor = pages[request.url.params.get("cursor")]
        return httpx.Response(200, json={"runs": [run_doc(id=i) for i in ids], "next_cursor": cursor})

    client, _ = client_for(handler)
    import datetime as dt

    runs = client.list(workflow="w", status="failed", since=dt.datetime(2030, 1, 1), page_size=2)
    assert seen == []  # nothing is fetched before the iteration asks
    assert [r.id for r in runs] == ["a", "b", "c", "d", "e"]
    assert dict(seen[0].url.params) == {"limit": "2", "workflow": "w", "status": "failed",
                                        "since": "2030-01-01T00:00:00+00:00"}

    seen.clear()
    assert [r.id for r in client.list(limit=3, page_size=2)] == ["a", "b", "c"]
    assert len(seen) == 2


def test_dead_letters_list_and_requeue() -> None:
    letter = {"id": "d1", "task_id": "t1", "run_id": "r1", "task_type": "http_request", "reason": "attempts spent",
              "error": {"type": "http.503"}, "created_at": "2030-01-31T09:00:00Z", "requeued_at": None,
              "discarded_at": None}
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(200, json={**letter, "requeued_at": "2030-01-31T10:00:00Z"})
        return httpx.Response(200, json={"dead_letters": [letter]})

    client, _ = client_for(handler)

    [found] = client.dead_letters.list(include_closed=True)
    requeued = client.dead_letters.requeue(found)

    assert found.open and found.error == {"type": "http.503"} and not requeued.open
    assert seen[0].url.params["include_closed"] == "true" and seen[1].url.path == "/api/dead-letters/d1/requeue"


# --- the async twin -----------------------------------------------------------------------------------------


def test_the_async_client_starts_waits_and_maps_errors_like_the_sync_one() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST" and request.url.path.endswith("/cancel"):
            return error(409, "illegal_transition", "completed", {"current": "completed", "target": "cancelled"})
        if request.method == "POST":
            return httpx.Response(201, json=run_doc())
        return httpx.Response(200, json=run_doc("completed", output=42))

    async def scenario() -> None:
        async with flow.AsyncClient("http://flow.test", transport=httpx.MockTransport(handler)) as client:
            run = await client.start("w", {"x": 1}, idempotency_key="k")
            assert await run.result(timeout=5) == 42
            with pytest.raises(flow.IllegalTransitionError) as caught:
                await run.cancel()
            assert caught.value.current == "completed"
            assert [r.id async for r in client.list(limit=1)] == []  # the mock's GET answer has no runs

    asyncio.run(scenario())
    assert seen[0].headers["Idempotency-Key"] == "k" and seen[1].url.params["wait"] in ("4s", "5s")


def test_importing_flow_loads_no_server_code() -> None:
    code = ("import sys, flow; heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'flask', 'sqlalchemy', 'kombu', 'engine', 'web', 'workers', 'psycopg2', 'dsl'}); print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]"
