"""The fault scenarios. Each one builds its own cluster (fresh database and vhost), injects its
fault, waits for recovery and returns the checker's ``Report``; the pytest suite asserts on it, the
soak command repeats them with a seed and prints every figure.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import Counter
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from tests.faults import workflows
from tests.faults.checker import Report, check
from tests.faults.harness import Cluster, rabbitmqctl
from tests.http_sink import Sink

RECOVERY_TIMEOUT = 90.0


@contextmanager
def cluster(sink: Sink | None = None, **options: Any) -> Iterator[tuple[Cluster, Sink]]:
    sink = sink or Sink()
    sink.start()
    c = Cluster(**options)
    try:
        c.deploy(workflows.ALL)
        c.start()
        yield c, sink
    finally:
        c.close()
        sink.stop()


def _chain(c: Cluster, sink: Sink, n: int) -> list[str]:
    return c.start_runs("fault_chain", [{"base": sink.url, "i": i} for i in range(n)])


def _check_chain(c: Cluster, sink: Sink, runs: list[str], name: str, recovery: float) -> Report:
    return check(c.store.engine, sink, runs, name, recovery_s=recovery, chain_paths=workflows.CHAIN_PATHS)


def kill_workers(runs: int = 60, kills: int = 3, rng: random.Random | None = None) -> Report:
    """kill -9 a random worker whenever more work was done, ``kills`` times; each restarts."""
    rng = rng or random.Random(0)
    with cluster(workers=3) as (c, sink):
        ids = _chain(c, sink, runs)
        for k in range(kills):
            c.wait_effects(sink, "/s", (k + 1) * runs * 5 // (kills + 2))
            victim = rng.choice(c.names("worker"))
            c.kill(victim)
            c.restart(victim)
        recovery = c.wait_terminal(ids, RECOVERY_TIMEOUT)
        report = _check_chain(c, sink, ids, "kill -9 workers", recovery)
        report.extra["kills"] = kills
        return report


def sigstop_past_lease(runs: int = 20) -> Report:
    """SIGSTOP the worker holding a step past the lease (``FLOW_LEASE_SECONDS=2`` + 5 s grace with
    no heartbeat), then SIGCONT: the step is delivered again (same key) to another worker, the late
    result is refused."""
    with cluster(workers=2, concurrency=4, env={"FLOW_LEASE_SECONDS": "2"}) as (c, sink):
        ids = c.start_runs("fault_stop", [{"base": sink.url} for _ in range(runs)])
        time.sleep(0.2)
        c.wait_effects(sink, "/slow", 1)
        # The worker that holds a slow step (the other may hold none: the prefetch window follows
        # the steps' duration), found by its connection to the sink.
        holders = [c.pid_of_client_port(r.client_port) for r in sink.effects("/slow")]
        victim = next((name for name in holders if name is not None), "worker-0")
        c.kill(victim, signal.SIGSTOP)
        time.sleep(9.0)
        c.kill(victim, signal.SIGCONT)
        resumed = time.monotonic()
        recovery = c.wait_terminal(ids, RECOVERY_TIMEOUT)
        time.sleep(1.0)  # let the resumed worker's late results reach a coordinator
        report = check(c.store.engine, sink, ids, "SIGSTOP past lease, SIGCONT", recovery_s=recovery)
        logs = c.log_text("coordinator")
        report.extra["late_results_refused"] = logs.count(" result of task ")
        report.extra["redelivered_same_key"] = _count_logs(c, ids, "delivered again with the same idempotency key")
        report.extra["resumed_after_s"] = round(time.monotonic() - resumed, 1)
        return report


def _count_logs(c: Cluster, ids: list[str], text: str) -> int:
    import sqlalchemy as sa

    with c.store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM task_logs WHERE run_id = ANY(:ids) "
                                        "AND message LIKE :m"), {"ids": ids, "m": f"%{text}%"}).scalar_one())


def coordinator_exit_before_publish(runs: int = 40) -> Report:
    """Both coordinators exit right after committing a batch and before publishing its messages
    (tests/faults/faulty_coordinator.py exit_before_publish); restarted healthy, they publish what the outbox kept."""
    with cluster(coordinators=0, workers=2) as (c, sink):
        ids = _chain(c, sink, runs)
        faulty = [c.spawn(f"coordinator-{i}", fault="exit_before_publish") for i in range(2)]
        codes = [p.wait(60) for p in faulty]
        import sqlalchemy as sa

        with c.store.engine.connect() as conn:
            left = conn.execute(sa.text("SELECT count(*) FROM outbox")).scalar_one()
        restarted = time.monotonic()
        for i in range(2):
            c.spawn(f"coordinator-{i}")
        c.wait_terminal(ids, RECOVERY_TIMEOUT)
        report = _check_chain(c, sink, ids, "coordinator exit between commit and publish",
                              time.monotonic() - restarted)
        report.extra.update(exit_codes=codes, outbox_rows_left=left)
        return report


def coordinators_racing(runs: int = 80, coordinators: int = 3, kill_one: bool = True) -> Report:
    """Several coordinators on the same runs; one is killed -9 midway and restarted."""
    with cluster(coordinators=coordinators, workers=2) as (c, sink):
        ids = _chain(c, sink, runs)
        if kill_one:
            c.wait_effects(sink, "/s", runs * 2)
            c.kill("coordinator-0")
            c.restart("coordinator-0")
        recovery = c.wait_terminal(ids, RECOVERY_TIMEOUT)
        return _check_chain(c, sink, ids, f"{coordinators} coordinators racing", recovery)


def broker_close_all_connections(runs: int = 60) -> Report:
    with cluster() as (c, sink):
        ids = _chain(c, sink, runs)
        c.wait_effects(sink, "/s", runs)
        rabbitmqctl("close_all_connections", "-p", c.vhost, "flow fault suite").check_returncode()
        after = time.monotonic()
        c.wait_terminal(ids, RECOVERY_TIMEOUT)
        return _check_chain(c, sink, ids, "rabbitmqctl close_all_connections", time.monotonic() - after)


def pg_terminate_backends(runs: int = 60, times: int = 3) -> Report:
    """pg_terminate_backend on every connection to the test database, ``times`` times."""
    import psycopg2

    from tests.faults.harness import PG_ADMIN_URL

    with cluster() as (c, sink):
        ids = _chain(c, sink, runs)
        name = c.database_url.rsplit("/", 1)[1]
        terminated = 0
        for k in range(times):
            c.wait_effects(sink, "/s", (k + 1) * runs)
            admin = psycopg2.connect(PG_ADMIN_URL)
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
                terminated += cur.fetchone()[0]
            admin.close()
        after = time.monotonic()
        c.store.engine.dispose()
        c.wait_terminal(ids, RECOVERY_TIMEOUT)
        report = _check_chain(c, sink, ids, "pg_terminate_backend", time.monotonic() - after)
        report.extra["backends_terminated"] = terminated
        return report


def proxy_cuts(runs: int = 40, cuts: int = 2, commit_cuts: int = 0) -> Report:
    """Coordinators reach PostgreSQL through a TCP proxy that cuts every connection and refuses
    new ones for 2 s, ``cuts`` times; then ``commit_cuts`` times right after forwarding a COMMIT
    (the server commits, the coordinator never hears of it: the results are redelivered and
    dropped as duplicates, and the run must go on from what that commit planned)."""
    from tests.faults.harness import create_database
    from tests.faults.proxy import Proxy

    real = create_database()
    proxy = Proxy("127.0.0.1", 5432)
    via = real.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    try:
        with cluster(database_url=via) as (c, sink):
            ids = _chain(c, sink, runs)
            for k in range(cuts):
                c.wait_effects(sink, "/s", (k + 1) * runs)
                proxy.cut()
                time.sleep(2.0)
                proxy.restore()
            for k in range(commit_cuts):
                proxy.arm(b"COMMIT", wait=0.05, down=0.5)
                _wait_for(lambda: proxy.tripped > k or _all_terminal(c, ids), 30.0)
                _wait_for(lambda: not proxy.down, 10.0)
            after = time.monotonic()
            c.store.engine.dispose()
            c.wait_terminal(ids, RECOVERY_TIMEOUT)
            report = _check_chain(c, sink, ids, "TCP proxy cuts PostgreSQL for 2 s", time.monotonic() - after)
            report.extra.update(cuts=proxy.cuts, commit_cuts=proxy.tripped)
            return report
    finally:
        proxy.close()
        from tests.faults.harness import drop_database

        drop_database(real)


def recovery_at_full_speed(runs: int = 40, delay: float = 0.5, threads: int = 8) -> Report:
    """The short version of ``bench/recovery.py`` (issue 19): 2 workers x ``threads`` and one
    coordinator, all reaching RabbitMQ through a TCP proxy; a chain with a ``delay`` s step. Once
    work is flowing: kill -9 a worker (restarted), cut the broker for everyone for 2 s, kill -9 the
    coordinator (restarted). ``extra["repeat_bound"]``: the repeats (``replays``) allowed: what the
    killed worker had running (``threads``), plus the handlers running during the cut that the
    other worker runs again (their results are recorded from the first run, but the broker may give
    a redelivered copy to the other worker: about half of the ``2 x threads`` running)."""
    from tests.faults.harness import create_vhost
    from tests.faults.proxy import Proxy

    vhost = create_vhost()
    proxy = Proxy("127.0.0.1", 5672)
    try:
        with cluster(coordinators=1, workers=2, concurrency=threads,
                     broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}",
                     env={"FLOW_PREFETCH": "32"}) as (c, sink):
            ids = c.start_runs("fault_slow", [{"base": sink.url, "delay": delay} for _ in range(runs)])
            c.wait_effects(sink, "/slow", threads)
            c.restart("worker-0")  # kill -9, then started again
            c.wait_effects(sink, "/slow", runs // 2)
            proxy.cut()
            time.sleep(2.0)
            proxy.restore()
            c.wait_effects(sink, "/s2", runs // 4)
            c.restart("coordinator-0")
            after = time.monotonic()
            c.wait_terminal(ids, RECOVERY_TIMEOUT)
            report = check(c.store.engine, sink, ids, "worker kill, broker cut, coordinator kill",
                           recovery_s=time.monotonic() - after)
            report.extra.update(repeat_bound=2 * threads, logs_paused=c.log_text("worker").count("was paused"))
            return report
    finally:
        proxy.close()
        rabbitmqctl("delete_vhost", vhost)


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def _all_terminal(c: Cluster, ids: list[str]) -> bool:
    try:
        return set(c.statuses(ids).values()) <= {"completed", "failed", "cancelled", "compensated",
                                                  "compensation_failed"}
    except Exception:  # the proxy is down: not yet
        c.store.engine.dispose()
        return False


def poison(runs: int = 30, max_deliveries: int = 3) -> Report:
    """A step whose target kills the worker that calls it, every time; other runs keep flowing."""
    killed: list[str] = []
    holder: dict[str, Cluster] = {}

    def on_poison(port: int) -> None:
        c = holder["c"]
        name = c.pid_of_client_port(port)
        if name is not None:
            killed.append(name)
            c.kill(name)

    sink = Sink(on_poison=on_poison)
    with cluster(sink, env={"FLOW_MAX_DELIVERIES": str(max_deliveries)}) as (c, sink):
        holder["c"] = c
        c.supervise()
        bad = c.start_runs("fault_poison", [{"base": sink.url}])
        ids = _chain(c, sink, runs)
        recovery = c.wait_terminal(ids + bad, RECOVERY_TIMEOUT)
        report = _check_chain(c, sink, ids, "poison task + other runs", recovery)
        import sqlalchemy as sa

        with c.store.engine.connect() as conn:
            status = conn.execute(sa.text("SELECT status FROM runs WHERE id = :id"), {"id": bad[0]}).scalar_one()
            letters = conn.execute(sa.text("SELECT count(*) FROM dead_letters WHERE run_id = :id"),
                                   {"id": bad[0]}).scalar_one()
            error = conn.execute(sa.text("SELECT error->>'type' FROM tasks WHERE run_id = :id"),
                                 {"id": bad[0]}).scalar_one()
        report.extra.update(poison_run=status, poison_deliveries=len([r for r in sink.snapshot()
                                                                        if r.path == "/poison"]),
                            workers_killed=len(killed), dead_letters=letters, poison_error=error)
        return report


def saga_worker_killed_during_compensation(runs: int = 20) -> Report:
    """Runs fail at s3 and compensate s2 then s1; the workers are killed -9 while undos run."""
    state = {"kills": 0}
    holder: dict[str, Cluster] = {}

    def hook(request: Any) -> None:
        if request.path.startswith("/undo") and state["kills"] < 2:
            state["kills"] += 1
            c = holder["c"]
            threading.Thread(target=lambda: [c.kill(n) for n in c.names("worker")], daemon=True).start()
            time.sleep(0.5)

    sink = Sink(hook=hook)
    with cluster(sink) as (c, sink):
        holder["c"] = c
        c.supervise()
        ids = c.start_runs("fault_saga", [{"base": sink.url, "i": i} for i in range(runs)])
        recovery = c.wait_terminal(ids, RECOVERY_TIMEOUT)
        report = check(c.store.engine, sink, ids, "saga: workers killed during compensation",
                       expected={"compensated"}, recovery_s=recovery)
        order = _undo_order(sink, ids)
        report.extra.update(kills=state["kills"], undo_order_ok=order)
        if not order:
            report.illegal.append("compensations not in reverse completion order")
        return report


def _undo_order(sink: Sink, ids: list[str]) -> bool:
    for run_id in ids:
        paths = [r.path for r in sink.effects("/undo") if r.body.get("run") == run_id]
        if paths != ["/undo/s2", "/undo/s1"]:
            return False
    return True


def compensation_always_fails(runs: int = 10) -> Report:
    with cluster(workers=2) as (c, sink):
        ids = c.start_runs("fault_saga", [{"base": sink.url, "i": i, "undo": "undo_fail"} for i in range(runs)])
        recovery = c.wait_terminal(ids, RECOVERY_TIMEOUT)
        report = check(c.store.engine, sink, ids, "compensation always fails",
                       expected={"compensation_failed"}, recovery_s=recovery)
        # Both undos still ran (one failing does not stop the others)
        attempted = {(r.path, r.body["run"]) for r in sink.effects("/undo_fail")}
        report.extra["undos_attempted"] = len(attempted)
        if len(attempted) != 2 * runs:
            report.illegal.append(f"{len(attempted)} undos attempted, wanted {2 * runs}")
        return report


def rabbitmq_stop_start(runs: int = 60, outage: float = 3.0) -> Report:
    """DISRUPTIVE (every vhost): ``rabbitmqctl stop_app``, ``outage`` seconds, ``start_app``."""
    with cluster() as (c, sink):
        ids = _chain(c, sink, runs)
        c.wait_effects(sink, "/s", runs)
        rabbitmqctl("stop_app").check_returncode()
        time.sleep(outage)
        rabbitmqctl("start_app").check_returncode()
        after = time.monotonic()
        c.wait_terminal(ids, RECOVERY_TIMEOUT)
        return _check_chain(c, sink, ids, "rabbitmqctl stop_app/start_app", time.monotonic() - after)


def pg_restart(runs: int = 60) -> Report:
    """DISRUPTIVE (every database): restart the PostgreSQL server mid-load; the API answers 503
    (never 500) meanwhile and 200 after."""
    import os

    from engine.settings import Settings
    from web import create_app

    with cluster() as (c, sink):
        app = create_app({"TESTING": True}, settings=Settings(
            database_url=c.database_url, broker_url="memory://", api_token="fault-token"))
        client = app.test_client()
        auth = {"Authorization": "Bearer fault-token"}
        ids = _chain(c, sink, runs)
        c.wait_effects(sink, "/s", runs)
        codes: list[int] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                codes.append(client.get("/api/runs?limit=1", headers=auth).status_code)
                time.sleep(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        version = os.listdir("/etc/postgresql")[0]
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
                       check=True, capture_output=True, timeout=120)
        after = time.monotonic()
        c.store.engine.dispose()
        c.wait_terminal(ids, RECOVERY_TIMEOUT)
        time.sleep(1.0)
        stop.set()
        poller.join(5)
        report = _check_chain(c, sink, ids, "PostgreSQL restart", time.monotonic() - after)
        counts = {code: codes.count(code) for code in sorted(set(codes))}
        report.extra["api_codes"] = counts
        if any(code >= 500 and code != 503 for code in codes):
            report.illegal.append(f"the API answered {counts} during the restart")
        if not codes or codes[-1] != 200:
            report.illegal.append(f"the API did not come back: {codes[-5:]}")
        return report


def schedulers_killed(seconds: float = 8.0, every_ms: int = 200, rng: random.Random | None = None) -> Report:
    """Two ``flow scheduler`` processes on a fast ``every`` schedule, both SIGKILLed at random
    moments and restarted (sometimes both at once, so that for a while nobody fires) for
    ``seconds``: every fire time up to the end of the kills fires exactly once (one
    ``schedule_fires`` row, one run, one effect at the sink), none is missed, and the runs complete."""
    from datetime import datetime, timezone

    import sqlalchemy as sa

    from engine.core.timing import Timing, fires
    from engine.store.schedule_deploys import deploy_with_schedules

    rng = rng or random.Random(7)
    every = every_ms / 1000.0
    with cluster(workers=1) as (c, sink):
        deploy_with_schedules(c.store, workflows.TICK % {"every": f"{every_ms}ms", "base": sink.url}, "tick.flow")
        for i in range(2):
            c.spawn(f"scheduler-{i}")
        kills = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            time.sleep(rng.uniform(0.2, 0.9))
            victims = c.names("scheduler") if kills % 4 == 3 else [rng.choice(c.names("scheduler"))]
            for name in victims:
                c.kill(name)
                kills += 1
            for name in victims:
                c.restart(name)
        stop_at = datetime.now(timezone.utc)

        def caught_up() -> bool:
            with c.store.engine.connect() as conn:
                return conn.execute(sa.text(
                    "SELECT count(*) FROM schedules WHERE last_fire_at IS NULL OR last_fire_at < :t"),
                    {"t": stop_at}).scalar_one() == 0

        started = time.monotonic()
        while not caught_up() and time.monotonic() - started < RECOVERY_TIMEOUT:
            time.sleep(0.2)
        for name in c.names("scheduler"):  # no more fires: the runs to check are a closed set
            c.kill(name, signal.SIGTERM)
        for name in c.names("scheduler"):
            c.procs[name].wait(30)
        with c.store.engine.connect() as conn:
            schedule = conn.execute(sa.text("SELECT id, created_at FROM schedules")).one()
            fired = conn.execute(sa.text("SELECT fire_time, status, run_id FROM schedule_fires "
                                     "WHERE fire_time <= :t"), {"t": stop_at}).all()
            run_rows = conn.execute(sa.text(
                "SELECT id, scheduled_at FROM runs WHERE workflow_name = 'fault_tick' AND scheduled_at <= :t"),
                {"t": stop_at}).all()
        ids = [r.id for r in run_rows]
        recovery = c.wait_terminal(ids, RECOVERY_TIMEOUT) + (time.monotonic() - started)
        timing = Timing("every", schedule.created_at.astimezone(timezone.utc), every=every)
        expected = set()
        for fire in fires(timing, timing.anchor):
            if fire > stop_at:
                break
            expected.add(fire)
        report = check(c.store.engine, sink, ids, "2 schedulers killed -9 and restarted", recovery_s=recovery)
        fire_times = [r.fire_time.astimezone(timezone.utc) for r in fired if r.status == "fired"]
        run_times = Counter(r.scheduled_at.astimezone(timezone.utc) for r in run_rows)
        missed = expected - set(fire_times)
        doubles = sum(n - 1 for n in run_times.values() if n > 1)
        report.extra.update(kills=kills, fires_expected=len(expected), fired=len(fire_times),
                            missed=len(missed), double_fires=doubles)
        if doubles:
            report.illegal.append(f"{doubles} fire times started two runs")
        if missed:
            report.illegal.append(f"{len(missed)} fire times never fired (e.g. {min(missed).isoformat()})")
        if set(run_times) != expected or set(fire_times) != expected:
            report.illegal.append(f"fires and runs differ from the schedule: {len(expected)} expected, "
                                  f"{len(fire_times)} fires, {len(run_times)} run times")
        if any(r.status != "fired" or r.run_id is None for r in fired):
            report.illegal.append("a schedule_fires row that is not fired with a run")
        return report


SCENARIOS: dict[str, Callable[..., Report]] = {
    "kill_workers": kill_workers,
    "sigstop_past_lease": sigstop_past_lease,
    "coordinator_exit_before_publish": coordinator_exit_before_publish,
    "coordinators_racing": coordinators_racing,
    "broker_close_all_connections": broker_close_all_connections,
    "pg_terminate_backends": pg_terminate_backends,
    "proxy_cuts": proxy_cuts,
    "poison": poison,
    "saga_worker_killed_during_compensation": saga_worker_killed_during_compensation,
    "compensation_always_fails": compensation_always_fails,
    "schedulers_killed": schedulers_killed,
    "recovery_at_full_speed": recovery_at_full_speed,
}


DISRUPTIVE_SCENARIOS: dict[str, Callable[..., Report]] = {
    "rabbitmq_stop_start": rabbitmq_stop_start,
    "pg_restart": pg_restart,
}
