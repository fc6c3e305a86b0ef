"""What the server-side session check costs a dashboard page, before and after, in the same run.

    python -m bench.session_bench                  # 20,000 tasks, 300 renders per page and mode
    python -m bench.session_bench --tasks 200000 --repeat 500

Fills a fresh PostgreSQL database as ``bench.dashboard_bench`` does, logs in through the form, then
renders each page alternately in two modes, on the same app, connection pool and data:

- **after**: as shipped: every request reads the session and its user (one indexed query) and
  writes ``last_seen_at`` at most once a minute;
- **before**: the same requests with ``check_session`` answered from memory, which is what the
  signed-cookie session (user and role in the cookie, nothing on the server) cost.

The pages alternate request by request, so that load from elsewhere on the machine hits both modes
alike. It prints the median of each and the median of the paired differences (each render "after" minus
the render "before" next to it; target: at most 1 ms), then the check alone and the once-a-minute
write of ``last_seen_at``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta

from bench.dashboard_bench import ADMIN_URL, fill, logged_in_client
from bench.scratch_db import drop, fresh_database

BUDGET_MS = 1.0
PAGES = (("overview", "/", False), ("overview fragment (poll)", "/", True), ("runs list", "/runs", False),
         ("run page", None, False), ("workflow page", "/workflows/bench_chain", False))


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


class ShiftedClock:
    """The wall clock plus an offset that the bench moves (to make ``last_seen_at`` due)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def measure(database_url: str, run_id: str,
            repeat: int) -> tuple[list[tuple[str, float, float, float]], float, float]:
    """``(pages, check_ms, touch_ms)``: per page the medians before and after and the median of the
    paired differences; the check alone; the check when it also writes ``last_seen_at``."""
    from engine.settings import Settings
    from engine.store import Store, db
    from engine.store.sessions import ActiveSession, SessionPolicy
    from web import create_app

    clock = ShiftedClock()
    store = Store(db.make_engine(database_url), clock=clock)
    app = create_app({"TESTING": True}, store=store,
                     settings=Settings(database_url=database_url, broker_url="memory://", secret_key="bench"))
    client = logged_in_client(app)
    with client.session_transaction() as session:
        key = str(session["sid"])
    access = store.access
    real_check = access.check_session
    policy = SessionPolicy()
    active = real_check(key, policy)
    assert isinstance(active, ActiveSession), active

    def from_memory(_key: str, _policy: SessionPolicy) -> ActiveSession:
        return active

    results = []
    for label, path, htmx in PAGES:
        path = path or f"/runs/{run_id}"
        headers = {"HX-Request": "true"} if htmx else {}
        for _ in range(3):  # warm the caches and the pool
            assert client.get(path, headers=headers).status_code == 200, path
        samples: dict[bool, list[float]] = {True: [], False: []}
        for i in range(2 * repeat):
            stubbed = i % 2 == 0
            access.check_session = from_memory if stubbed else real_check  # type: ignore[method-assign]
            started = time.perf_counter()
            response = client.get(path, headers=headers)
            samples[stubbed].append(time.perf_counter() - started)
            assert response.status_code == 200, (path, response.status_code)
        # Adjacent renders form pairs; the median of their differences shrugs off load that comes
        # and goes over the run better than the difference of the two medians does.
        paired = [real - stubbed for stubbed, real in zip(samples[True], samples[False])]
        results.append((label, _median_ms(samples[True]), _median_ms(samples[False]), _median_ms(paired)))
    access.check_session = real_check  # type: ignore[method-assign]

    checks = []
    for _ in range(repeat):
        started = time.perf_counter()
        real_check(key, policy)
        checks.append(time.perf_counter() - started)
    long_lived = SessionPolicy(idle=timedelta(days=365), lifetime=timedelta(days=3650))
    touches = []
    for _ in range(max(10, repeat // 10)):
        clock.offset += 61.0  # a minute on: this check writes last_seen_at
        started = time.perf_counter()
        real_check(key, long_lived)
        touches.append(time.perf_counter() - started)
    store.engine.dispose()
    return results, _median_ms(checks), _median_ms(touches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000, help="tasks to store (default 20,000)")
    parser.add_argument("--repeat", type=int, default=300, help="renders per page and mode (default 300)")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="a PostgreSQL URL that may CREATE DATABASE")
    args = parser.parse_args(argv)

    database_url, handle = fresh_database(args.admin_url)
    try:
        run_id = fill(database_url, args.tasks)
        pages, check_ms, touch_ms = measure(database_url, run_id, args.repeat)
    finally:
        drop(handle)
    print(f"\n{'page':28} {'before ms':>10} {'after ms':>10} {'cost ms (paired median)':>24}")
    over = []
    for label, before, after, cost in pages:
        print(f"{label:28} {before:10.2f} {after:10.2f} {cost:24.2f}")
        if cost > BUDGET_MS:
            over.append(label)
    print(f"\nthe check alone: {check_ms:.2f} ms (median); with its once-a-minute write of last_seen_at: "
          f"{touch_ms:.2f} ms")
    print(f"budget: at most {BUDGET_MS:.0f} ms a page: {'MET' if not over else 'MISSED on ' + ', '.join(over)}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
