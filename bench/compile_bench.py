"""Compile a generated 1,000-step workflow and print the time (target: under 200 ms).

Run: ``python -m bench.compile_bench [--steps N] [--repeat R] [--against DIR]``.

``--against DIR`` also times another copy of the compiler (a directory holding a ``dsl`` package,
e.g. ``git archive OLD dsl | tar -x -C /tmp/old``) in a subprocess, alternating with this one, so
that both figures come from the same machine at the same load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
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


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(steps: int, repeat: int) -> list[float]:
    """Seconds of each of ``repeat`` compilations of the generated workflow."""
    source = generate(steps)
    dsl.compile_source("workflow warmup() { step a: noop {} }")  # grammar load and imports are not compile time
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = dsl.compile_source(source, "bench.flow")
        times.append(time.perf_counter() - start)
        if not result.ok:
            raise SystemExit(result.render())
    return times


def _elsewhere(directory: str, steps: int, repeat: int) -> list[float]:
    """``measure`` (of this file) run in a subprocess whose ``dsl`` is the one in ``directory``."""
    code = ("import sys, importlib.util as u; sys.path.insert(0, sys.argv[1]); "
            "spec = u.spec_from_file_location('compile_bench', sys.argv[2]); m = u.module_from_spec(spec); "
            "spec.loader.exec_module(m); print(*m.measure(int(sys.argv[3]), int(sys.argv[4])))")
    out = subprocess.run([sys.executable, "-c", code, directory, os.path.abspath(__file__), str(steps), str(repeat)],
                         check=True, capture_output=True, text=True, cwd=directory).stdout
    return [float(x) for x in out.split()]


def _line(label: str, times: list[float], steps: int) -> str:
    return (f"{label}compiled {steps} steps in {min(times) * 1000:.0f} ms best, "
            f"{statistics.median(times) * 1000:.0f} ms median of {len(times)} (target < 200 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--against", metavar="DIR", help="also time the `dsl` package found in DIR")
    args = parser.parse_args()
    if not args.against:
        size = len(generate(args.steps)) / 1024
        times = measure(args.steps, args.repeat)
        print(_line(f"({size:.0f} KiB) ", times, args.steps))
        return
    mine: list[float] = []
    theirs: list[float] = []
    for _ in range(3):  # alternate, so that a burst of load on the machine hits both
        theirs += _elsewhere(args.against, args.steps, args.repeat)
        mine += _elsewhere(_ROOT, args.steps, args.repeat)
    print(_line(f"{args.against}: ", theirs, args.steps))
    print(_line("this tree: ", mine, args.steps))


if __name__ == "__main__":
    main()
