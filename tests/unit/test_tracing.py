"""Tracing (``engine.observability.tracing``): off without an endpoint (nothing imported), and run → step → attempt.

Each case runs in a fresh interpreter: OpenTelemetry's tracer provider is process-global.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

OFF = """
import sys
from engine.observability import tracing
row = {"id": "t1", "run_id": "r1", "step": "a", "item": None}
assert tracing.task_headers(row) == {}
with tracing.span("x") as s:
    assert s is None
tracing.emit_step(row, None)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("opentelemetry"))))
"""

ON = """
from datetime import datetime, timezone
from engine.observability import tracing
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
tracing._get_tracer()
memory = InMemorySpanExporter()
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(memory))
start = datetime(2026, 1, 1, tzinfo=timezone.utc)
row = {"id": "t1", "run_id": "run-1", "step": "charge", "item": None, "task_type": "http_request",
       "status": "completed", "attempt": 1, "created_at": start}
headers = tracing.task_headers(row)
with tracing.span("attempt charge", traceparent=headers["traceparent"]):
    pass
tracing.emit_step(row, datetime.now(timezone.utc))
tracing.emit_run({"id": "run-1", "workflow_name": "saga", "status": "failed", "created_at": start},
                 datetime.now(timezone.utc))
print(json.dumps({s.name: [s.context.trace_id, s.context.span_id, s.parent.span_id if s.parent else None]
                  for s in memory.get_finished_spans()}))
"""


def _run(code: str, **env: str) -> object:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run([sys.executable, "-c", "import json\n" + code], cwd=ROOT, env={**environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_off_by_default_imports_nothing() -> None:
    assert _run(OFF) == []


def test_a_run_is_one_trace_run_step_attempt() -> None:
    if not os.environ.get("CI"):  # `make test` installs the otel extra; CI must run this
        pytest.importorskip("opentelemetry.sdk")
    spans = _run(ON, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_BSP_SCHEDULE_DELAY="60000")
    run, step, attempt = spans["run saga"], spans["step charge"], spans["attempt charge"]
    assert run[0] == step[0] == attempt[0]  # one trace
    assert run[2] is None and step[2] == run[1] and attempt[2] == step[1]
