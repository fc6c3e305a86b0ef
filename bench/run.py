"""Flow against Celery on the same RabbitMQ and PostgreSQL, and against the raw limits of both.

Run: ``python -m bench.run [--quick] [--concurrency N] [--no-celery] [--json FILE]``
(``make bench``). Needs PostgreSQL (``BENCH_PG``, default ``postgresql://postgres@127.0.0.1:5432``)
and RabbitMQ (``BENCH_AMQP``, default ``amqp://guest:guest@127.0.0.1:5672``, plus ``rabbitmqctl``
to create a fresh vhost). Celery comes from the ``bench`` extra (``pip install -e '.[bench]'``).

Every system runs as separate processes: ``flow coordinator`` and ``flow worker --queues noop``;
``celery worker -P prefork`` (``task_acks_late=True``) once with the database result backend
(SQLAlchemy, in the same PostgreSQL server) and once with ``rpc://``. Each workload runs on each
system in turn (interleaved), in a fresh database and vhost that are dropped at the end:

- W1: 10,000 one-step no-op runs, first submit to all completed;
- W2: 500 concurrent 3-step chains;
- W3: fan-out 1 -> 100 -> 1, twenty times one after the other (Celery: a chord);
- W4: one 3-step chain at a time, 200 times: latency p50/p95 and per-step overhead.

Flow's times come from the database (``runs.created_at`` -> ``finished_at``), Celery's from the
client (the submit call -> ``AsyncResult.get``/the database result count).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg2

from bench.api_clients import run_clients, split
from bench.workflows import SOURCES

ROOT = Path(__file__).resolve().parents[1]
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
AMQP = os.environ.get("BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672")
TERMINAL = ("completed", "failed", "cancelled", "compensated", "compensation_failed")
# The `flow` command.
FLOW_CMD = [sys.executable, "-c", "import sys; from flow.cli.main import main; sys.exit(main())"]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Sizes:
    w1: int
    w2: int
    w3_times: int
    w3_width: int
    w4: int
    raw_messages: int
    raw_commits: int
    # Through the HTTP API (and Celery's client): the client process counts, and the sizes.
    api_clients: tuple[int, ...] = (1, 16)
    api_w1: int = 10_000
    api_w2: int = 500
    api_w4: int = 200


FULL = Sizes(w1=10_000, w2=500, w3_times=20, w3_width=100, w4=200, raw_messages=20_000, raw_commits=3_000)
QUICK = Sizes(w1=300, w2=30, w3_times=2, w3_width=20, w4=10, raw_messages=2_000, raw_commits=200,
              api_clients=(1, 4), api_w1=200, api_w2=20, api_w4=10)


@dataclass
class Figure:
    """One measured figure of one workload on one system."""

    value: float
    unit: str
    extra: dict[str, Any] = field(default_factory=dict)


# -- environment ---------------------------------------------------------------------------------


class Environment:
    """A fresh PostgreSQL database (and one for Celery's results) and a fresh RabbitMQ vhost."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:8]
        self.db = f"flow_bench_{tag}"
        self.celery_db = f"flow_bench_{tag}_celery"
        self.vhost = f"flow_bench_{tag}"
        self.flow_url = f"{PG.replace('postgresql://', 'postgresql+psycopg2://', 1)}/{self.db}"
        self.celery_url = f"db+{PG.replace('postgresql://', 'postgresql+psycopg2://', 1)}/{self.celery_db}"
        self.amqp_url = f"{AMQP}/{self.vhost}"
        self.tmp = Path(tempfile.mkdtemp(prefix="flow-bench-"))

    def create(self) -> None:
        admin = psycopg2.connect(f"{PG}/postgres")
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.db}"')
            cur.execute(f'CREATE DATABASE "{self.celery_db}"')
        admin.close()
        subprocess.run(["rabbitmqctl", "-q", "add_vhost", self.vhost], check=True, capture_output=True, timeout=60)
        subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*"],
                       check=True, capture_output=True, timeout=60)

    def drop(self) -> None:
        try:
            admin = psycopg2.connect(f"{PG}/postgres")
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
                cur.execute(f'DROP DATABASE IF EXISTS "{self.celery_db}" WITH (FORCE)')
            admin.close()
        finally:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", self.vhost], capture_output=True, timeout=60)

    def child_env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "RABBITMQ_", "FLOW_", "BENCH_"))}
        env.update({"PYTHONPATH": str(ROOT), "FLOW_LOG_FORMAT": "text"}, **extra)
        return env


def commits(dbname: str) -> int:
    """Committed transactions of ``dbname`` so far (``pg_stat_database``; the figure lags up to
    about a second behind busy backends, so callers wait before reading it)."""
    conn = psycopg2.connect(f"{PG}/postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (dbname,))
            return int(cur.fetchone()[0])
    finally:
        conn.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str], logdir: Path) -> subprocess.Popen[bytes]:
        log = open(logdir / f"{name}.log", "wb")
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


# -- Flow ----------------------------------------------------------------------------------------


class FlowSystem:
    name = "Flow"

    def __init__(self, env: Environment, procs: Processes, concurrency: int) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.pool import NullPool

        from engine.store import Store, db

        self.env = env
        db.upgrade(env.flow_url)
        # NullPool: each submission ends its backend, so its commits reach pg_stat at once.
        self.store = Store(create_engine(env.flow_url, poolclass=NullPool))
        for name, source in SOURCES.items():
            self.store.deploy(source, f"{name}.flow")
        # A token made like a user's (`flow token create`): the API checks it against the store.
        _, self.token = self.store.create_token("bench", "operator")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        child = env.child_env(DATABASE_URL=env.flow_url, BROKER_URL=env.amqp_url, PORT=str(self.port),
                              FLOW_API_TOKEN=uuid.uuid4().hex)
        flow = FLOW_CMD
        self.coordinator = procs.start("flow-coordinator", [*flow, "coordinator"], child, env.tmp)
        # Two workers (as a deployment would run them), sharing the handler threads of Celery's
        # one prefork worker.
        per_worker = str(max(1, concurrency // 2))
        self.workers = [procs.start(f"flow-worker-{i}", [*flow, "worker", "--queues", "noop", "--concurrency",
                                                          per_worker], child, env.tmp) for i in range(2)]
        self.worker = self.workers[0]
        self.server = procs.start("flow-serve", [*flow, "serve", "--host", "127.0.0.1"], child, env.tmp)
        self.poll = psycopg2.connect(f"{PG}/{env.db}")  # reads only, each ended by a rollback
        self.features: dict[str, bool] = {}

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> Any:
        with self.poll.cursor() as cur:
            cur.execute(sql, args)
            row = cur.fetchone()
        self.poll.rollback()  # not a commit: pg_stat's xact_commit counts only the engine's
        return row

    def ready(self, timeout: float = 60.0) -> None:
        run_id = self.store.start_run("bench_one", {"i": 0})
        self._wait_runs([run_id], timeout)
        import urllib.request

        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.base}/api/openapi.json", timeout=5) as answer:
                    document = json.loads(answer.read())
                break
            except OSError:
                if time.monotonic() > deadline or self.server.poll() is not None:
                    raise RuntimeError(f"flow serve did not come up (logs in {self.env.tmp})") from None
                time.sleep(0.2)
        paths = document.get("paths", {})
        get_run = paths.get("/api/runs/{run_id}", {}).get("get", {})
        self.features = {
            "batch": "/api/workflows/{name}/runs/batch" in paths,
            "wait": any(p.get("name") == "wait" for p in get_run.get("parameters", [])),
        }

    def _wait_runs(self, ids: list[str], timeout: float, interval: float = 0.005) -> None:
        deadline = time.monotonic() + timeout
        while True:
            (done,) = self._query("SELECT count(*) FROM runs WHERE id = ANY(%s) AND status = ANY(%s)",
                                  (ids, list(TERMINAL)))
            if done == len(ids):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"Flow: {done}/{len(ids)} runs finished after {timeout}s (logs in {self.env.tmp})")
            time.sleep(interval)

    def _wait_since(self, since: datetime, count: int, timeout: float) -> tuple[float, int]:
        """Wait until ``count`` runs created since ``since`` ended; (last finished_at - since, failures)."""
        deadline = time.monotonic() + timeout
        while True:
            done, failed, last = self._query(
                "SELECT count(*), count(*) FILTER (WHERE status <> 'completed'), max(finished_at) "
                "FROM runs WHERE created_at >= %s AND status = ANY(%s)", (since, list(TERMINAL)))
            if done >= count:
                return (last - since).total_seconds(), failed
            if time.monotonic() > deadline:
                raise TimeoutError(f"Flow: {done}/{count} runs finished after {timeout}s (logs in {self.env.tmp})")
            time.sleep(0.02)

    def throughput(self, workflow: str, params: list[dict[str, Any]], steps_per_run: int,
                   timeout: float) -> Figure:
        since = datetime.now(timezone.utc)
        for start in range(0, len(params), 500):
            self.store.start_runs(workflow, params[start:start + 500])
        seconds, failed = self._wait_since(since, len(params), timeout)
        return Figure(len(params) * steps_per_run / seconds, "steps/s",
                      {"seconds": seconds, "failed": failed, "steps": len(params) * steps_per_run})

    def sequential(self, workflow: str, params: dict[str, Any], times: int, timeout: float) -> list[float]:
        """Run ``workflow`` ``times`` times one after the other; each run's latency (s, database)."""
        latencies = []
        for _ in range(times):
            run_id = self.store.start_run(workflow, params)
            self._wait_runs([run_id], timeout, interval=0.002)
            (latency,) = self._query(
                "SELECT EXTRACT(EPOCH FROM finished_at - created_at) FROM runs WHERE id = %s", (run_id,))
            latencies.append(float(latency))
        return latencies

    def close(self) -> None:
        self.poll.close()


# -- Celery --------------------------------------------------------------------------------------


class CelerySystem:
    def __init__(self, env: Environment, procs: Processes, concurrency: int, backend: str) -> None:
        from bench.celery_app import make_app

        self.env = env
        self.backend = backend
        self.name = f"Celery {backend}"
        url = env.celery_url if backend == "db" else "rpc://"
        queue = f"bench.{backend}"
        self.url, self.queue = url, queue
        self.app = make_app(env.amqp_url, url, queue)
        self.noop = self.app.tasks["bench.noop"]
        child = env.child_env(BENCH_BROKER=env.amqp_url, BENCH_BACKEND=url, BENCH_QUEUE=queue)
        self.proc = procs.start(
            f"celery-{backend}",
            [sys.executable, "-m", "celery", "-A", "bench.celery_app", "worker", "-P", "prefork",
             "-c", str(concurrency), "-Q", queue, "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-l", "warning", "-n", f"{backend}@%h"],
            child, env.tmp)

    def ready(self, timeout: float = 60.0) -> None:
        self.noop.delay(0).get(timeout=timeout)

    def _get(self, result: Any, timeout: float) -> Any:
        # The database backend polls: 5 ms keeps the client's delay small against the figures.
        if self.backend == "db":
            return result.get(timeout=timeout, interval=0.005)
        return result.get(timeout=timeout)

    def throughput(self, signatures: list[Any], steps_per_item: int, timeout: float) -> Figure:
        start = time.monotonic()
        results = [sig.apply_async() for sig in signatures]
        for result in results:
            self._get(result, timeout)
        seconds = time.monotonic() - start
        steps = len(signatures) * steps_per_item
        return Figure(steps / seconds, "steps/s", {"seconds": seconds, "steps": steps})

    def sequential(self, make: Callable[[], Any], times: int, timeout: float) -> list[float]:
        latencies = []
        for _ in range(times):
            start = time.monotonic()
            self._get(make().apply_async(), timeout)
            latencies.append(time.monotonic() - start)
        return latencies

    def close(self) -> None:
        pass


# -- raw limits ----------------------------------------------------------------------------------


def raw_broker(env: Environment, count: int) -> float:
    """Small persistent messages published with pipelined confirms (batches of 500) and consumed
    with manual acks on a second connection, at once: messages per second end to end."""
    import amqp

    host = AMQP.split("@", 1)[1]
    queue = "bench.raw"
    body = b'{"v":1,"task_id":"00000000-0000-0000-0000-000000000000","status":"completed"}'

    def connect() -> Any:
        conn = amqp.Connection(host=host, userid="guest", password="guest", virtual_host=env.vhost)
        conn.connect()
        return conn

    setup = connect()
    setup.channel().queue_declare(queue, durable=True, auto_delete=False)
    setup.close()
    got = 0
    done = threading.Event()

    def consume() -> None:
        nonlocal got
        conn = connect()
        channel = conn.channel()
        channel.basic_qos(0, 500, False)

        def on_message(message: Any) -> None:
            nonlocal got
            channel.basic_ack(message.delivery_tag)
            got += 1

        channel.basic_consume(queue, callback=on_message)
        while got < count:
            try:
                conn.drain_events(timeout=1)
            except TimeoutError:
                pass
            except Exception:
                if got >= count:
                    break
        done.set()
        conn.close()

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    time.sleep(0.2)
    conn = connect()
    channel = conn.channel()
    channel.confirm_select()
    pending: set[int] = set()
    channel.events["basic_ack"].add(
        lambda tag, multiple: pending.difference_update([t for t in pending if t <= tag] if multiple else [tag]))
    start = time.monotonic()
    tag = 0
    for first in range(0, count, 500):
        for _ in range(min(500, count - first)):
            channel.basic_publish(amqp.Message(body, delivery_mode=2, content_type="application/json"),
                                  exchange="", routing_key=queue)
            tag += 1
            pending.add(tag)
        while pending:
            conn.drain_events(timeout=30)
    done.wait(120)
    seconds = time.monotonic() - start
    conn.close()
    return count / seconds


def raw_commits(env: Environment, count: int) -> float:
    """Single-row INSERT commits on one connection (synchronous commit, as the engine uses)."""
    conn = psycopg2.connect(f"{PG}/{env.celery_db}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS bench_raw (id serial PRIMARY KEY, v text)")
        start = time.monotonic()
        for i in range(count):
            cur.execute("INSERT INTO bench_raw (v) VALUES (%s)", (str(i),))
        seconds = time.monotonic() - start
    conn.close()
    return count / seconds


# -- through the API (client processes) ---------------------------------------------------------


def _records(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for report in reports for r in report["records"]]


def api_throughput(reports: list[dict[str, Any]], steps_per_run: int) -> Figure:
    """Steps per second of a throughput workload, timed at the clients (release of the barrier to
    the last client seeing its last run finished) and by the system (first send to the last
    recorded finish); starts per second (release to the last client's last start answered)."""
    records = _records(reports)
    t0 = min(r["t0"] for r in reports)
    steps = len(records) * steps_per_run
    client_s = max(r["end"] for r in reports) - t0
    system_s = max(r["finished"] or 0.0 for r in records) - min(r["send"] for r in records)
    submit_s = max(r["submitted"] for r in reports) - t0
    return Figure(steps / client_s, "steps/s", {
        "seconds": client_s, "system_steps_per_s": steps / system_s, "system_seconds": system_s,
        "starts_per_s": len(records) / submit_s, "steps": steps,
        "failed": sum(1 for r in records if r["status"] != "completed"),
        "calls": sum(r["calls"] for r in reports),
    })


def api_latency(reports: list[dict[str, Any]], steps_per_run: int = 3) -> Figure:
    """Latency of sequential runs: p50/p95 at the client (send -> seen finished), by the system
    (send -> the recorded finish), and Flow's own created_at -> finished_at."""
    records = _records(reports)
    client = [r["seen"] - r["send"] for r in records]
    system = [r["finished"] - r["send"] for r in records if r["finished"] is not None]
    internal = [r["finished"] - r["created"] for r in records if r["finished"] is not None and r["created"]]
    p50 = statistics.median(client)
    extra: dict[str, Any] = {
        "p95_ms": percentile(client, 0.95) * 1000, "per_step_ms": p50 * 1000 / steps_per_run,
        "runs": len(records), "failed": sum(1 for r in records if r["status"] != "completed"),
    }
    if system:
        extra.update(system_p50_ms=statistics.median(system) * 1000,
                     system_p95_ms=percentile(system, 0.95) * 1000,
                     system_per_step_ms=statistics.median(system) * 1000 / steps_per_run)
    if internal:
        extra.update(internal_p50_ms=statistics.median(internal) * 1000,
                     internal_p95_ms=percentile(internal, 0.95) * 1000)
    return Figure(p50 * 1000, "ms p50", extra)


# -- the run -------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@contextmanager
def _timed(label: str) -> Iterator[None]:
    start = time.monotonic()
    print(f"  {label} ...", end="", flush=True, file=sys.stderr)
    yield
    print(f" {time.monotonic() - start:.1f}s", file=sys.stderr)


# Seconds to wait before reading pg_stat_database after a workload: PostgreSQL 15 backends report
# their counts at most once a second, and one that went idle right after a report holds the rest
# for up to 10 s (PGSTAT_IDLE_INTERVAL), which would count them in the next workload. The quick run
# does not wait (its commits/step are approximate).
STATS_SETTLE = 11.0


def run(sizes: Sizes, concurrency: int, with_celery: bool, quick: bool = False,
        only: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Everything, or only the workloads (W1..W4) of ``only``."""
    env = Environment()
    env.create()
    procs = Processes()
    results: dict[str, Any] = {"figures": {}, "api": {}, "raw": {}, "flow": {}, "sizes": sizes.__dict__,
                               "concurrency": concurrency, "logs": str(env.tmp)}
    figures: dict[str, dict[str, Figure]] = results["figures"]
    try:
        flow = FlowSystem(env, procs, concurrency)
        systems: list[Any] = [flow]
        if with_celery:
            # The quick run (CI: the code must not rot) runs Celery's rpc backend only; the db
            # backend takes seconds even for the quick sizes.
            backends = ("rpc",) if quick else ("db", "rpc")
            systems += [CelerySystem(env, procs, concurrency, b) for b in backends]
        for system in systems:
            system.ready()
        settle = 0.0 if quick else STATS_SETTLE
        time.sleep(0.2 if quick else 1.5)
        rss_start = rss_kib(flow.coordinator.pid)

        with _timed("raw: kombu publish+consume with confirms"):
            results["raw"]["msgs_per_s"] = raw_broker(env, sizes.raw_messages)
        with _timed("raw: single-row PostgreSQL commits"):
            results["raw"]["commits_per_s"] = raw_commits(env, sizes.raw_commits)

        def flow_workload(key: str, body: Callable[[], Figure], steps: int) -> None:
            if only and key not in only:
                return
            before = commits(env.db)
            with _timed(f"{key} Flow"):
                figure = body()
            time.sleep(settle)  # see STATS_SETTLE
            figure.extra["commits_per_step"] = (commits(env.db) - before) / steps
            figure.extra["coordinator_rss_kib"] = rss_kib(flow.coordinator.pid)
            figures.setdefault(key, {})["Flow"] = figure

        def celery_workload(key: str, system: CelerySystem, body: Callable[[], Figure]) -> None:
            if only and key not in only:
                return
            with _timed(f"{key} {system.name}"):
                figures.setdefault(key, {})[system.name] = body()

        celeries = systems[1:]
        timeout = 600.0
        # W1: one-step runs
        flow_workload("W1", lambda: flow.throughput("bench_one", [{"i": i} for i in range(sizes.w1)], 1, timeout),
                      sizes.w1)
        # W2: 3-step chains, all at once
        flow_workload("W2", lambda: flow.throughput("bench_chain", [{"i": i} for i in range(sizes.w2)], 3, timeout),
                      sizes.w2 * 3)
        # (Celery's W1, W2 and W4 come from its one-client run below: the bench process would be
        # that same one client.)
        # W3: fan-out 1 -> N -> 1, one after the other
        items = list(range(sizes.w3_width))
        w3_steps = sizes.w3_times * (sizes.w3_width + 2)

        def w3_flow() -> Figure:
            latencies = flow.sequential("bench_fan", {"items": items}, sizes.w3_times, timeout)
            return Figure(sum(latencies), "s", {"per_fan_s": statistics.mean(latencies)})

        flow_workload("W3", w3_flow, w3_steps)
        if celeries:
            from celery import chain, chord
        for c in celeries:
            def w3_celery(c: CelerySystem = c) -> Figure:
                try:
                    latencies = c.sequential(
                        lambda: chain(c.noop.si(items), chord([c.noop.si(j) for j in items], c.noop.s())),
                        sizes.w3_times, timeout)
                except Exception as exc:  # e.g. a backend without chord support
                    return Figure(float("nan"), "s", {"error": f"{type(exc).__name__}: {exc}"[:200]})
                return Figure(sum(latencies), "s", {"per_fan_s": statistics.mean(latencies)})

            celery_workload("W3", c, w3_celery)

        # W4: latency of one 3-step chain at a time
        def latency_figure(latencies: list[float]) -> Figure:
            p50 = statistics.median(latencies)
            return Figure(p50 * 1000, "ms p50", {"p95_ms": percentile(latencies, 0.95) * 1000,
                                                 "per_step_ms": p50 * 1000 / 3})

        flow_workload("W4", lambda: latency_figure(flow.sequential("bench_chain", {"i": 1}, sizes.w4, timeout)),
                      sizes.w4 * 3)

        # Through the API: `flow serve` + the coordinator + 2 workers, driven by client processes;
        # Celery by as many client processes calling apply_async. Interleaved per workload.
        api: dict[str, dict[str, Figure]] = results["api"]
        workloads = [("W1", "bench_one", sizes.api_w1, 1, "throughput", 0),
                     ("W2", "bench_chain", sizes.api_w2, 3, "throughput", 0),
                     ("W4", "bench_chain", sizes.api_w4, 3, "sequential", 0)]
        workloads = [w for w in workloads if not only or w[0] in only]
        plan = [(n, w) for n in sizes.api_clients for w in workloads]
        if flow.features.get("batch") and (not only or "W1" in only):
            plan.append((1, ("W1", "bench_one", sizes.api_w1, 1, "throughput", 500)))
        for clients, (key, workflow, count, steps, mode, batch) in plan:
            label = f"{key} {'batch ' if batch else ''}x{clients}"
            measure = api_latency if mode == "sequential" else (lambda r, s=steps: api_throughput(r, s))
            tag = uuid.uuid4().hex[:8]
            shares = split(list(range(count)), clients)
            jobs = [{"base": flow.base, "token": flow.token, "workflow": workflow, "mode": mode,
                     "params": [{"i": i} for i in share], "tag": f"{tag}-{c}",
                     "use_wait": flow.features.get("wait", False), "batch": batch}
                    for c, share in enumerate(shares)]
            before = commits(env.db)
            with _timed(f"API {label} Flow"):
                figure = measure(run_clients("flow", jobs))
            time.sleep(settle)
            figure.extra["commits_per_step"] = (commits(env.db) - before) / (count * steps)
            api.setdefault(label, {})["Flow"] = figure
            if batch:
                continue
            for c in celeries:
                jobs = [{"broker": env.amqp_url, "backend": c.url, "queue": c.queue, "steps": steps,
                         "mode": mode, "params": share} for share in shares]
                with _timed(f"API {label} {c.name}"):
                    api.setdefault(label, {})[c.name] = measure(run_clients("celery", jobs))
        # The in-process table's Celery columns: its one-client figures.
        for key in ("W1", "W2", "W4"):
            for c in celeries:
                one = api.get(f"{key} x1", {}).get(c.name)
                if one is not None:
                    figures.setdefault(key, {})[c.name] = one
        results["flow"]["rss_start_kib"] = rss_start
        results["flow"]["rss_end_kib"] = rss_kib(flow.coordinator.pid)
        for system in systems:
            system.close()
    finally:
        procs.stop()
        env.drop()
    return results


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def _grid(rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def api_table(results: dict[str, Any]) -> str:
    """Through the API (Flow) and the client (Celery): each figure at the client and, in
    parentheses, from the system's own timestamps."""
    api = results.get("api") or {}
    if not api:
        return ""
    systems = [s for s in ("Flow", "Celery db", "Celery rpc") if any(s in v for v in api.values())]
    header = ["workload (clients)", "unit", *[f"{s} client (system)" for s in systems]]
    header += [f"Flow/{s}" for s in systems[1:]] + ["Flow starts/s", "commits/step"]
    rows = [header]
    for label, by_system in api.items():
        flow = by_system.get("Flow")
        if flow is None:
            continue
        latency = flow.unit.startswith("ms")
        row = [label, flow.unit]
        for name in systems:
            fig = by_system.get(name)
            if fig is None:
                row.append("-")
                continue
            system = fig.extra.get("system_p50_ms" if latency else "system_steps_per_s")
            row.append(f"{_fmt(fig.value)} ({_fmt(system) if system is not None else '-'})")
        for other in systems[1:]:
            theirs = by_system.get(other)
            if theirs is None:
                row.append("-")
            elif latency:
                row.append(f"{theirs.value / flow.value:.1f}x faster")
            else:
                row.append(f"{flow.value / theirs.value:.1f}x")
        row.append(_fmt(flow.extra["starts_per_s"]) if "starts_per_s" in flow.extra else "-")
        row.append(f"{flow.extra['commits_per_step']:.3f}")
        rows.append(row)
    extra = []
    for label, by_system in api.items():
        for name, fig in by_system.items():
            if fig.unit.startswith("ms"):
                line = (f"API {label} {name}: client p50 {fig.value:.1f} ms, p95 {fig.extra['p95_ms']:.1f} ms, "
                        f"{fig.extra['per_step_ms']:.2f} ms per step")
                if "system_p50_ms" in fig.extra:
                    line += (f"; system p50 {fig.extra['system_p50_ms']:.1f} ms, p95 {fig.extra['system_p95_ms']:.1f}"
                             f" ms, {fig.extra['system_per_step_ms']:.2f} ms per step")
                if "internal_p50_ms" in fig.extra:
                    line += f"; created->finished p50 {fig.extra['internal_p50_ms']:.1f} ms"
                extra.append(line)
    return "\n".join(["Through the API (Flow: HTTP clients of `flow serve`; Celery: apply_async clients)",
                       *_grid(rows), "", *extra])


def table(results: dict[str, Any]) -> str:
    figures = results["figures"]
    raw = results["raw"]
    systems = ["Flow", "Celery db", "Celery rpc"]
    present = [s for s in systems if any(s in f for f in figures.values())]
    lower_is_better = {"W3", "W4"}
    header = ["workload", "unit", *present]
    header += [f"Flow/{s}" for s in present[1:]]
    header += ["Flow/raw", "commits/step"]
    rows = [header]
    labels = {"W1": "W1 10k one-step", "W2": "W2 500 3-step chains", "W3": "W3 fan 1-100-1 x20 (total)",
              "W4": "W4 chain latency p50"}
    for key in ("W1", "W2", "W3", "W4"):
        by_system = figures.get(key, {})
        flow = by_system.get("Flow")
        if flow is None:
            continue
        row = [labels[key], flow.unit]
        row += [_fmt(by_system[s].value) if s in by_system else "-" for s in present]
        for other in present[1:]:
            theirs = by_system.get(other)
            if theirs is None or theirs.value != theirs.value:
                row.append("n/a")
            elif key in lower_is_better:
                row.append(f"{theirs.value / flow.value:.1f}x faster")
            else:
                row.append(f"{flow.value / theirs.value:.1f}x")
        if key in ("W1", "W2"):
            row.append(f"{flow.value / raw['msgs_per_s']:.0%} msg, {flow.value / raw['commits_per_s']:.1f}x commit")
        else:
            row.append("-")
        row.append(f"{flow.extra['commits_per_step']:.3f}")
        rows.append(row)
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    extra = []
    w4 = figures.get("W4", {})
    for name, fig in w4.items():
        extra.append(f"W4 {name}: p50 {fig.value:.1f} ms, p95 {fig.extra['p95_ms']:.1f} ms, "
                     f"{fig.extra['per_step_ms']:.2f} ms per step")
    for name, fig in figures.get("W3", {}).items():
        if "error" in fig.extra:
            extra.append(f"W3 {name}: {fig.extra['error']}")
        else:
            extra.append(f"W3 {name}: {fig.extra['per_fan_s'] * 1000:.0f} ms per fan-out")
    extra.append(f"raw limits: {raw['msgs_per_s']:,.0f} msg/s (kombu publish+consume, confirms), "
                 f"{raw['commits_per_s']:,.0f} commits/s (single-row, one connection)")
    flow_info = results["flow"]
    rss_lines = [f"{k}: {figures[k]['Flow'].extra['coordinator_rss_kib'] / 1024:.0f}" for k in figures
                 if "Flow" in figures[k]]
    extra.append(f"coordinator RSS MiB: start {flow_info['rss_start_kib'] / 1024:.0f}, after "
                 + ", after ".join(rss_lines) + f", end {flow_info['rss_end_kib'] / 1024:.0f}")
    return "\n".join(lines + [""] + extra)


def describe_machine() -> str:
    import celery  # noqa: F401  (optional)
    import kombu
    import sqlalchemy

    try:
        import celery as celery_module
        celery_version = celery_module.__version__
    except ImportError:
        celery_version = "not installed"
    pg = psycopg2.connect(f"{PG}/postgres")
    with pg.cursor() as cur:
        cur.execute("SHOW server_version")
        pg_version = cur.fetchone()[0]
    pg.close()
    rabbit = subprocess.run(["rabbitmqctl", "-q", "version"], capture_output=True, text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, PostgreSQL {pg_version}, "
            f"RabbitMQ {rabbit}, kombu {kombu.__version__}, Celery {celery_version}, SQLAlchemy {sqlalchemy.__version__}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a few seconds (CI)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="Flow worker threads = Celery prefork processes (default 4)")
    parser.add_argument("--no-celery", action="store_true", help="Flow and the raw limits only")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    parser.add_argument("--only", metavar="W1,W4", help="only these workloads (for a focused measurement)")
    parser.add_argument("--clients", metavar="1,16", help="client process counts through the API")
    args = parser.parse_args(argv)
    with_celery = not args.no_celery
    if with_celery:
        try:
            import celery  # noqa: F401
        except ImportError:
            print("Celery is not installed (pip install -e '.[bench]'); running Flow and the raw limits only",
                  file=sys.stderr)
            with_celery = False
    sizes = QUICK if args.quick else FULL
    if args.clients:
        sizes = replace(sizes, api_clients=tuple(int(c) for c in args.clients.split(",")))
    print(f"bench: {'quick' if args.quick else 'full'} run, concurrency {args.concurrency}", file=sys.stderr)
    only = frozenset(w.strip().upper() for w in (args.only or "").split(",") if w.strip())
    results = run(sizes, args.concurrency, with_celery, quick=args.quick, only=only)
    if with_celery:
        print(describe_machine())
    print(f"command: python -m bench.run{' --quick' if args.quick else ''} --concurrency {args.concurrency}")
    print(api_table(results))
    print()
    print("In process (Flow: Store.start_runs/start_run in the bench; Celery: its one-client figures)")
    print(table(results))
    if args.json:
        def plain(section: dict[str, dict[str, Figure]]) -> dict[str, Any]:
            return {k: {s: {"value": f.value, "unit": f.unit, **f.extra} for s, f in v.items()}
                    for k, v in section.items()}

        serialisable = {**results, "figures": plain(results["figures"]), "api": plain(results["api"])}
        Path(args.json).write_text(json.dumps(serialisable, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
