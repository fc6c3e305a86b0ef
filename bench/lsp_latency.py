"""Time `flow lsp` from a change to its diagnostics, on a 1,000-step file (target: within 200 ms).

Run: ``python -m bench.lsp_latency [--steps N] [--changes C]``.

The server runs as editors run it, a subprocess spoken to over stdio (bench/lsp_client.py). After
the file is opened, each change is one incremental edit (a step's type ``noop`` -> ``nope`` and back,
so that every other change makes an error and the next one clears it); the time of a change is from
writing its ``didChange`` to reading the ``publishDiagnostics`` of its version. The server's CPU time
per change is printed too: on a machine shared with other work, the wall-clock times include the
waits for a core, the CPU time does not.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from bench.compile_bench import generate
from bench.lsp_client import LspClient

URI = "file:///bench/lsp_latency.flow"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(steps: int, changes: int) -> tuple[list[float], list[float], float]:
    """Seconds from each change to its diagnostics, the server's CPU seconds for each, and the
    seconds of the first diagnostics after opening."""
    text = generate(steps)
    lines = text.splitlines()
    target = next(i for i, line in enumerate(lines) if line.startswith(f"  step s{steps // 2}: noop"))
    character = lines[target].index("noop")
    client = LspClient([sys.executable, "-m", "flow.cli.main", "lsp"])
    try:
        client.initialize()
        start = time.perf_counter()
        client.notify("textDocument/didOpen", {"textDocument": {"uri": URI, "languageId": "flow", "version": 1, "text": text}})
        opened = client.wait_for("textDocument/publishDiagnostics", uri=URI, version=1)
        open_time = time.perf_counter() - start
        assert opened["diagnostics"] == [], opened["diagnostics"][:3]
        times, cpu = [], []
        for version in range(2, changes + 2):
            new_type = "nope" if version % 2 == 0 else "noop"
            change = {"range": {"start": {"line": target, "character": character},
                                "end": {"line": target, "character": character + 4}}, "text": new_type}
            cpu_start = cpu_seconds(client.process.pid)
            start = time.perf_counter()
            client.notify("textDocument/didChange", {"textDocument": {"uri": URI, "version": version}, "contentChanges": [change]})
            published = client.wait_for("textDocument/publishDiagnostics", uri=URI, version=version)
            times.append(time.perf_counter() - start)
            cpu.append(cpu_seconds(client.process.pid) - cpu_start)
            codes = [d["code"] for d in published["diagnostics"]]
            assert codes == (["E301"] if new_type == "nope" else []), codes
        client.shutdown()
        return times, cpu, open_time
    finally:
        client.kill()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=30)
    args = parser.parse_args()
    times, cpu, open_time = measure(args.steps, args.changes)
    ms = [t * 1000 for t in times]
    print(f"flow lsp, {args.steps} steps ({len(generate(args.steps)) // 1024} KiB): didOpen -> diagnostics "
          f"{open_time * 1000:.0f} ms; didChange -> publishDiagnostics over {len(ms)} changes: "
          f"min {min(ms):.0f} ms, p50 {statistics.median(ms):.0f} ms, p95 {percentile(ms, 0.95):.0f} ms, max {max(ms):.0f} ms "
          f"(target < 200 ms); server CPU per change: p50 {statistics.median(cpu) * 1000:.0f} ms; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
