"""Starts per second through the API: ``python -m bench.starts [--clients 1,16] [--runs N] [--batch N]
[--profile DIR]``.

Brings up the bench's Flow (``flow serve`` + coordinator + 2 workers on a fresh database and vhost),
then for each client count has that many client processes start ``--runs`` runs of ``bench_one``
between them, one ``POST /api/workflows/bench_one/runs`` each (or ``--batch`` runs per call to the
batch endpoint), and prints runs per second (first call to the last answer). With ``--profile DIR``
it records the server with ``py-spy record`` during each measurement (needs py-spy and ptrace).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.api_clients import run_clients, split
from bench.run import Environment, FlowSystem, Processes, commits


def measure(flow: FlowSystem, clients: int, runs: int, batch: int) -> tuple[float, float]:
    """(starts per second, commits per start) with ``clients`` client processes."""
    tag = uuid.uuid4().hex[:8]
    jobs = [{"base": flow.base, "token": flow.token, "workflow": "bench_one", "mode": "starts",
             "params": [{"i": i} for i in share], "tag": f"{tag}-{c}", "batch": batch}
            for c, share in enumerate(split(list(range(runs)), clients))]
    before = commits(flow.env.db)
    reports = run_clients("flow", jobs)
    seconds = max(r["submitted"] for r in reports) - min(r["t0"] for r in reports)
    time.sleep(1.5)
    return runs / seconds, (commits(flow.env.db) - before) / runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=0, help="runs per batch call (0: one call per run)")
    parser.add_argument("--profile", metavar="DIR", help="py-spy record the server into DIR")
    args = parser.parse_args(argv)
    env = Environment()
    env.create()
    procs = Processes()
    try:
        flow = FlowSystem(env, procs, 4)
        flow.ready()
        time.sleep(1.0)
        for clients in [int(c) for c in args.clients.split(",")]:
            spy = None
            if args.profile:
                out = Path(args.profile) / f"serve-x{clients}{'-batch' if args.batch else ''}.txt"
                out.parent.mkdir(parents=True, exist_ok=True)
                spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-r", "250", "-f", "raw", "-o", str(out),
                                        "--pid", str(flow.server.pid), "--subprocesses"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1.0)
            rate, per_start = measure(flow, clients, args.runs, args.batch)
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            print(f"{clients:>3} clients{f', batches of {args.batch}' if args.batch else ''}: "
                  f"{rate:,.0f} starts/s, {per_start:.2f} commits per start", flush=True)
        flow.close()
    finally:
        procs.stop()
        env.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
