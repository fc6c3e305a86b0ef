"""Retries, dead letters and run outcomes are counted after the commit (issue 16 §2): a store
transaction that fails at COMMIT (a cut connection: the coordinator requeues the results and applies
them again) counts nothing, so the retried one counts once. On PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, event

from engine.core.contracts import Failure
from engine.observability import metrics
from engine.store import Store
from tests.integration.test_store import RETRY, relay, result, tasks_of

pytestmark = pytest.mark.integration

FLAKY = """flow 1
workflow after_commit_NAME(n: int) {
  step only: http { method: "GET"  url: "https://one.example/${params.n}"  retry RETRY }
}
""".replace("RETRY", RETRY)


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def failing_commits(engine: Engine) -> Iterator[list[int]]:
    """``failing_commits.append(1)`` makes the next COMMIT fail (the transaction rolls back)."""
    armed: list[int] = []

    def on_commit(conn) -> None:
        if armed:
            armed.pop()
            raise ConnectionError("connection cut at COMMIT (injected)")

    event.listen(engine, "commit", on_commit)
    yield armed
    event.remove(engine, "commit", on_commit)


def _apply_twice(store: Store, failing: list[int], results) -> None:
    """As the coordinator does: the batch fails at COMMIT, is redelivered and applied again."""
    failing.append(1)
    with pytest.raises(Exception, match="injected"):
        store.apply_results(results)
    outcome = store.apply_results(results)
    assert outcome.applied == len(results), outcome


def test_a_retry_is_counted_once_when_its_transaction_is_retried(
        store: Store, failing_commits: list[int], request: pytest.FixtureRequest) -> None:
    name = f"r{request.node.callspec.id}"
    store.deploy(FLAKY.replace("NAME", name), "flaky.flow")
    store.start_run(f"after_commit_{name}", {"n": 1})
    (task,) = tasks_of(relay(store))
    before = _value("flow_task_retries_total", task_type="http_request")

    _apply_twice(store, failing_commits, [result(task, "failed", error=Failure("http.503", "unavailable"))])

    assert _value("flow_task_retries_total", task_type="http_request") - before == 1


def test_a_dead_letter_and_a_run_outcome_are_counted_once_when_retried(
        store: Store, failing_commits: list[int], request: pytest.FixtureRequest) -> None:
    name = f"d{request.node.callspec.id}"
    workflow = f"after_commit_{name}"
    store.deploy(FLAKY.replace("NAME", name), "flaky.flow")
    run_id = store.start_run(workflow, {"n": 1})
    (task,) = tasks_of(relay(store))
    dead_before = _value("flow_dead_letters_total", task_type="http_request")
    failed_before = _value("flow_run_outcomes_total", workflow=workflow, status="failed")

    fatal = Failure("http.4xx", "bad request", retryable=False)
    _apply_twice(store, failing_commits, [result(task, "failed", error=fatal)])

    assert store.get_run(run_id)["status"] == "failed"
    assert _value("flow_dead_letters_total", task_type="http_request") - dead_before == 1
    assert _value("flow_run_outcomes_total", workflow=workflow, status="failed") - failed_before == 1


def test_a_cancelled_run_is_counted_once(store: Store, failing_commits: list[int],
                                         request: pytest.FixtureRequest) -> None:
    # The commands path (set_run_status on a connection, no Writes): cancel fails at COMMIT once.
    name = f"c{request.node.callspec.id}"
    workflow = f"after_commit_{name}"
    store.deploy(FLAKY.replace("NAME", name), "flaky.flow")
    run_id = store.start_run(workflow, {"n": 1})
    before = _value("flow_run_outcomes_total", workflow=workflow, status="cancelled")

    failing_commits.append(1)
    with pytest.raises(Exception, match="injected"):
        store.cancel_run(run_id)
    assert _value("flow_run_outcomes_total", workflow=workflow, status="cancelled") == before
    store.cancel_run(run_id)

    assert store.get_run(run_id)["status"] == "cancelled"
    assert _value("flow_run_outcomes_total", workflow=workflow, status="cancelled") - before == 1
