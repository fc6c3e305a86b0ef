"""`flow test` speed: 100 workflow tests of a 10-step saga (target: under 2 s).

Run: ``python -m bench.flowtest_bench [--tests N] [--steps S] [--repeat R] [--keep DIR]``.

Generates a saga of S sequential HTTP steps, each with a compensation, and N tests of it: 40 % go
through, 30 % retry one step after a 503, 30 % fail for good at one step and roll back every step
before it. Times what `flow test FILE` does after Python's imports: read and parse the test file,
compile the workflow, migrate the in-memory database, run every test and check its expectations.
Each repetition starts a new session (a new database, migrated again); the figure is the median
wall time, with the process's CPU time beside it (on a loaded machine the wall time also counts
other processes' turns).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dsl.flowtest.parser import forget_parsed_expressions
from flow.testing.runner import Session, load


def saga(steps: int) -> str:
    lines = ["flow 1", "", "workflow saga(order_id: string, amount: int) {", "  timeout 1h",
             '  defaults { timeout 15s  retry { attempts: 3, delay: 1s, backoff: 2.0, errors: ["http.5xx", "timeout"] } }']
    for i in range(1, steps + 1):
        reads = "params.amount" if i == 1 else f"steps.s{i - 1}.output.body.id"
        lines += [
            f"  step s{i}: http {{",
            f'    method: "POST"  url: "https://svc{i}.example/v1/do"',
            f'    headers: {{ "Idempotency-Key": "s{i}-${{params.order_id}}" }}',
            f"    body: {{ order: params.order_id, prev: {reads} }}",
            f'    compensate http {{ method: "POST", url: "https://svc{i}.example/v1/undo", body: {{ id: self.output.body.id }} }}',
            "  }",
        ]
    lines += [f"  output {{ last: steps.s{steps}.output.body.id }}", "}"]
    return "\n".join(lines) + "\n"


def tests(count: int, steps: int) -> str:
    out = ['use "saga.flow"', ""]
    for n in range(count):
        kind = n % 10
        mocks = [f'  mock s{i}: output {{ status: 201, body: {{ id: "id-{i}" }} }}' for i in range(1, steps + 1)]
        expects: list[str] = []
        if kind < 4:
            expects = ["  expect status completed", f'  expect output.last == "id-{steps}"', "  expect compensated []"]
        elif kind < 7:
            k = 1 + n % steps
            mocks[k - 1] = f'  mock s{k}: fail "http.503", then {{ status: 201, body: {{ id: "id-{k}" }} }}'
            expects = ["  expect status completed", f"  expect steps.s{k}.attempts == 2", "  expect elapsed == 1s"]
        else:
            k = 2 + n % (steps - 1)
            mocks[k - 1] = f'  mock s{k}: fail "http.400" "refused"'
            done = ", ".join(f"s{i}" for i in range(1, k))
            expects = ["  expect status compensated", f"  expect compensated [{done}]",
                       f'  expect error.step == "s{k}"']
        out += [f'test "case {n}" {{', f'  params {{ order_id: "o{n}", amount: {n} }}', *mocks, *expects, "}", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tests", type=int, default=100)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", metavar="DIR", help="write saga.flow and saga.flowtest there (to run `flow test` on them)")
    args = parser.parse_args(argv)
    directory = Path(args.keep or tempfile.mkdtemp(prefix="flowtest-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "saga.flow").write_text(saga(args.steps))
    (directory / "saga.flowtest").write_text(tests(args.tests, args.steps))
    times: list[float] = []
    cpu: list[float] = []
    for _ in range(args.repeat):
        forget_parsed_expressions()  # each round parses from cold, as one `flow test` process does
        began, began_cpu = time.perf_counter(), time.process_time()
        session = Session()
        loaded = load(str(directory / "saga.flowtest"))
        outcomes = session.run(loaded)
        session.close()
        times.append(time.perf_counter() - began)
        cpu.append(time.process_time() - began_cpu)
        failed = [o for o in outcomes if not o.passed]
        if failed or not loaded.ok:
            print(loaded.render(), *[f"{o.name}: {o.problems}" for o in failed], sep="\n", file=sys.stderr)
            return 1
    median = statistics.median(times)
    print(f"flow test: {args.tests} tests of a {args.steps}-step saga in {median:.2f} s "
          f"(median of {args.repeat}; min {min(times):.2f} s, max {max(times):.2f} s; "
          f"{median / args.tests * 1000:.1f} ms a test; CPU {statistics.median(cpu):.2f} s; target under 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
