"""The recovery benchmark: how fast a backlog drains after crashes and outages (issue 19).

Run: ``python -m bench.recovery [--runs 200] [--step-seconds 1.5] [--faults ...]``. It runs the
load twice on fresh databases and vhosts, once without faults and once with them, and prints both.

The load: ``--runs`` runs of a 3-step HTTP chain whose middle step takes ``--step-seconds`` at a
local HTTP target, on ``--workers`` workers of ``--threads`` threads and one coordinator, all
separate ``flow`` processes. The faults (``--faults``, comma-separated ``kind@second[:down]``,
seconds after the first run started):

- ``worker@S``: SIGKILL a worker; it is started again ``--restart-after`` seconds later;
- ``coordinator@S``: the same for the coordinator;
- ``broker@S:D``: ``rabbitmqctl -n NODE stop_app``, wait D seconds, ``start_app``;
- ``database@S``: ``pg_ctlcluster VERSION CLUSTER restart``.

It injects faults into real servers, so it needs servers of its own: ``DATABASE_URL`` (any
database of the PostgreSQL server to use; default ``postgresql://postgres@127.0.0.1:5433/postgres``)
with ``--pg-cluster`` naming that server for ``pg_ctlcluster``, and ``BROKER_URL`` (default
``amqp://guest:guest@127.0.0.1:5673``) with ``--rabbit-node`` naming that node for ``rabbitmqctl``.
It refuses to restart servers on the default ports 5432 and 5672 (other people's, usually).

Printed: per system the time from the first start to the last run finished, the outages, the
time beyond them (with faults: total - fault-free total - outages), step requests sent again with
the same Idempotency-Key (repeats), lease expiries, runs lost, double effects (a step requested
under two different keys) and processes that exited on their own; then the timeline of the
slowest tasks: dispatched (task created) -> delivered (to the worker that finished it) ->
started -> finished (on the worker) -> recorded (by the coordinator), in seconds from the start.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg2

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5433/postgres"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5673"
DEFAULT_FAULTS = "worker@3,coordinator@3.5,broker@5:3,database@13"
SHARED_PORTS = {5432, 5672}
FLOW = [sys.executable, "-c", "import sys; from flow.cli.main import main; sys.exit(main())"]
TERMINAL = ("completed", "failed", "cancelled", "compensated", "compensation_failed")

CHAIN = """
flow 1
workflow recovery_chain(base: string, n: int) {
  defaults {
    timeout 60s
    retry { attempts: 5, delay: 500ms, backoff: 2.0, max_delay: 5s, errors: ["http.5xx", "network", "timeout"] }
  }
  step one: http { method: "POST"  url: "${params.base}/one"  body: { n: params.n }
                   compensate none "benchmark target" }
  step two: http { after one  method: "POST"  url: "${params.base}/two"  body: { n: params.n }
                   compensate none "benchmark target" }
  step three: http { after two  method: "POST"  url: "${params.base}/three"  body: { n: params.n }
                     compensate none "benchmark target" }
}
"""


@dataclass(frozen=True)
class Fault:
    kind: str
    at: float
    down: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> "Fault":
        kind, _, rest = spec.partition("@")
        at, _, down = rest.partition(":")
        if kind not in ("worker", "coordinator", "broker", "database") or not at:
            raise SystemExit(f"--faults: {spec!r} is not kind@second[:down] with kind worker, coordinator, "
                             "broker or database")
        return cls(kind, float(at), float(down or 0.0))


# -- the HTTP target -------------------------------------------------------------------------------


@dataclass
class Sink:
    """Answers the chain's steps (``/two`` after ``step_seconds``); records every request."""

    step_seconds: float
    requests: list[tuple[float, str, str, str]] = field(default_factory=list)  # at, path, key, run n
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> str:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with sink.lock:
                    sink.requests.append((time.time(), self.path, self.headers.get("Idempotency-Key") or "",
                                          str(json.loads(body or b"{}").get("n"))))
                if self.path == "/two":
                    time.sleep(sink.step_seconds)
                answer = json.dumps({"ok": True}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()

    def repeats(self) -> int:
        keys = [key for _, _, key, _ in self.requests]
        return len(keys) - len(set(keys))

    def double_effects(self) -> int:
        """Steps of a run requested under more than one key (an effect twice, if not idempotent)."""
        keys: dict[tuple[str, str], set[str]] = {}
        for _, path, key, n in self.requests:
            keys.setdefault((n, path), set()).add(key)
        return sum(1 for k in keys.values() if len(k) > 1)


# -- servers and processes ---------------------------------------------------------------------


class Servers:
    """The PostgreSQL server and RabbitMQ node under test, and their faults."""

    def __init__(self, pg_url: str, amqp_url: str, pg_cluster: str, rabbit_node: str) -> None:
        self.pg_url, self.amqp_url = pg_url, amqp_url.rstrip("/")
        self.pg_cluster, self.rabbit_node = pg_cluster.split(), rabbit_node

    def check_own(self, faults: list[Fault]) -> None:
        kinds = {f.kind for f in faults}
        for kind, url in (("database", self.pg_url), ("broker", self.amqp_url)):
            if kind in kinds and (urlsplit(url).port or 0) in SHARED_PORTS:
                raise SystemExit(f"refusing to restart the {kind} at {url}: port {urlsplit(url).port} is "
                                 "usually a shared server. Start your own (see bench/README.md) and set "
                                 "DATABASE_URL / BROKER_URL to it.")

    def database(self, name: str) -> str:
        parts = urlsplit(self.pg_url)
        return urlunsplit(parts._replace(scheme="postgresql+psycopg2", path=f"/{name}"))

    def admin(self, sql: str) -> None:
        conn = psycopg2.connect(self.pg_url)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
        conn.close()

    def rabbitmqctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", "-n", self.rabbit_node, *args], check=True, capture_output=True,
                       timeout=120)

    def restart_database(self) -> None:
        subprocess.run(["pg_ctlcluster", *self.pg_cluster, "restart"], check=True, capture_output=True, timeout=120)

    def broker_outage(self, down: float) -> None:
        self.rabbitmqctl("stop_app")
        time.sleep(down)
        self.rabbitmqctl("start_app")


class Cluster:
    """``flow coordinator`` and ``flow worker`` processes on a fresh database and vhost."""

    def __init__(self, servers: Servers, workers: int, threads: int, logdir: Path, *, keep: bool = False) -> None:
        tag = uuid.uuid4().hex[:8]
        self.keep = keep
        self.servers, self.logdir = servers, logdir
        self.db, self.vhost = f"flow_recovery_{tag}", f"flow_recovery_{tag}"
        servers.admin(f'CREATE DATABASE "{self.db}"')
        servers.rabbitmqctl("add_vhost", self.vhost)
        servers.rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        self.database_url = servers.database(self.db)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "RABBITMQ_", "FLOW_", "BENCH_"))}
        env.update(PYTHONPATH=str(ROOT), FLOW_LOG_FORMAT="text", DATABASE_URL=self.database_url,
                   BROKER_URL=f"{servers.amqp_url}/{self.vhost}", FLOW_HTTP_ALLOWLIST="127.0.0.1")
        self.env = env
        self.commands = {"coordinator": ["coordinator"]}
        for i in range(workers):
            self.commands[f"worker{i + 1}"] = ["worker", "--queues", "http_request", "--concurrency", str(threads)]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: set[int] = set()
        self.exited_on_their_own: list[str] = []
        self._flow(["db", "upgrade"])

    def _flow(self, args: list[str]) -> None:
        subprocess.run([*FLOW, *args], env=self.env, check=True,
                       capture_output=True, timeout=120, cwd=str(ROOT))

    def spawn(self, name: str) -> None:
        log = open(self.logdir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([*FLOW, *self.commands[name]],
                                            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))

    def start(self) -> None:
        for name in self.commands:
            self.spawn(name)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        self.killed.add(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def check_exits(self) -> None:
        """Processes that exited although nobody killed them: counted, and started again."""
        for name, proc in list(self.procs.items()):
            if proc.poll() is not None and proc.pid not in self.killed:
                self.exited_on_their_own.append(f"{name} (exit {proc.returncode})")
                self.spawn(name)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.keep:
            print(f"  kept database {self.db} and vhost {self.vhost}", file=sys.stderr)
            return
        try:
            self.servers.admin(f'DROP DATABASE IF EXISTS "{self.db}" WITH (FORCE)')
        finally:
            self.servers.rabbitmqctl("delete_vhost", self.vhost)


# -- one measurement ---------------------------------------------------------------------------


@dataclass
class Outcome:
    label: str
    total: float
    outages: float
    repeats: int
    lease_expiries: int
    lost: int
    double_effects: int
    exits: list[str]
    timelines: list[tuple[str, list[float | None]]]


def run_once(label: str, args: argparse.Namespace, servers: Servers, faults: list[Fault]) -> Outcome:
    from engine.store import Store
    from engine.store.db import make_engine

    logdir = Path(tempfile.mkdtemp(prefix="flow-recovery-"))
    sink = Sink(args.step_seconds)
    base = sink.start()
    cluster = Cluster(servers, args.workers, args.threads, logdir, keep=args.keep)
    try:
        cluster.start()
        store = Store(make_engine(cluster.database_url))
        version = {d.name: d for d in store.deploy(CHAIN, "recovery_chain.flow")}["recovery_chain"].version
        time.sleep(args.warmup)  # the processes connect
        t0 = time.time()
        run_ids = store.start_runs("recovery_chain", [{"base": base, "n": i} for i in range(args.runs)],
                                   version=version)
        outages = inject(cluster, servers, faults, t0, args.restart_after)
        lost = wait_all(cluster, [str(r) for r in run_ids], t0 + args.timeout)
        total, lease_expiries, timelines = measure(cluster.database_url, t0, args.show)
        return Outcome(label, total, outages, sink.repeats(), lease_expiries, lost, sink.double_effects(),
                       cluster.exited_on_their_own, timelines)
    finally:
        cluster.close()
        sink.stop()
        print(f"  ({label}: process logs in {logdir})", file=sys.stderr)


def inject(cluster: Cluster, servers: Servers, faults: list[Fault], t0: float, restart_after: float) -> float:
    """Inject ``faults`` on schedule (in a thread each); returns the summed outage in seconds."""
    outages: list[float] = []

    def one(fault: Fault) -> None:
        time.sleep(max(0.0, t0 + fault.at - time.time()))
        began = time.time()
        if fault.kind in ("worker", "coordinator"):
            name = "coordinator" if fault.kind == "coordinator" else "worker1"
            cluster.kill(name)
            time.sleep(restart_after)
            cluster.spawn(name)
        elif fault.kind == "broker":
            servers.broker_outage(fault.down)
        else:
            servers.restart_database()
        outages.append(time.time() - began)
        print(f"  {fault.kind} fault at {began - t0:.1f}s: out {outages[-1]:.1f}s", file=sys.stderr)

    threads = [threading.Thread(target=one, args=(f,)) for f in faults]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(outages)


def wait_all(cluster: Cluster, run_ids: list[str], deadline: float) -> int:
    """Wait for every run to finish (or the deadline); the number that did not (lost). One count
    query per poll: the bench must not load the machine it measures."""
    url = cluster.database_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    left = len(run_ids)
    while left and time.time() < deadline:
        cluster.check_exits()
        try:
            conn = psycopg2.connect(url, connect_timeout=2)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT count(*) FROM runs WHERE id = ANY(%s) AND status <> ALL(%s)",
                                (run_ids, list(TERMINAL)))
                    left = int(cur.fetchone()[0])
            finally:
                conn.close()
        except psycopg2.Error:  # the database restarts: ask again
            pass
        time.sleep(0.5)
    return left


def measure(database_url: str, t0: float, show: int) -> tuple[float, int, list[tuple[str, list[float | None]]]]:
    url = database_url.replace("postgresql+psycopg2://", "postgresql://", 1)
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("SELECT max(finished_at) FROM runs")
        last = cur.fetchone()[0]
        cur.execute("SELECT count(*) FROM task_logs WHERE message LIKE '%%lease expiry%%'")
        expiries = int(cur.fetchone()[0])
        cur.execute(
            "SELECT t.step, t.created_at, l.data, t.finished_at FROM tasks t "
            "LEFT JOIN task_logs l ON l.task_id = t.id AND l.message LIKE 'attempt %% completed' "
            "WHERE t.kind = 'step' ORDER BY t.finished_at - t.created_at DESC NULLS FIRST LIMIT %s", (show,))
        rows = cur.fetchall()
    conn.close()

    def rel(value: Any) -> float | None:
        if value is None:
            return None
        seconds = value.timestamp() if isinstance(value, datetime) else float(value)
        return seconds - t0

    timelines = []
    for step, created, data, recorded in rows:
        data = data or {}
        timelines.append((step, [rel(created), rel(data.get("received_at")), rel(data.get("started_at")),
                                 rel(data.get("finished_at")), rel(recorded)]))
    return (rel(last) or float("nan")), expiries, timelines


# -- report ------------------------------------------------------------------------------------


def report(base: Outcome, faulty: Outcome | None, args: argparse.Namespace) -> None:
    print(f"\n{args.runs} runs of a 3-step HTTP chain, middle step {args.step_seconds:g} s, "
          f"{args.workers} workers x {args.threads} threads; faults: {args.faults or 'none'}\n")
    rows = [base] + ([faulty] if faulty else [])
    print("| figure | " + " | ".join(o.label for o in rows) + " |")
    print("|---|" + "---|" * len(rows))

    def line(name: str, values: list[str]) -> None:
        print(f"| {name} | " + " | ".join(values) + " |")

    line("first start -> last run finished", [f"{o.total:.1f} s" for o in rows])
    line("outages", [f"{o.outages:.1f} s" for o in rows])
    if faulty:
        beyond = faulty.total - base.total - faulty.outages
        line("time beyond fault-free + outages", ["-", f"{beyond:.1f} s"])
    line("step requests sent again (same Idempotency-Key)", [str(o.repeats) for o in rows])
    line("lease expiries", [str(o.lease_expiries) for o in rows])
    line("runs lost (not finished)", [str(o.lost) for o in rows])
    line("steps requested under two keys", [str(o.double_effects) for o in rows])
    line("processes that exited on their own", [", ".join(o.exits) or "0" for o in rows])
    for outcome in rows:
        print(f"\nslowest tasks ({outcome.label}): s from the first start; dispatched -> delivered -> started "
              "-> finished -> recorded")
        for step, points in outcome.timelines:
            print(f"  {step:6} " + " -> ".join("?" if p is None else f"{p:6.1f}" for p in points))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--step-seconds", type=float, default=1.5, help="duration of the middle step")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8, help="handler threads per worker")
    parser.add_argument("--faults", default=DEFAULT_FAULTS,
                        help=f"kind@second[:down], comma-separated ('' for none; default {DEFAULT_FAULTS})")
    parser.add_argument("--restart-after", type=float, default=1.0, help="seconds before a killed process restarts")
    parser.add_argument("--no-baseline", action="store_true", help="skip the fault-free run")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before unfinished runs count as lost")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds for the processes to connect")
    parser.add_argument("--show", type=int, default=8, help="timelines of the N slowest tasks")
    parser.add_argument("--keep", action="store_true", help="keep the databases and vhosts (to study them)")
    parser.add_argument("--pg-cluster", default="15 recov", help="'VERSION NAME' for pg_ctlcluster")
    parser.add_argument("--rabbit-node", default="recov@localhost", help="node name for rabbitmqctl -n")
    args = parser.parse_args(argv)
    faults = [Fault.parse(s) for s in args.faults.split(",") if s.strip()]
    servers = Servers(os.environ.get("DATABASE_URL", DEFAULT_PG), os.environ.get("BROKER_URL", DEFAULT_AMQP),
                      args.pg_cluster, args.rabbit_node)
    servers.check_own(faults)
    base = run_once("without faults", args, servers, []) if not args.no_baseline or not faults else None
    faulty = run_once("with faults", args, servers, faults) if faults else None
    if base is None:
        assert faulty is not None
        base, faulty = faulty, None
    report(base, faulty, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
