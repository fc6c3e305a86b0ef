"""Compile a generated 1,000-step workflow and print the time (target: under 200 ms).

Run: ``python -m bench.compile_bench [--steps N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import dsl


def generate(steps: int) -> str:
    """A chain of `noop` steps, every tenth fanning in from two earlier ones, with a few expressions."""
    lines = ["flow 1", "", "workflow bench(n: int = 1, tag: string = \"x\") {", "  timeout 1h"]
    for i in range(steps):
        deps = f"after s{i - 1}" if i else ""
        if i >= 10 and i % 10 == 0:
            deps += f", s{i - 10}"
        lines.append(f"  step s{i}: noop {{ {deps} output: {{ i: {i}, tag: \"${{params.tag}}-{i}\" }} }}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    source = generate(args.steps)
    dsl.compile_source("workflow warmup() { step a: noop {} }")  # grammar load and imports are not compile time
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = dsl.compile_source(source, "bench.flow")
        times.append(time.perf_counter() - start)
        if not result.ok:
            raise SystemExit(result.render())
    print(f"compiled {args.steps} steps ({len(source) / 1024:.0f} KiB) in {min(times) * 1000:.0f} ms best, "
          f"{statistics.median(times) * 1000:.0f} ms median of {args.repeat} (target < 200 ms)")


if __name__ == "__main__":
    main()
