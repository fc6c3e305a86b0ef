"""Render time of the dashboard's pages with a million tasks stored (target: under 100 ms each).

    python -m bench.dashboard_bench                 # 1,000,000 tasks (about a minute to fill)
    python -m bench.dashboard_bench --tasks 20000   # the short mode

Fills a fresh PostgreSQL database (``FLOW_BENCH_PG_ADMIN``, default the local ``postgres``; dropped
at the end unless ``--keep``) with ``INSERT ... SELECT generate_series``: 10 tasks per run over the last
week, 2 % failed, a few in flight, a share finished in the last hour. Then renders each page through
Flask's test client, as a logged-in user, and prints the median and worst of ``--repeat`` renders.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from typing import Any

import sqlalchemy as sa

from bench.scratch_db import drop, fresh_database

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TASKS_PER_RUN = 10
TARGET_MS = 100.0

WORKFLOW = """flow 1
workflow bench_chain(n: int = 1) {
  step s0: transform { input: [params.n], map: item + 1 }
  step s1: transform { input: steps.s0.output, map: item + 1 }
  step s2: transform { input: steps.s1.output, map: item + 1 }
  step s3: transform { input: steps.s2.output, map: item + 1 }
  step s4: transform { input: steps.s3.output, map: item + 1 }
  step s5: transform { input: steps.s4.output, map: item + 1 }
  step s6: transform { input: steps.s5.output, map: item + 1 }
  step s7: transform { input: steps.s6.output, map: item + 1 }
  step s8: transform { input: steps.s7.output, map: item + 1 }
  step s9: transform { input: steps.s8.output, map: item + 1 }
}
"""

FILL_RUNS = """
INSERT INTO runs (id, workflow_version_id, workflow_name, version, status, params, "values",
                  created_at, started_at, finished_at, updated_at, error)
SELECT md5('run' || g)::uuid::text, :version_id, 'bench_chain', 1,
       CASE WHEN g % 50 = 0 THEN 'failed' WHEN g > :runs - 20 THEN 'running' ELSE 'completed' END,
       jsonb_build_object('n', g), '{}'::jsonb,
       now() - (((:runs - g)::float / :runs) * interval '7 days'),
       now() - (((:runs - g)::float / :runs) * interval '7 days'),
       CASE WHEN g > :runs - 20 THEN NULL ELSE now() - (((:runs - g)::float / :runs) * interval '7 days') + interval '2 seconds' END,
       now(),
       CASE WHEN g % 50 = 0 THEN jsonb_build_object('step', 's5', 'message', 'HTTP 503 from upstream') END
FROM generate_series(1, :runs) AS g
"""

FILL_TASKS = """
INSERT INTO tasks (id, run_id, kind, step, item, task_type, payload, status, attempt, max_attempts,
                   fencing_token, output, error, created_at, started_at, finished_at, updated_at)
SELECT md5('task' || r || '-' || s)::uuid::text, md5('run' || r)::uuid::text, 'step', 's' || s, NULL,
       CASE WHEN s % 3 = 0 THEN 'http_request' ELSE 'data_processing' END,
       jsonb_build_object('operation', 'transform', 'input', jsonb_build_array(r, s)),
       CASE WHEN r % 50 = 0 AND s = 5 THEN 'failed'
            WHEN r % 50 = 0 AND s > 5 THEN 'pending'
            WHEN r > :runs - 20 AND s >= 5 THEN CASE WHEN s = 5 THEN 'processing' ELSE 'pending' END
            ELSE 'completed' END,
       1, 3, 1,
       jsonb_build_object('value', r + s),
       CASE WHEN r % 50 = 0 AND s = 5 THEN jsonb_build_object('type', 'http.5xx', 'message', 'HTTP 503 from upstream') END,
       now() - (((:runs - r)::float / :runs) * interval '7 days'),
       now() - (((:runs - r)::float / :runs) * interval '7 days') + s * interval '100 milliseconds',
       CASE WHEN (r % 50 = 0 AND s > 5) OR (r > :runs - 20 AND s >= 5) THEN NULL
            ELSE now() - (((:runs - r)::float / :runs) * interval '7 days') + (s + 1) * interval '100 milliseconds' END,
       now()
FROM generate_series(1, :runs) AS r, generate_series(0, 9) AS s
"""


def fill(database_url: str, tasks: int) -> str:
    """Store ``tasks`` tasks (10 per run); the id of a failed run to render."""
    from engine.store import Store, db

    engine = db.make_engine(database_url)
    db.upgrade(engine)
    store = Store(engine)
    deployed = store.deploy(WORKFLOW, "bench.flow")[0]
    runs = max(1, tasks // TASKS_PER_RUN)
    started = time.perf_counter()
    with engine.begin() as conn:
        version_id = conn.execute(sa.text("SELECT id FROM workflow_versions WHERE name = :name AND version = :version"),
                                  {"name": deployed.name, "version": deployed.version}).scalar_one()
        conn.execute(sa.text(FILL_RUNS), {"runs": runs, "version_id": version_id})
        conn.execute(sa.text(FILL_TASKS), {"runs": runs})
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE runs"))
        conn.execute(sa.text("VACUUM ANALYZE tasks"))
    print(f"filled {runs:,} runs and {runs * TASKS_PER_RUN:,} tasks in {time.perf_counter() - started:.1f} s")
    engine.dispose()
    with db.make_engine(database_url).connect() as conn:
        return str(conn.execute(sa.text("SELECT md5('run' || :r)::uuid::text"), {"r": (runs // 50) * 50 or 1}).scalar_one())


BENCH_PASSWORD = "bench-password"


def logged_in_client(app: Any) -> Any:
    """A test client logged in through the form as a new admin (a server-side session)."""
    import re

    username = f"bench_{uuid.uuid4().hex[:8]}"
    app.extensions["flow"].store.create_user(username, BENCH_PASSWORD, "admin")
    client = app.test_client()
    form = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token, "no CSRF token on the login form"
    answer = client.post("/login", data={"username": username, "password": BENCH_PASSWORD,
                                         "csrf_token": token.group(1)})
    assert answer.status_code == 303, answer.get_data(as_text=True)
    return client


def measure(database_url: str, run_id: str, repeat: int) -> list[tuple[str, float, float]]:
    from engine.settings import Settings
    from web import create_app

    app = create_app({"TESTING": True}, settings=Settings(database_url=database_url, broker_url="memory://",
                                                          secret_key="bench"))
    client = logged_in_client(app)
    pages = [
        ("overview", "/"),
        ("overview fragment (poll)", "/"),
        ("runs list", "/runs"),
        ("runs list, status=failed", "/runs?status=failed"),
        ("runs list, workflow + page 2", None),
        ("run page", f"/runs/{run_id}"),
        ("workflow page", "/workflows/bench_chain"),
    ]
    first = client.get("/runs?workflow=bench_chain").get_data(as_text=True)
    marker = first.find("cursor=")
    page_two = "/runs?" + first[marker:first.find('"', marker)].replace("&amp;", "&") if marker > 0 else "/runs"
    results = []
    for label, path in pages:
        path = path or page_two
        headers = {"HX-Request": "true"} if "fragment" in label else {}
        for _ in range(2):  # warm the caches and the connection pool
            assert client.get(path, headers=headers).status_code == 200, path
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            response = client.get(path, headers=headers)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (path, response.status_code)
        results.append((label, statistics.median(times), max(times)))
    app.extensions["flow"].db.dispose()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000, help="tasks to store (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=15, help="renders per page (default 15)")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="a PostgreSQL URL that may CREATE DATABASE")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args(argv)

    database_url, handle = fresh_database(args.admin_url)
    try:
        run_id = fill(database_url, args.tasks)
        results = measure(database_url, run_id, args.repeat)
    finally:
        if args.keep:
            print(f"kept {database_url}")
        else:
            drop(handle)
    print(f"\n{'page':32} {'median ms':>10} {'worst ms':>10}")
    slow = []
    for label, median, worst in results:
        flag = "" if median < TARGET_MS else "  over target"
        print(f"{label:32} {median:10.1f} {worst:10.1f}{flag}")
        if median >= TARGET_MS:
            slow.append(label)
    print(f"\ntarget: under {TARGET_MS:.0f} ms each with {args.tasks:,} tasks: {'MET' if not slow else 'MISSED'}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
