"""Search by business keys with a million runs stored (target: under 50 ms per request).

    python -m bench.search_bench                  # 1,000,000 runs (about a minute to fill)
    python -m bench.search_bench --runs 50000     # the short mode

Fills a fresh PostgreSQL database (``--admin-url``, default the local ``postgres``; dropped at the
end unless ``--keep``) with ``INSERT ... SELECT generate_series``: runs of a workflow whose clause is
``search { order: params.order_id, customer: params.customer }``, each with a unique order number
and one of 20,000 customers (so a customer has ``runs / 20,000`` runs), spread over the last week,
and their ``run_search_keys`` rows. Then times ``GET /api/runs?search.…`` through the API (Flask's
test client: routing, token check, validation, the query, JSON), a different value each request,
and prints p50 and p95 per query.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

import sqlalchemy as sa

from bench.scratch_db import drop, fresh_database

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
TARGET_MS = 50.0
CUSTOMERS = 20_000
TOKEN = "search-bench-token"

WORKFLOW = """flow 1
workflow bench_orders(order_id: int, customer: string) {
  search { order: params.order_id, customer: params.customer }
  step pack: noop { output: params.order_id }
}
"""

FILL_RUNS = """
INSERT INTO runs (id, workflow_version_id, workflow_name, version, status, params, "values", search,
                  created_at, started_at, finished_at, updated_at)
SELECT md5('run' || g)::uuid::text, :version_id, 'bench_orders', 1,
       CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'completed' END,
       jsonb_build_object('order_id', g, 'customer', 'c' || (g % :customers)), '{}'::jsonb,
       jsonb_build_object('order', g::text, 'customer', 'c' || (g % :customers)),
       now() - (((:runs - g)::float / :runs) * interval '7 days'),
       now() - (((:runs - g)::float / :runs) * interval '7 days'),
       now() - (((:runs - g)::float / :runs) * interval '7 days') + interval '2 seconds',
       now()
FROM generate_series(1, :runs) AS g
"""

FILL_KEYS = """
INSERT INTO run_search_keys (run_id, key, value, created_at)
SELECT id, k.key, search ->> k.key, created_at
FROM runs, (VALUES ('order'), ('customer')) AS k(key)
"""


def fill(database_url: str, runs: int) -> None:
    """Store ``runs`` runs and their business keys."""
    from engine.store import Store, db

    engine = db.make_engine(database_url)
    db.upgrade(engine)
    Store(engine).deploy(WORKFLOW, "bench.flow")
    started = time.perf_counter()
    with engine.begin() as conn:
        version_id = conn.execute(sa.text("SELECT id FROM workflow_versions WHERE name = 'bench_orders'")).scalar_one()
        conn.execute(sa.text(FILL_RUNS), {"runs": runs, "version_id": version_id, "customers": CUSTOMERS})
        conn.execute(sa.text(FILL_KEYS))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE runs"))
        conn.execute(sa.text("VACUUM ANALYZE run_search_keys"))
    print(f"filled {runs:,} runs and {2 * runs:,} search keys in {time.perf_counter() - started:.1f} s")
    engine.dispose()


def measure(database_url: str, runs: int, repeat: int) -> list[tuple[str, float, float, int]]:
    """Per query: (label, p50 ms, p95 ms, runs in its answer) over ``repeat`` requests."""
    from engine.settings import Settings
    from web import create_app

    app = create_app({"TESTING": True}, settings=Settings(database_url=database_url, broker_url="memory://",
                                                          api_token=TOKEN))
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    pick = random.Random(22)
    queries = [
        ("search.order (1 match)", lambda: {"search.order": str(pick.randint(1, runs))}),
        (f"search.customer ({max(1, runs // CUSTOMERS)} matches, page of 50)",
         lambda: {"search.customer": f"c{pick.randrange(CUSTOMERS)}"}),
        ("customer + status=failed", lambda: {"search.customer": f"c{pick.randrange(CUSTOMERS)}", "status": "failed"}),
        ("order + customer (AND)", lambda: _both(pick, runs)),
        ("order, no such value", lambda: {"search.order": str(runs + pick.randint(1, runs))}),
    ]
    results = []
    for label, make in queries:
        for _ in range(3):  # warm the connection pool and the caches
            assert client.get("/api/runs", query_string=make()).status_code == 200
        times, found = [], 0
        for _ in range(repeat):
            args = make()
            started = time.perf_counter()
            response = client.get("/api/runs", query_string=args)
            times.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (args, response.get_json())
            found = max(found, len(response.get_json()["runs"]))
        times.sort()
        results.append((label, statistics.median(times), times[int(0.95 * (len(times) - 1))], found))
    app.extensions["flow"].db.dispose()
    return results


def _both(pick: random.Random, runs: int) -> dict[str, str]:
    order = pick.randint(1, runs)
    return {"search.order": str(order), "search.customer": f"c{order % CUSTOMERS}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs to store (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=200, help="requests per query (default 200)")
    parser.add_argument("--admin-url", default=ADMIN_URL, help="a PostgreSQL URL that may CREATE DATABASE")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args(argv)

    database_url, handle = fresh_database(args.admin_url, "flow_search_bench")
    try:
        fill(database_url, args.runs)
        results = measure(database_url, args.runs, args.repeat)
    finally:
        if args.keep:
            print(f"kept {database_url}")
        else:
            drop(handle)
    print(f"\n{'GET /api/runs?…':46} {'p50 ms':>8} {'p95 ms':>8} {'runs':>5}")
    slow = []
    for label, p50, p95, found in results:
        flag = "" if p95 < TARGET_MS else "  over target"
        print(f"{label:46} {p50:8.1f} {p95:8.1f} {found:5}{flag}")
        if p95 >= TARGET_MS:
            slow.append(label)
    print(f"\ntarget: p95 under {TARGET_MS:.0f} ms with {args.runs:,} runs: {'MET' if not slow else 'MISSED'}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
