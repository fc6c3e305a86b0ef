"""OpenTelemetry traces of runs: one trace per run, a span per step, a span per attempt.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; then the ``[otel]`` extra must be installed
(``pip install 'flow-engine[otel]'``). When off, nothing of OpenTelemetry is imported and every
function here is a cheap no-op, so the engine calls them unconditionally.

A run's spans are written by different processes at different times, with no trace context
stored in the database. So the ids are *derived*: the trace id from the run id, the run span's id
from the run id, a step span's id from (run id, step, item). Then:

- a worker's **attempt** span is a live span around the handler, whose parent is the step span;
  the parent's ``traceparent`` travels in the AMQP headers of the task message (the outbox row's
  ``headers``; the ``TaskMessage`` body is unchanged);
- the coordinator writes the **step** span when the step's task ends (created → finished), and the
  **run** span when the run ends (created → finished), each with its derived id;
- the API writes a span per request (``init_app``).

A standalone task (no run) is its own trace, keyed by its task id. Standard ``OTEL_*`` variables
(``OTEL_SERVICE_NAME``, ``OTEL_EXPORTER_OTLP_HEADERS`` ...) apply.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

log = logging.getLogger("flow.tracing")

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
HEADER = "traceparent"

_tracer: Any = None
_state = "unset"  # "unset" | "on" | "off"
_forced_span_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("flow_span_id", default=None)
_forced_trace_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("flow_trace_id", default=None)


def enabled() -> bool:
    """True when an OTLP endpoint is configured (and the packages are installed)."""
    if _state == "unset":
        return bool(os.environ.get(ENDPOINT_ENV))
    return _state == "on"


def _hash(*parts: Any, bits: int) -> int:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1  # zero is the invalid id


def trace_id(key: str) -> int:
    return _hash("trace", key, bits=128)


def run_span_id(key: str) -> int:
    return _hash("run", key, bits=64)


def step_span_id(key: str, step: Any, item: Any) -> int:
    return _hash("step", key, step, item, bits=64)


def task_headers(row: Mapping[str, Any]) -> dict[str, str]:
    """AMQP headers for a task message of ``row``: the ``traceparent`` of its step span (or {})."""
    if not enabled():
        return {}
    key = row.get("run_id") or row["id"]
    parent = step_span_id(key, row.get("step"), row.get("item")) if row.get("run_id") else run_span_id(key)
    return {HEADER: f"00-{trace_id(key):032x}-{parent:016x}-01"}


def _get_tracer() -> Any:
    """The tracer, set up on first use; None when tracing is off or cannot start."""
    global _tracer, _state
    if _state == "off" or not os.environ.get(ENDPOINT_ENV):
        return None
    if _tracer is not None:
        return _tracer
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    except ImportError:
        log.warning("%s is set but OpenTelemetry is not installed: pip install 'flow-engine[otel]'; "
                    "tracing is off", ENDPOINT_ENV)
        _state = "off"
        return None

    class _DerivedIds(RandomIdGenerator):
        """Random ids, except where ``_emit`` forces the derived id of a run or step span."""

        def generate_span_id(self) -> int:
            return _forced_span_id.get() or super().generate_span_id()

        def generate_trace_id(self) -> int:
            return _forced_trace_id.get() or super().generate_trace_id()

    service = os.environ.get("OTEL_SERVICE_NAME") or "flow"
    provider = TracerProvider(resource=Resource.create({"service.name": service}), id_generator=_DerivedIds())
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("flow")
    _state = "on"
    return _tracer


def _parent(trace: int, span: int) -> Any:
    from opentelemetry import trace as api
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    context = SpanContext(trace_id=trace, span_id=span, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return api.set_span_in_context(NonRecordingSpan(context))


def _ns(value: datetime | float | None) -> int | None:
    if value is None:
        return None
    seconds = value.timestamp() if isinstance(value, datetime) else float(value)
    return int(seconds * 1e9)


def _emit(name: str, trace: int, span: int, parent: int | None, start: Any, end: Any,
          attributes: dict[str, Any]) -> None:
    tracer = _get_tracer()
    if tracer is None:
        return
    context = _parent(trace, parent) if parent else None
    tokens = (_forced_trace_id.set(trace), _forced_span_id.set(span))
    try:
        item = tracer.start_span(name, context=context, start_time=_ns(start),
                                 attributes={k: v for k, v in attributes.items() if v is not None})
    finally:
        _forced_trace_id.reset(tokens[0])
        _forced_span_id.reset(tokens[1])
    if attributes.get("flow.status") in ("failed", "compensation_failed", "cancelled"):
        from opentelemetry.trace import Status, StatusCode

        item.set_status(Status(StatusCode.ERROR, str(attributes.get("flow.status"))))
    item.end(end_time=_ns(end))


def emit_step(row: Mapping[str, Any], end: datetime) -> None:
    """The step span of a task that just ended (the coordinator, in the transaction that ended it)."""
    if not enabled():
        return
    key = row.get("run_id") or row["id"]
    if row.get("run_id"):
        span, parent = step_span_id(key, row.get("step"), row.get("item")), run_span_id(key)
    else:
        span, parent = run_span_id(key), None
    _emit(f"step {row.get('step') or row.get('task_type')}", trace_id(key), span, parent,
          row.get("created_at"), end,
          {"flow.run_id": row.get("run_id"), "flow.task_id": row["id"], "flow.step": row.get("step"),
           "flow.item": row.get("item"), "flow.task_type": row.get("task_type"),
           "flow.status": row.get("status"), "flow.attempts": row.get("attempt")})


def emit_run(run: Mapping[str, Any], end: datetime) -> None:
    """The root span of a run that just reached a terminal status."""
    if not enabled():
        return
    key = run["id"]
    _emit(f"run {run.get('workflow_name')}", trace_id(key), run_span_id(key), None,
          run.get("created_at"), end,
          {"flow.run_id": key, "flow.workflow": run.get("workflow_name"),
           "flow.version": run.get("version"), "flow.status": run.get("status")})


@contextlib.contextmanager
def span(name: str, *, traceparent: str | None = None, attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """A live span (None when tracing is off), child of ``traceparent`` when given."""
    tracer = _get_tracer() if enabled() else None
    if tracer is None:
        yield None
        return
    context = None
    if traceparent:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        context = TraceContextTextMapPropagator().extract({HEADER: traceparent})
    attrs = {k: v for k, v in (attributes or {}).items() if v is not None}
    with tracer.start_as_current_span(name, context=context, attributes=attrs) as current:
        yield current
