"""Prometheus metrics (``engine.observability.metrics``, ``/metrics``): observations, scrape-time state, servers."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

import pytest

from engine.core.contracts import ResultMessage
from engine.observability import metrics
from engine.settings import Settings


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_batch_observes_size_lag_and_step_durations() -> None:
    before = (sample("flow_coordinator_batch_size_count"), sample("flow_step_duration_seconds_count", status="completed"),
              sample("flow_step_duration_seconds_sum", status="failed"), sample("flow_coordinator_lag_seconds_count"),
              sample("flow_coordinator_results_total", outcome="dropped"))
    results = [
        ResultMessage("t1", 1, 1, "started", started_at=100.0),
        ResultMessage("t2", 1, 1, "completed", started_at=100.0, finished_at=102.5),
        ResultMessage("t3", 1, 1, "failed", started_at=100.0, finished_at=101.0),
    ]

    metrics.observe_batch(results, applied=2, dropped=1, now=103.0)

    assert sample("flow_coordinator_batch_size_count") == before[0] + 1
    assert sample("flow_step_duration_seconds_count", status="completed") == before[1] + 1
    assert sample("flow_step_duration_seconds_sum", status="failed") == pytest.approx(before[2] + 1.0)
    assert sample("flow_coordinator_lag_seconds_count") == before[3] + 2  # not the started result
    assert sample("flow_coordinator_results_total", outcome="dropped") == before[4] + 1


def test_scheduler_fires_by_outcome() -> None:
    before = sample("flow_scheduler_fires_total", outcome="missed")
    metrics.observe_fires(fired=2, missed=3)
    assert sample("flow_scheduler_fires_total", outcome="missed") == before + 3


def test_task_counts_are_read_at_scrape_time_and_cached() -> None:
    calls: list[int] = []

    def counts() -> dict[str, Any]:
        calls.append(1)
        return {"by_type": {"http_request": {"pending": 4, "failed": 1}}}

    collector = metrics.TaskCountsCollector(counts, ttl=60)
    families = {f.name: f for f in collector.collect()}
    samples = {(s.labels["task_type"], s.labels["status"]): s.value for s in families["flow_tasks"].samples}
    assert samples == {("http_request", "pending"): 4, ("http_request", "failed"): 1}
    list(collector.collect())
    assert len(calls) == 1  # the second scrape within the TTL reused the read


def test_a_database_outage_reports_state_down_instead_of_failing_the_scrape() -> None:
    def counts() -> dict[str, Any]:
        raise ConnectionError("database down")

    families = {f.name: f for f in metrics.TaskCountsCollector(counts).collect()}
    assert families["flow_tasks"].samples == []
    assert [(s.labels["source"], s.value) for s in families["flow_state_up"].samples] == [("database", 0)]


def test_slash_metrics_on_the_web_app(tmp_path: Any) -> None:
    from web import create_app

    app = create_app({"TESTING": True}, settings=Settings.from_env({"FLOW_DATA_DIR": str(tmp_path)}))
    store = app.extensions["flow"].store
    store.create_task("noop", {"output": 1})

    response = app.test_client().get("/metrics")

    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.get_data(as_text=True)
    assert 'flow_tasks{status="pending",task_type="noop"} 1.0' in text
    for name in ("flow_step_duration_seconds", "flow_task_retries", "flow_dead_letters", "flow_run_outcomes",
                 "flow_coordinator_batch_size", "flow_coordinator_lag_seconds", "flow_scheduler_fires",
                 "process_resident_memory_bytes"):
        assert f"# TYPE {name}" in text, name


def test_queue_depths_by_passive_declare(amqp_url: str) -> None:
    import kombu

    from engine.runtime.topology import task_queue

    with kombu.Connection(amqp_url) as conn:
        queue = task_queue("metrics_probe")(conn.default_channel)
        queue.declare()
        producer = conn.Producer()
        for _ in range(3):
            producer.publish("{}", exchange=queue.exchange, routing_key="metrics_probe", declare=[queue])
    collector = metrics.QueueDepthCollector(amqp_url, ["metrics_probe", "never_declared"])
    families = {f.name: f for f in collector.collect()}
    depths = {s.labels["queue"]: s.value for s in families["flow_queue_messages"].samples}
    assert depths["flow.tasks.metrics_probe"] == 3
    assert "flow.tasks.never_declared" not in depths  # a passive declare never creates a queue
    assert [s.value for s in families["flow_state_up"].samples] == [1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_metrics_port_serves_the_registry_and_zero_is_off() -> None:
    assert metrics.start_metrics_server(Settings.from_env({}), "test") is None
    port = _free_port()
    settings = Settings.from_env({"FLOW_METRICS_PORT": str(port)})
    assert settings.metrics_host == "127.0.0.1"
    assert metrics.start_metrics_server(settings, "test") == port
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "flow_coordinator_batch_size" in body
