"""The soak: ``python -m tests.faults.soak --minutes 5 --seed 42`` repeats the fault scenarios in
a seeded random order, with larger loads, until the time is up, and prints every figure.
Disruptive scenarios join only with ``FLOW_FAULTS_DISRUPTIVE=1``. Exit status 1 if any was unclean.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from tests.faults import scenarios
from tests.faults.harness import DISRUPTIVE

SIZES = {"kill_workers": {"runs": 200, "kills": 4}, "coordinators_racing": {"runs": 200},
         "broker_close_all_connections": {"runs": 200}, "pg_terminate_backends": {"runs": 200},
         "poison": {"runs": 100}, "proxy_cuts": {"runs": 100, "commit_cuts": 3}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", action="store_true", help="print one JSON object per scenario run")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    table = dict(scenarios.SCENARIOS)
    if DISRUPTIVE:
        table.update(scenarios.DISRUPTIVE_SCENARIOS)
    names = sorted(table)
    end = time.monotonic() + args.minutes * 60
    reports = []
    order = names[:]
    rng.shuffle(order)
    while time.monotonic() < end:
        if not order:
            order = names[:]
            rng.shuffle(order)
        name = order.pop()
        kwargs = dict(SIZES.get(name, {}))
        if name == "kill_workers":
            kwargs["rng"] = random.Random(rng.random())
        try:
            report = table[name](**kwargs)
        except Exception as exc:  # a scenario that could not finish is a finding, not a crash
            report = scenarios.Report(name, illegal=[f"{type(exc).__name__}: {exc}"])
        reports.append(report)
        print(json.dumps(report.as_dict(), default=str) if args.json else report.line(), flush=True)
    bad = [r for r in reports if r.lost or r.unexpected or r.double_completions or r.double_effects or r.illegal]
    total_runs = sum(r.runs for r in reports)
    print(f"\nsoak seed={args.seed} scenarios={len(reports)} runs={total_runs} "
          f"lost={sum(r.lost for r in reports)} double_completions={sum(r.double_completions for r in reports)} "
          f"double_effects={sum(r.double_effects for r in reports)} replays={sum(r.replays for r in reports)} "
          f"illegal={sum(len(r.illegal) for r in reports)} "
          f"max_recovery={max((r.recovery_s for r in reports), default=0):.2f}s unclean={len(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
