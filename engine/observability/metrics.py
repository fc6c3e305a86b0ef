"""Prometheus metrics of every Flow process, in one registry (``REGISTRY``).

Two kinds:

- **Counters and histograms** that a process observes as it works (step durations, retries, dead
  letters, run outcomes, coordinator batches and lag, scheduler fires, pruned rows). Each process
  exposes its own; Prometheus sums them over the coordinators, workers and schedulers.
- **State read at scrape time** (tasks by type and status from the database, queue depths from
  RabbitMQ), by collectors that the web app installs (``install_state_collectors``) so that the
  numbers are read once per scrape of one place, not by every process. Each read is cached for
  ``STATE_TTL`` seconds so that a tight scrape interval cannot hammer PostgreSQL or RabbitMQ.

The web app serves ``/metrics`` (``web/metrics.py``); processes without HTTP start a small server on
``FLOW_METRICS_PORT`` (``start_metrics_server``). No SQL here and no import of the store: the
collectors are handed a ``counts`` callable and a broker URL. Workers may import this module.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.settings import Settings

log = logging.getLogger("flow.metrics")

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

# Seconds a scrape-time read (database counts, queue depths) is reused.
STATE_TTL = 5.0

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

STEP_DURATION = Histogram(
    "flow_step_duration_seconds",
    "Duration of a step attempt (worker's finished_at - started_at), observed by the coordinator "
    "when it applies the result.",
    ["status"], buckets=_DURATION_BUCKETS, registry=REGISTRY,
)
WORKER_TASK_DURATION = Histogram(
    "flow_worker_task_duration_seconds",
    "Handler time of a task attempt, observed by the worker that ran it.",
    ["task_type", "status"], buckets=_DURATION_BUCKETS, registry=REGISTRY,
)
RETRIES = Counter(
    "flow_task_retries", "Failed attempts that will be retried (task -> retrying).", ["task_type"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "flow_dead_letters", "Tasks that failed for good and went to the dead-letter queue.", ["task_type"],
    registry=REGISTRY,
)
RUN_OUTCOMES = Counter(
    "flow_run_outcomes", "Runs that reached a terminal status.", ["workflow", "status"],
    registry=REGISTRY,
)
RESULTS = Counter(
    "flow_coordinator_results", "Worker results taken by a coordinator: applied, or dropped as "
    "duplicates or late (fencing token).", ["outcome"], registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "flow_coordinator_batch_size", "Results applied in one coordinator transaction.",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500), registry=REGISTRY,
)
LAG = Histogram(
    "flow_coordinator_lag_seconds", "Time from a worker finishing an attempt to the coordinator "
    "applying its result (now - result finished_at).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
SCHEDULER_FIRES = Counter(
    "flow_scheduler_fires", "Schedule fires by outcome: fired, missed, duplicate, failed.", ["outcome"],
    registry=REGISTRY,
)
PRUNED = Counter(
    "flow_pruned_rows", "Rows deleted by retention (flow prune, or the scheduler).", ["table"],
    registry=REGISTRY,
)


# -- observations (called by the coordinator, workers, scheduler, store) ------------------------


def observe_batch(results: Sequence[Any], applied: int, dropped: int, now: float | None = None) -> None:
    """A coordinator applied ``results`` (``ResultMessage``s) in one transaction."""
    now = time.time() if now is None else now
    BATCH_SIZE.observe(len(results))
    if applied:
        RESULTS.labels("applied").inc(applied)
    if dropped:
        RESULTS.labels("dropped").inc(dropped)
    for result in results:
        if result.status not in ("completed", "failed"):
            continue
        if result.finished_at is not None:
            LAG.observe(max(0.0, now - float(result.finished_at)))
            if result.started_at is not None:
                STEP_DURATION.labels(result.status).observe(
                    max(0.0, float(result.finished_at) - float(result.started_at)))


def observe_fires(fired: int = 0, missed: int = 0, duplicates: int = 0, failed: int = 0) -> None:
    """A scheduler pass's ``FireOutcome``."""
    for outcome, n in (("fired", fired), ("missed", missed), ("duplicate", duplicates), ("failed", failed)):
        if n:
            SCHEDULER_FIRES.labels(outcome).inc(n)


# -- scrape-time state ---------------------------------------------------------------------------


class _Cached:
    """``read()`` at most once every ``ttl`` seconds; a failed read is not cached (and re-raises)."""

    def __init__(self, read: Callable[[], Any], ttl: float = STATE_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.read, self.ttl, self.clock = read, ttl, clock
        self._value: Any = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if self.clock() - self._at >= self.ttl:
                self._value = self.read()
                self._at = self.clock()
            return self._value


class TaskCountsCollector(Collector):
    """``flow_tasks{task_type, status}`` from ``counts()`` (``Store.counts``), read at scrape time."""

    def __init__(self, counts: Callable[[], Mapping[str, Any]], ttl: float = STATE_TTL) -> None:
        self._counts = _Cached(counts, ttl)

    def describe(self) -> Iterable[Metric]:
        return []  # the label values are only known at scrape time

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily("flow_tasks", "Tasks by type and status (from the database).",
                                  labels=["task_type", "status"])
        up = GaugeMetricFamily("flow_state_up", "1 if the scrape-time read of this source worked.",
                               labels=["source"])
        try:
            counts = self._counts.get()
        except Exception as exc:  # the database is down: say so, do not fail the whole scrape
            log.warning("metrics: task counts unavailable: %s", type(exc).__name__)
            up.add_metric(["database"], 0)
        else:
            up.add_metric(["database"], 1)
            for task_type, statuses in sorted((counts.get("by_type") or {}).items()):
                for status, n in sorted(statuses.items()):
                    tasks.add_metric([task_type, status], n)
        yield tasks
        yield up


class QueueDepthCollector(Collector):
    """``flow_queue_messages{queue}`` and ``flow_queue_consumers{queue}``: a passive declare of each
    task queue, the results queue and the dead-letter queue (a passive declare never creates one)."""

    def __init__(self, broker_url: str, task_types: Callable[[], Iterable[str]] | Iterable[str],
                 ttl: float = STATE_TTL) -> None:
        self.broker_url = broker_url
        self._task_types = task_types
        self._depths = _Cached(self._read, ttl)

    def describe(self) -> Iterable[Metric]:
        return []

    def _names(self) -> list[str]:
        from engine.core.contracts import DEAD_LETTER_QUEUE, RESULT_QUEUE, task_queue_name

        types = self._task_types() if callable(self._task_types) else self._task_types
        return [*(task_queue_name(t) for t in sorted(set(types))), RESULT_QUEUE, DEAD_LETTER_QUEUE]

    def _read(self) -> dict[str, tuple[int, int]]:
        import kombu

        depths: dict[str, tuple[int, int]] = {}
        with kombu.Connection(self.broker_url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
            for name in self._names():
                channel = conn.channel()
                try:
                    _, messages, consumers = channel.queue_declare(queue=name, passive=True)
                    depths[name] = (int(messages), int(consumers))
                except conn.channel_errors:  # not declared yet (no publish, no worker): skip it
                    pass
                finally:
                    try:
                        channel.close()
                    except Exception:  # a channel closed by the broker (404) is already gone
                        pass
        return depths

    def collect(self) -> Iterator[Metric]:
        messages = GaugeMetricFamily("flow_queue_messages", "Messages ready in a queue (RabbitMQ).",
                                     labels=["queue"])
        consumers = GaugeMetricFamily("flow_queue_consumers", "Consumers of a queue (RabbitMQ).",
                                      labels=["queue"])
        up = GaugeMetricFamily("flow_state_up", "1 if the scrape-time read of this source worked.",
                               labels=["source"])
        try:
            depths = self._depths.get()
        except Exception as exc:  # the broker is down: report it, keep the rest of the scrape
            log.warning("metrics: queue depths unavailable: %s", type(exc).__name__)
            up.add_metric(["broker"], 0)
        else:
            up.add_metric(["broker"], 1)
            for name, (ready, count) in sorted(depths.items()):
                messages.add_metric([name], ready)
                consumers.add_metric([name], count)
        yield messages
        yield consumers
        yield up


_installed: list[Collector] = []
_install_lock = threading.Lock()


def install_state_collectors(counts: Callable[[], Mapping[str, Any]], broker_url: str | None,
                             task_types: Callable[[], Iterable[str]] | Iterable[str]) -> None:
    """Register the scrape-time collectors, replacing those of an earlier call (one app per process
    in production; tests build many)."""
    with _install_lock:
        for collector in _installed:
            REGISTRY.unregister(collector)
        _installed.clear()
        collectors: list[Collector] = [TaskCountsCollector(counts)]
        # The in-memory transport has no queues outside this process worth a passive declare.
        if broker_url and not broker_url.startswith("memory"):
            collectors.append(QueueDepthCollector(broker_url, task_types))
        for collector in collectors:
            REGISTRY.register(collector)
            _installed.append(collector)


def render() -> tuple[bytes, str]:
    """The registry in the Prometheus text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def start_metrics_server(settings: Settings, role: str) -> int | None:
    """Serve ``/metrics`` on ``FLOW_METRICS_HOST:FLOW_METRICS_PORT`` in a daemon thread; the port,
    or None when ``FLOW_METRICS_PORT`` is 0 (off). ``role`` names the process in the log line."""
    if not settings.metrics_port:
        return None
    from prometheus_client import start_http_server

    try:
        start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=REGISTRY)
    except OSError as exc:
        # A second process on the same port must not die for its metrics: say it and go on.
        log.error("%s: cannot serve metrics on %s:%d (%s); set FLOW_METRICS_PORT to a free port",
                  role, settings.metrics_host, settings.metrics_port, exc)
        return None
    log.info("%s: metrics on http://%s:%d/metrics", role, settings.metrics_host, settings.metrics_port)
    return settings.metrics_port
