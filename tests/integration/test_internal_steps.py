"""Steps the coordinator runs itself (``sleep``, ``approval``, ``subflow``), on the real PostgreSQL
and on SQLite, with an injected clock: no worker and no message for them, durable, CAS everywhere.

Workers are played by the tests, as in ``test_store.py``.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, select

from engine.core.contracts import TASK_EXCHANGE, Failure, ResultMessage, TaskMessage
from engine.core.errors import IllegalTransition, NotFound
from engine.settings import Settings
from engine.store import OutboxMessage, Store, internal_steps
from engine.store.models import Run, Task
from engine.store.planning import plan_runs
from engine.store.writes import Writes
from tests.integration.conftest import Clock, relay

pytestmark = pytest.mark.integration

SOURCE = """flow 1
workflow child(x: int) {
  step fetch: http { method: "GET"  url: "https://child.example/${params.x}"  retry 1 }
  output { got: steps.fetch.output.v, x: params.x }
}
workflow parent(x: int) {
  step book: http {
    method: "GET"
    url: "https://book.example/"
    compensate http { method: "GET", url: "https://unbook.example/" }
  }
  step sub: subflow {
    after book
    workflow: "child"
    params: { x: params.x }
  }
  step use: http { method: "GET"  url: "https://use.example/${steps.sub.output.got}" }
  output { child: steps.sub.output }
}
workflow gate(order: string) {
  step ask: approval { prompt: "ship ${params.order}?"  timeout: 1h }
  step ship: http {
    when steps.ask.output.approved
    method: "GET"
    url: "https://ship.example/${params.order}"
  }
  output { approved: steps.ask.output.approved, by: steps.ask.output.by, comment: steps.ask.output.comment }
}
workflow napper(n: int) {
  step nap: sleep { duration: 30s }
  step next: http {
    after nap
    method: "GET"
    url: "https://x.example/${params.n}"
  }
  output { nap: steps.nap.output, n: params.n }
}
"""


@pytest.fixture
def store(store: Store) -> Store:
    """The shared store with this module's workflows deployed."""
    store.deploy(SOURCE, "internal.flow")
    return store


def tasks_of(messages: list[OutboxMessage]) -> list[TaskMessage]:
    return [TaskMessage.decode(m.body) for m in messages if m.exchange == TASK_EXCHANGE]


def work(store: Store) -> list[TaskMessage]:
    """The task messages published so far; no internal step ever gets one."""
    found = tasks_of(relay(store))
    assert not [t for t in found if t.task_type in ("sleep", "approval", "subflow")]
    return found


def finish(store: Store, task: TaskMessage, output: Any = None, error: Failure | None = None) -> None:
    def result(status: str) -> ResultMessage:
        return ResultMessage(task_id=task.task_id, attempt=task.attempt, fencing_token=task.fencing_token,
                             status=status, output=output if status == "completed" else None,
                             error=error if status == "failed" else None, worker="test-worker")

    outcome = store.apply_results([result("started"), result("failed" if error else "completed")])
    assert (outcome.applied, outcome.dropped) == (2, 0)


def step(store: Store, run_id: str, name: str) -> dict[str, Any]:
    return next(s for s in store.get_run(run_id)["steps"] if s["name"] == name)


def task_row(engine: Engine, run_id: str, name: str) -> dict[str, Any]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Task.__table__).where(
            Task.__table__.c.run_id == run_id, Task.__table__.c.step == name)).mappings().one())


def children(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    runs = Run.__table__
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(runs).where(runs.c.parent_run_id == run_id)).mappings()]


# --- sleep --------------------------------------------------------------------------------------


def test_sleep_completes_at_its_time_and_not_before(store: Store, engine: Engine, clock: Clock) -> None:
    run_id = store.start_run("napper", {"n": 3})
    assert work(store) == []  # nothing to publish: the coordinator sleeps, no queue
    nap = task_row(engine, run_id, "nap")
    assert nap["status"] == "processing" and nap["lease_expires_at"] is None

    clock.advance(29.9)
    store.run_timers()
    assert step(store, run_id, "nap")["status"] == "processing"
    assert work(store) == []

    # A coordinator restart loses nothing: the wake-up time is in the database.
    restarted = Store(engine, clock=clock, rng=random.Random(1), lease_seconds=30.0)
    clock.advance(0.1)
    outcome = restarted.run_timers()
    assert run_id in outcome.runs_touched
    assert step(store, run_id, "nap")["status"] == "completed"
    assert restarted.run_timers().applied == 0  # once only
    [next_task] = work(store)
    assert next_task.step == "next" and next_task.payload["url"] == "https://x.example/3"
    finish(store, next_task, {"status": 200})
    document = store.get_run(run_id)
    assert document["status"] == "completed"
    assert document["output"] == {"nap": None, "n": 3}


# --- approval -----------------------------------------------------------------------------------


def test_approval_approved_via_the_store(store: Store, engine: Engine) -> None:
    run_id = store.start_run("gate", {"order": "o-1"})
    assert work(store) == []
    assert task_row(engine, run_id, "ask")["status"] == "processing"
    with pytest.raises(NotFound):
        store.approve_step(run_id, "ship", True, "alice")  # not an approval step
    with pytest.raises(NotFound):
        store.approve_step(str(uuid.uuid4()), "ask", True, "alice")

    assert len(store.approve_step(run_id, "ask", True, "alice", "looks good")) == 1
    with pytest.raises(IllegalTransition):
        store.approve_step(run_id, "ask", False, "bob")  # answered already: CAS refuses

    [ship] = work(store)
    assert ship.step == "ship"
    finish(store, ship, {"status": 200})
    document = store.get_run(run_id)
    assert document["status"] == "completed"
    assert document["output"] == {"approved": True, "by": "alice", "comment": "looks good"}
    assert step(store, run_id, "ask")["output"] == {"approved": True, "by": "alice", "comment": "looks good"}


def test_approval_rejected_completes_the_step_and_the_when_branch_skips(store: Store) -> None:
    run_id = store.start_run("gate", {"order": "o-2"})
    store.approve_step(run_id, "ask", False, "bob", None)
    assert work(store) == []
    document = store.get_run(run_id)
    assert document["status"] == "completed"
    assert step(store, run_id, "ask")["status"] == "completed"
    assert step(store, run_id, "ship")["status"] == "skipped"
    assert document["output"] == {"approved": False, "by": "bob", "comment": None}


def test_approval_times_out_then_an_operator_retry_waits_again(store: Store, clock: Clock) -> None:
    run_id = store.start_run("gate", {"order": "o-3"})
    clock.advance(3599)
    store.run_timers()
    assert step(store, run_id, "ask")["status"] == "processing"
    clock.advance(1)
    store.run_timers()
    ask = step(store, run_id, "ask")
    assert ask["status"] == "failed" and ask["error"]["type"] == "timeout"
    document = store.get_run(run_id)
    assert document["status"] == "failed"
    assert document["error"]["type"] == "timeout" and document["error"]["step"] == "ask"
    with pytest.raises(IllegalTransition):
        store.approve_step(run_id, "ask", True, "late")

    # Retry: the task is pending without a message; the timer pass makes it wait again.
    store.retry_run(run_id)
    assert work(store) == []
    store.run_timers()
    assert step(store, run_id, "ask")["status"] == "processing"
    store.approve_step(run_id, "ask", True, "carol")
    [ship] = work(store)
    finish(store, ship, {"status": 200})
    assert store.get_run(run_id)["status"] == "completed"


def test_approval_via_the_api_endpoint(store: Store, engine: Engine) -> None:
    from web import create_app

    settings = Settings(database_url="sqlite://", broker_url="memory://", api_token="admin-secret")
    app = create_app({"TESTING": True}, settings=settings, store=store)
    client = app.test_client()
    _, operator = store.create_token("release-bot", "operator")
    _, viewer = store.create_token("watcher", "viewer")
    run_id = store.start_run("gate", {"order": "o-4"})
    url = f"/api/runs/{run_id}/steps/ask/approve"

    assert client.post(url, json={"approved": True}).status_code == 401
    assert client.post(url, json={"approved": True},
                       headers={"Authorization": f"Bearer {viewer}"}).status_code == 403
    bearer = {"Authorization": f"Bearer {operator}"}
    assert client.post(url, json={"comment": "no answer"}, headers=bearer).status_code == 400
    assert client.post(f"/api/runs/{run_id}/steps/nope/approve", json={"approved": True},
                       headers=bearer).status_code == 404

    answer = client.post(url, json={"approved": True, "comment": "ship it"}, headers=bearer)
    assert answer.status_code == 200, answer.get_json()
    ask = next(s for s in answer.get_json()["steps"] if s["name"] == "ask")
    assert ask["status"] == "completed"
    assert ask["output"] == {"approved": True, "by": "release-bot", "comment": "ship it"}
    assert client.post(url, json={"approved": False}, headers=bearer).status_code == 409
    [ship] = work(store)
    assert ship.step == "ship"


# --- subflow ------------------------------------------------------------------------------------


def _start_parent(store: Store, engine: Engine, x: int) -> tuple[str, dict[str, Any]]:
    run_id = store.start_run("parent", {"x": x})
    [book] = work(store)
    finish(store, book, {"status": 200})
    [child] = children(engine, run_id)
    sub = task_row(engine, run_id, "sub")
    assert sub["status"] == "processing" and child["idempotency_key"] == f"subflow:{sub['id']}"
    assert child["workflow_name"] == "child" and child["params"] == {"x": x}
    return run_id, child


def test_subflow_child_completes_and_the_parent_goes_on_with_its_output(store: Store, engine: Engine) -> None:
    run_id, child = _start_parent(store, engine, 5)
    [fetch] = work(store)
    assert fetch.run_id == child["id"] and fetch.payload["url"] == "https://child.example/5"

    finish(store, fetch, {"v": 42})  # ends the child: the parent's step completes, same transaction
    assert store.get_run(child["id"])["status"] == "completed"
    sub = step(store, run_id, "sub")
    assert sub["status"] == "completed" and sub["output"] == {"got": 42, "x": 5}
    [use] = work(store)
    assert use.step == "use" and use.payload["url"] == "https://use.example/42"
    finish(store, use, {"status": 200})
    document = store.get_run(run_id)
    assert document["status"] == "completed"
    assert document["output"] == {"child": {"got": 42, "x": 5}}


def test_subflow_child_fails_the_parent_step_fails_and_the_parent_compensates(
    store: Store, engine: Engine
) -> None:
    run_id, child = _start_parent(store, engine, 6)
    [fetch] = work(store)
    finish(store, fetch, error=Failure("http.4xx", "404 Not Found", retryable=False))
    assert store.get_run(child["id"])["status"] == "failed"
    sub = step(store, run_id, "sub")
    assert sub["status"] == "failed"
    assert child["id"] in sub["error"]["message"] and sub["error"]["child_run_id"] == child["id"]
    assert store.get_run(run_id)["status"] == "compensating"
    [undo] = work(store)
    assert undo.task_type == "compensation" and undo.step == "book"
    finish(store, undo, {"status": 200})
    document = store.get_run(run_id)
    assert document["status"] == "compensated"
    assert document["error"]["step"] == "sub"


def test_a_child_cancelled_by_an_operator_fails_the_parent_step_via_the_timer(
    store: Store, engine: Engine
) -> None:
    run_id, child = _start_parent(store, engine, 7)
    store.cancel_run(child["id"])  # a command, not the planner: the timer's sweep sees it
    store.run_timers()
    sub = step(store, run_id, "sub")
    assert sub["status"] == "failed" and "cancelled" in sub["error"]["message"]
    assert store.get_run(run_id)["status"] == "compensating"


def test_replaying_the_dispatch_does_not_start_a_second_child(store: Store, engine: Engine, clock: Clock) -> None:
    run_id, child = _start_parent(store, engine, 8)
    sub = task_row(engine, run_id, "sub")
    ctx = store._ctx
    with engine.begin() as conn:  # the same dispatch set up again (same task, same fencing token)
        run = dict(conn.execute(select(Run.__table__).where(Run.__table__.c.id == run_id)).mappings().one())
        replay = {**sub, "status": "pending"}
        internal_steps.prepare(ctx, conn, run, replay, Writes(), ctx.now(), plan_runs)
        assert replay["status"] == "processing"
    store.run_timers()
    assert [c["id"] for c in children(engine, run_id)] == [child["id"]]
    assert store.start_run("child", {"x": 8}, idempotency_key=f"subflow:{sub['id']}") == child["id"]


def test_subflow_of_an_unknown_workflow_fails_the_step(store: Store, engine: Engine) -> None:
    store.deploy("""flow 1
workflow lost() {
  step sub: subflow { workflow: "no_such_flow" }
}
""", "lost.flow")
    run_id = store.start_run("lost", {})
    sub = step(store, run_id, "sub")
    assert sub["status"] == "failed" and sub["error"]["type"] == "invalid_input"
    assert store.get_run(run_id)["status"] == "failed"
    assert children(engine, run_id) == []


def test_cancelling_the_parent_cancels_its_live_child(store: Store, engine: Engine) -> None:
    # Given a parent run waiting on its subflow, whose child has a step in flight
    run_id, child = _start_parent(store, engine, 9)
    [fetch] = work(store)
    # When an operator cancels the parent
    store.cancel_run(run_id)
    # Then the child is cancelled too, with its task, and the child's late result is refused
    assert store.get_run(run_id)["status"] == "cancelled"
    child_doc = store.get_run(child["id"])
    assert child_doc["status"] == "cancelled"
    assert [s["status"] for s in child_doc["steps"]] == ["cancelled"]
    late = ResultMessage(task_id=fetch.task_id, attempt=fetch.attempt, fencing_token=fetch.fencing_token,
                         status="completed", output={"v": 1}, worker="test-worker")
    assert store.apply_results([late]).dropped == 1
    assert store.get_run(child["id"])["status"] == "cancelled"
    assert store.get_run(run_id)["status"] == "cancelled"
