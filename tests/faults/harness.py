"""A Flow cluster of separate processes on a fresh PostgreSQL database and RabbitMQ vhost.

``Cluster`` starts ``flow coordinator`` and ``flow worker`` processes (logs in its directory),
kills/stops/restarts them, starts runs through the store, and waits for them. A supervisor thread
restarts workers that died (the poison scenario kills them from the sink). Used by the pytest
scenarios and by ``python -m tests.faults.soak``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("FLOW_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_HOST = os.environ.get("FLOW_TEST_AMQP_HOST", "127.0.0.1:5672")
TERMINAL = {"completed", "failed", "cancelled", "compensated", "compensation_failed"}
DISRUPTIVE = os.environ.get("FLOW_FAULTS_DISRUPTIVE", "") in ("1", "true", "yes")
QUEUES = "http_request,compensation"


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """``preexec_fn`` of every process the suite starts: its own process group (so that ``close``
    can kill it with anything it started), and on Linux ``PR_SET_PDEATHSIG``: the kernel sends it
    SIGKILL when the thread that started it dies, so a killed or timed-out pytest leaves no
    ``flow coordinator`` running against a dropped database. (The signal follows the *thread*
    that forked: the suite spawns from the main thread or the supervisor, which lives until
    ``close``.)"""
    os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)


def kill_group(proc: "subprocess.Popen[bytes]", sig: int = signal.SIGKILL) -> None:
    """``sig`` to ``proc``'s process group (it leads one: ``_die_with_parent``)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def flow_cmd(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from flow.cli.main import main; sys.exit(main())", *args]


def faulty_coordinator_cmd(fault: str) -> list[str]:
    """A coordinator that dies by ``fault`` (tests/faults/faulty_coordinator.py); run with cwd=ROOT."""
    return [sys.executable, "-m", "tests.faults.faulty_coordinator", fault]


def rabbitmqctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout)


def create_database() -> str:
    import psycopg2

    name = f"flow_fault_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    return f"{base}/{name}"


def drop_database(url: str) -> None:
    import psycopg2

    name = url.rsplit("/", 1)[1]
    for _ in range(30):
        try:
            admin = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
            break
        except psycopg2.OperationalError:
            time.sleep(1)  # the server may be restarting (disruptive scenarios)
    else:
        return
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


def create_vhost() -> str:
    vhost = f"flow_fault_{uuid.uuid4().hex[:10]}"
    rabbitmqctl("add_vhost", vhost).check_returncode()
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*").check_returncode()
    return vhost


class Cluster:
    """Processes of one Flow installation. ``env`` overrides the processes' environment."""

    def __init__(self, *, coordinators: int = 2, workers: int = 3, concurrency: int = 8,
                 env: dict[str, str] | None = None, database_url: str | None = None,
                 broker_url: str | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="flow-faults-"))
        self.own_db = database_url is None
        self.database_url = create_database() if database_url is None else database_url
        self.vhost = create_vhost()
        self.broker_url = broker_url or f"amqp://guest:guest@{AMQP_HOST}/{self.vhost}"
        self.n_coordinators, self.n_workers, self.concurrency = coordinators, workers, concurrency
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "RABBITMQ_", "FLOW_"))}
        base.update({
            "DATABASE_URL": self.database_url, "BROKER_URL": self.broker_url,
            "FLOW_HTTP_ALLOWLIST": "127.0.0.1", "FLOW_LOG_FORMAT": "text", "PYTHONPATH": str(ROOT),
            "FLOW_PREFETCH": "4",
        })
        base.update(env or {})
        self.env = base
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts = 0
        self._supervise = threading.Event()
        self._lock = threading.RLock()
        self._store: Any = None
        from engine.store import db

        db.upgrade(self.database_url)

    # -- processes -------------------------------------------------------------------------

    def start(self) -> "Cluster":
        for i in range(self.n_coordinators):
            self.spawn(f"coordinator-{i}")
        for i in range(self.n_workers):
            self.spawn(f"worker-{i}")
        return self

    def spawn(self, name: str, extra_env: dict[str, str] | None = None, *,
              fault: str | None = None) -> subprocess.Popen[bytes]:
        """Start process ``name`` (its role is the part before ``-``); a coordinator with ``fault``
        runs tests/faults/faulty_coordinator.py instead of ``flow coordinator``."""
        role = name.split("-")[0]
        if role == "coordinator" and fault is not None:
            args = faulty_coordinator_cmd(fault)
        elif role == "coordinator":
            args = flow_cmd("coordinator")
        elif role == "worker":
            args = flow_cmd("worker", "--queues", QUEUES, "--concurrency", str(self.concurrency),
                            "--grace-period", "5")
        elif role == "scheduler":
            args = flow_cmd("scheduler")
        else:
            raise ValueError(name)
        log = open(self.dir / f"{name}.log", "ab")
        with self._lock:
            proc = subprocess.Popen(args, env={**self.env, **(extra_env or {})}, cwd=ROOT,
                                    stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            self.procs[name] = proc
        log.close()  # the child has its own descriptor
        return proc

    def names(self, role: str) -> list[str]:
        return sorted(n for n in self.procs if n.startswith(role))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        with self._lock:
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(sig)
                if sig == signal.SIGKILL:
                    proc.wait(10)
                    kill_group(proc)  # anything it started

    def restart(self, name: str, extra_env: dict[str, str] | None = None) -> None:
        with self._lock:
            if self.procs[name].poll() is None:
                self.kill(name)
            self.restarts += 1
            self.spawn(name, extra_env)

    def supervise(self) -> None:
        """Restart dead workers (0.3 s after they died) until ``close``."""
        def loop() -> None:
            while not self._supervise.wait(0.3):
                for name in self.names("worker"):
                    with self._lock:
                        if self.procs[name].poll() is not None and not self._supervise.is_set():
                            self.restart(name)
        threading.Thread(target=loop, daemon=True).start()

    def pid_of_client_port(self, port: int) -> str | None:
        """The worker whose TCP connection to the sink has local port ``port``."""
        inodes: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                parts = line.split()
                if int(parts[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(parts[9])
        wanted = {f"socket:[{i}]" for i in inodes}
        with self._lock:
            for name, proc in self.procs.items():
                if not name.startswith("worker") or proc.poll() is not None:
                    continue
                try:
                    for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                        try:
                            if os.readlink(f"/proc/{proc.pid}/fd/{fd}") in wanted:
                                return name
                        except OSError:
                            continue
                except OSError:
                    continue
        return None

    def log_text(self, role: str = "") -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.dir.glob(f"{role}*.log")))

    def close(self) -> None:
        self._supervise.set()
        with self._lock:
            for proc in self.procs.values():
                if proc.poll() is None:
                    try:
                        proc.send_signal(signal.SIGCONT)
                        proc.send_signal(signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            for proc in self.procs.values():
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
                kill_group(proc)  # whatever is left of it, and anything it started
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        if self._store is not None:
            self._store.engine.dispose()
        if self.own_db:
            drop_database(self.database_url)
        rabbitmqctl("delete_vhost", self.vhost)

    # -- the database ----------------------------------------------------------------------

    @property
    def store(self) -> Any:
        if self._store is None:
            from engine.store import Store
            from engine.store.db import make_engine

            self._store = Store(make_engine(self.database_url))
        return self._store

    def deploy(self, source: str) -> None:
        self.store.deploy(source, "faults.flow")

    def start_runs(self, workflow: str, params: list[dict[str, Any]]) -> list[str]:
        return [self.store.start_run(workflow, p) for p in params]

    def statuses(self, run_ids: list[str]) -> dict[str, str]:
        engine = self.store.engine
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, status FROM runs WHERE id = ANY(:ids)"),
                                {"ids": list(run_ids)}).all()
        return {r.id: r.status for r in rows}

    def wait_terminal(self, run_ids: list[str], timeout: float) -> float:
        """Seconds until every run is terminal (or ``timeout``)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            try:
                statuses = self.statuses(run_ids)
                if len(statuses) == len(run_ids) and all(s in TERMINAL for s in statuses.values()):
                    break
            except sa.exc.OperationalError:
                self.store.engine.dispose()
            time.sleep(0.25)
        return time.monotonic() - started

    def wait_effects(self, sink: Any, prefix: str, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while len(sink.effects(prefix)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no progress: {len(sink.effects(prefix))} effects on {prefix}, "
                                     f"wanted {count}; logs in {self.dir}")
            time.sleep(0.02)
