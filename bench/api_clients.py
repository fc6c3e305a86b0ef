"""The benchmark's client processes: what users run against Flow's HTTP API and against Celery.

Each client is its own process (``multiprocessing`` with ``spawn``: nothing is inherited from the
bench), waits at a barrier with the others, then does its share of a workload and reports what it
timed. Two kinds of workload:

- ``throughput`` (W1, W2): start every run of its share, one call each (or, for Flow, ``batch``
  runs per call to ``POST /api/workflows/NAME/runs/batch``), then wait for each run in order
  (Flow: ``GET /api/runs/ID``, with ``?wait=`` when the server supports it, else polled every 5 ms;
  Celery: ``AsyncResult.get``, the database backend polled every 5 ms);
- ``sequential`` (W4): start one run, wait for it, start the next.

Every run reports its send time (wall clock of the client, just before the call), the time the
client saw it finished, and the finish time the system itself recorded (Flow: the run document's
``finished_at``; Celery: the last task's ``date_done``), so that both systems are timed both ways.
Flow's ``created_at`` is kept too.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from datetime import datetime, timezone
from typing import Any

TERMINAL = ("completed", "failed", "cancelled", "compensated", "compensation_failed")


def _ts(value: Any) -> float | None:
    """Seconds since the epoch of an ISO string or datetime (naive means UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return float(value.timestamp())


# -- Flow ----------------------------------------------------------------------------------------


class FlowHttp:
    """One keep-alive HTTP/1.1 connection to ``flow serve`` (the standard library: no client
    overhead to speak of)."""

    def __init__(self, base: str, token: str) -> None:
        parsed = urllib.parse.urlsplit(base)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
        self.calls = 0

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(3):
            try:
                self.conn.request(method, path, body=data, headers={**self.headers, **(headers or {})})
                response = self.conn.getresponse()
                payload = response.read()
                self.calls += 1
                return response.status, json.loads(payload) if payload else None
            except (http.client.HTTPException, ConnectionError, OSError):
                # The server closed a kept-alive connection: open a new one and send again (a
                # start carries an Idempotency-Key, so sending it twice starts one run).
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def start(self, workflow: str, params: dict[str, Any], key: str) -> dict[str, Any]:
        status, doc = self.call("POST", f"/api/workflows/{workflow}/runs", {"params": params},
                                {"Idempotency-Key": key})
        if status != 201:
            raise RuntimeError(f"start: HTTP {status}: {doc}")
        return doc  # type: ignore[no-any-return]

    def start_batch(self, workflow: str, items: list[tuple[dict[str, Any], str]]) -> list[dict[str, Any]]:
        body = {"runs": [{"params": p, "idempotency_key": k} for p, k in items]}
        status, doc = self.call("POST", f"/api/workflows/{workflow}/runs/batch", body)
        if status != 200:
            raise RuntimeError(f"batch start: HTTP {status}: {doc}")
        out = []
        for entry in doc["runs"]:
            if "error" in entry:
                raise RuntimeError(f"batch start item {entry['index']}: {entry['error']}")
            out.append(entry["run"])
        return out

    def wait(self, run_id: str, use_wait: bool) -> dict[str, Any]:
        path = f"/api/runs/{run_id}" + ("?wait=30s" if use_wait else "")
        while True:
            status, doc = self.call("GET", path)
            if status == 503 and use_wait:  # too many waiters: poll instead
                time.sleep(0.005)
                continue
            if status != 200:
                raise RuntimeError(f"get run: HTTP {status}: {doc}")
            if doc["status"] in TERMINAL:
                return doc  # type: ignore[no-any-return]
            if not use_wait:
                time.sleep(0.005)


def _flow_record(send: float, seen: float, doc: dict[str, Any]) -> dict[str, Any]:
    return {"send": send, "seen": seen, "created": _ts(doc.get("created_at")),
            "finished": _ts(doc.get("finished_at")), "status": doc["status"]}


def flow_client(job: dict[str, Any], barrier: Any, out: Any) -> None:
    """One Flow client process (see the module docstring); puts its report on ``out``."""
    try:
        api = FlowHttp(job["base"], job["token"])
        api.call("GET", "/api/health")  # connect before the barrier
        workflow, params, tag = job["workflow"], job["params"], job["tag"]
        use_wait, batch = job.get("use_wait", False), job.get("batch", 0)
        records: list[dict[str, Any]] = []
        barrier.wait()
        t0 = time.time()
        if job["mode"] == "sequential":
            for i, p in enumerate(params):
                send = time.time()
                doc = api.start(workflow, p, f"{tag}-{i}")
                doc = doc if doc["status"] in TERMINAL else api.wait(doc["id"], use_wait)
                records.append(_flow_record(send, time.time(), doc))
            out.put({"t0": t0, "submitted": None, "end": time.time(), "records": records, "calls": api.calls})
            return
        started: list[tuple[float, str]] = []
        if batch:
            for first in range(0, len(params), batch):
                send = time.time()
                chunk = [(p, f"{tag}-{first + j}") for j, p in enumerate(params[first:first + batch])]
                started += [(send, doc["id"]) for doc in api.start_batch(workflow, chunk)]
        else:
            for i, p in enumerate(params):
                send = time.time()
                started.append((send, api.start(workflow, p, f"{tag}-{i}")["id"]))
        submitted = time.time()
        if job["mode"] == "starts":  # the start calls only (bench.starts)
            out.put({"t0": t0, "submitted": submitted, "end": submitted, "records": [], "started": len(started),
                     "calls": api.calls})
            return
        for send, run_id in started:
            doc = api.wait(run_id, use_wait)
            records.append(_flow_record(send, time.time(), doc))
        out.put({"t0": t0, "submitted": submitted, "end": time.time(), "records": records, "calls": api.calls})
    except BaseException as exc:  # report, never hang the bench
        out.put({"error": f"{type(exc).__name__}: {exc}"[:500]})
        try:
            barrier.abort()
        except Exception:
            pass


# -- Celery --------------------------------------------------------------------------------------


def celery_client(job: dict[str, Any], barrier: Any, out: Any) -> None:
    """One Celery client process: ``apply_async`` of a one-task or a 3-task chain per item."""
    try:
        from celery import chain

        from bench.celery_app import make_app

        app = make_app(job["broker"], job["backend"], job["queue"])
        noop = app.tasks["bench.noop"]
        db = job["backend"].startswith("db+")
        steps, items = job["steps"], job["params"]

        def signature(i: int) -> Any:
            return noop.s(i) if steps == 1 else chain(noop.s(i), *[noop.s() for _ in range(steps - 1)])

        def get(result: Any) -> None:
            if db:
                result.get(timeout=600, interval=0.005)
            else:
                result.get(timeout=600)

        noop.delay(0).get(timeout=60, **({"interval": 0.005} if db else {}))  # connect first
        records: list[dict[str, Any]] = []
        barrier.wait()
        t0 = time.time()
        if job["mode"] == "sequential":
            for i in items:
                send = time.time()
                result = signature(i).apply_async()
                get(result)
                records.append({"send": send, "seen": time.time(), "finished": _ts(result.date_done),
                                "created": None, "status": result.status.lower()})
            out.put({"t0": t0, "submitted": None, "end": time.time(), "records": records, "calls": 0})
            return
        started = []
        for i in items:
            send = time.time()
            started.append((send, signature(i).apply_async()))
        submitted = time.time()
        for send, result in started:
            get(result)
            records.append({"send": send, "seen": time.time(), "finished": _ts(result.date_done),
                            "created": None, "status": "completed" if result.successful() else "failed"})
        out.put({"t0": t0, "submitted": submitted, "end": time.time(), "records": records, "calls": 0})
    except BaseException as exc:
        out.put({"error": f"{type(exc).__name__}: {exc}"[:500]})
        try:
            barrier.abort()
        except Exception:
            pass


# -- the harness ---------------------------------------------------------------------------------


def run_clients(target: str, jobs: list[dict[str, Any]], timeout: float = 900.0) -> list[dict[str, Any]]:
    """Start one process per job (``target`` is ``flow`` or ``celery``), release them together,
    and return their reports. Raises RuntimeError if a client failed."""
    import multiprocessing as mp
    import queue as queue_module

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(jobs))
    out = ctx.Queue()
    func = flow_client if target == "flow" else celery_client
    procs = [ctx.Process(target=func, args=(job, barrier, out), daemon=True) for job in jobs]
    for proc in procs:
        proc.start()
    reports = []
    deadline = time.monotonic() + timeout
    try:
        while len(reports) < len(jobs):
            try:
                reports.append(out.get(timeout=max(1.0, deadline - time.monotonic())))
            except queue_module.Empty:
                raise RuntimeError(f"{target} clients: {len(reports)}/{len(jobs)} reported within {timeout}s") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target} clients timed out")
    finally:
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        raise RuntimeError(f"{target} client failed: {errors[0]}")
    return reports


def split(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` dealt round-robin into ``parts`` lists."""
    return [items[i::parts] for i in range(parts)]
