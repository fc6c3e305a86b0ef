"""The benchmark's quick variant runs end to end, so that its code cannot rot (no timing asserted:
figures are for ``python -m bench.run``, never for tests).

Celery is in the ``bench`` extra, which ``make test`` installs (it is pure Python and small); where
it is missing, the quick run covers Flow and the raw limits only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_quick_bench_prints_the_table(postgres_url: str, amqp_url: str, tmp_path: Path) -> None:
    # postgres_url/amqp_url only check that the services are there (else skip, or fail in CI);
    # the bench makes its own database and vhost.
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "W1" in done.stdout and "W4" in done.stdout and "raw limits" in done.stdout
    figures = json.loads(out.read_text())["figures"]
    for key in ("W1", "W2", "W3", "W4"):
        flow = figures[key]["Flow"]
        assert flow["value"] > 0
        assert flow.get("failed", 0) == 0
    assert figures["W1"]["Flow"]["commits_per_step"] > 0


def test_search_bench_prints_p50_and_p95_per_query_and_drops_its_database(postgres_url: str) -> None:
    # A small fill: the code path of the million-run benchmark, no timing asserted (exit 1 only
    # says the target was missed on a loaded machine).
    done = subprocess.run([sys.executable, "-m", "bench.search_bench", "--runs", "2000", "--repeat", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert "filled 2,000 runs and 4,000 search keys" in done.stdout
    assert "p50 ms" in done.stdout and "p95 ms" in done.stdout
    for label in ("search.order (1 match)", "search.customer", "order + customer (AND)", "order, no such value"):
        assert label in done.stdout
    assert "target: p95 under 50 ms with 2,000 runs:" in done.stdout
    import psycopg2

    from bench.search_bench import ADMIN_URL

    with psycopg2.connect(ADMIN_URL) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'flow_search_bench_%'")
        assert cur.fetchone() == (0,)
