"""The store on the real PostgreSQL (and on SQLite, the embedded default).

Workers are played by the tests: they read the task messages the outbox relay hands out and feed
``ResultMessage``s back to ``apply_results``. Time is an injected clock.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from engine.core.contracts import DEAD_LETTER_EXCHANGE, TASK_EXCHANGE, Failure, ResultMessage, TaskMessage
from engine.core.errors import CompileFailed, Conflict, IllegalTransition, InvalidParams, NotFound
from engine.store import OutboxMessage, Store
from engine.store.models import DeadLetter, Outbox, Task
from tests.integration.conftest import Clock, relay

pytestmark = pytest.mark.integration

RETRY = '{ attempts: 2, delay: 10s, backoff: 2.0, max_delay: 60s, jitter: false, errors: ["http.5xx", "timeout"] }'

CHAIN = """flow 1
workflow chain(name: string, count: int = 1, ratio: float = 0.5, tags: list<string>? = null) {
  let greeting = "hello ${params.name}"
  step a: http { method: "GET"  url: "https://a.example/${params.name}" }
  step b: http { method: "GET"  url: "https://b.example/${steps.a.output.id}" }
  step c: http { method: "GET"  url: "https://c.example/${greeting}" }
  output { a: steps.a.output.id, c: steps.c.output.id }
}
"""

SAGA = f"""flow 1
workflow saga(order: string) {{
  timeout 1h
  step charge: http {{
    method: "GET"
    url: "https://pay.example/charge/${{params.order}}"
    retry {RETRY}
    compensate http {{ method: "GET", url: "https://pay.example/refund/${{self.output.id}}" }}
  }}
  step reserve: http {{
    after charge
    method: "GET"
    url: "https://stock.example/reserve"
    retry {RETRY}
    compensate http {{ method: "GET", url: "https://stock.example/release/${{self.output.id}}" }}
  }}
  step ship: http {{
    after reserve
    method: "GET"
    url: "https://ship.example/ship"
    retry {RETRY}
    compensate none "last step"
  }}
}}
"""

ONE = """flow 1
workflow one(n: int) {
  step only: http { method: "GET"  url: "https://one.example/${params.n}" }
}
"""


def tasks_of(messages: list[OutboxMessage]) -> list[TaskMessage]:
    return [TaskMessage.decode(m.body) for m in messages if m.exchange == TASK_EXCHANGE]


def result(task: TaskMessage, status: str, output: Any = None, error: Failure | None = None,
           token: int | None = None) -> ResultMessage:
    return ResultMessage(
        task_id=task.task_id, attempt=task.attempt,
        fencing_token=task.fencing_token if token is None else token,
        status=status, output=output, error=error, worker="test-worker",
        logs=({"level": "info", "message": f"{status} {task.step}"},) if status != "started" else (),
    )


def complete(store: Store, task: TaskMessage, output: Any) -> None:
    outcome = store.apply_results([result(task, "started"), result(task, "completed", output)])
    assert (outcome.applied, outcome.dropped) == (2, 0)


def count(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


# --- workflows ----------------------------------------------------------------------------------


def test_deploy_is_idempotent_and_a_changed_source_is_a_new_version(store: Store) -> None:
    first = store.deploy(CHAIN, "chain.flow")
    again = store.deploy(CHAIN, "chain.flow")
    changed = store.deploy(CHAIN.replace("https://a.example", "https://a2.example"), "chain.flow")

    assert [(d.name, d.version, d.created) for d in first] == [("chain", 1, True)]
    assert [(d.name, d.version, d.created) for d in again] == [("chain", 1, False)]
    assert [(d.name, d.version, d.created) for d in changed] == [("chain", 2, True)]
    assert store.get_version("chain")["versions"] == [1, 2]
    assert "a.example" in store.get_version("chain", 1)["source"]
    assert [(w["name"], w["version"]) for w in store.list_workflows()] == [("chain", 2)]


def test_deploy_of_a_bad_source_raises_with_the_diagnostics(store: Store) -> None:
    with pytest.raises(CompileFailed) as caught:
        store.deploy("flow 1\nworkflow broken( {\n", "broken.flow")
    assert caught.value.diagnostics
    assert store.list_workflows() == []


def test_deploy_seed_definition(store: Store) -> None:
    definition = {
        "name": "seed_flow",
        "definition": {
            "initialTask": {"type": "http_request", "payload": {"url": "https://seed.example/"}},
            "transitions": {},
        },
    }
    assert store.deploy_seed(definition).created
    assert not store.deploy_seed(definition).created
    run_id = store.start_run("seed_flow", {})
    assert [t.task_type for t in tasks_of(relay(store))] == ["http_request"]
    assert store.get_run(run_id)["status"] == "running"


# --- starting runs ------------------------------------------------------------------------------


def test_start_run_lists_every_param_problem(store: Store) -> None:
    store.deploy(CHAIN, "chain.flow")
    with pytest.raises(InvalidParams) as caught:
        store.start_run("chain", {"count": "three", "ratio": True, "tags": [1], "extra": 1})
    problems = caught.value.problems
    assert len(problems) == 5, problems
    assert any("missing required param 'name'" in p for p in problems)
    assert any("unknown param 'extra'" in p for p in problems)
    assert any("'count'" in p for p in problems)
    assert any("'ratio'" in p for p in problems)
    assert any("'tags'" in p for p in problems)
    # An int is a float; defaults apply; nothing was written for the refused run.
    run_id = store.start_run("chain", {"name": "x", "ratio": 2})
    assert store.get_run(run_id)["params"] == {"name": "x", "count": 1, "ratio": 2, "tags": None}
    with pytest.raises(NotFound):
        store.start_run("nope", {})


def test_same_idempotency_key_gives_the_same_run(store: Store) -> None:
    store.deploy(CHAIN, "chain.flow")
    store.deploy(ONE, "one.flow")
    first = store.start_run("chain", {"name": "x"}, idempotency_key="k-1")
    second = store.start_run("chain", {"name": "x"}, idempotency_key="k-1")
    assert first == second
    assert len(tasks_of(relay(store))) == 2  # steps a and c of one run, not of two
    with pytest.raises(Conflict):
        store.start_run("one", {"n": 1}, idempotency_key="k-1")


# --- a run, driven by results -------------------------------------------------------------------


def test_a_run_completes_step_by_step(store: Store, engine: Engine) -> None:
    store.deploy(CHAIN, "chain.flow")
    commits = []
    event.listen(engine, "commit", lambda conn: commits.append(1))

    run_id = store.start_run("chain", {"name": "ada"})
    sent = tasks_of(relay(store))
    # a and c have no dependency on another step: both go out at once.
    assert sorted(t.step for t in sent) == ["a", "c"]
    by_step = {t.step: t for t in sent}
    assert by_step["a"].payload == {"method": "GET", "url": "https://a.example/ada"}
    assert by_step["c"].payload["url"] == "https://c.example/hello ada"  # the let, evaluated once
    assert by_step["a"].idempotency_key == f"{by_step['a'].task_id}:1"
    assert (by_step["a"].attempt, by_step["a"].fencing_token) == (1, 1)

    complete(store, by_step["a"], {"id": "A1"})
    (b,) = tasks_of(relay(store))
    assert b.step == "b" and b.run_id == run_id
    complete(store, by_step["c"], {"id": "C1"})
    assert tasks_of(relay(store)) == []
    complete(store, b, {"id": "B1"})
    assert relay(store) == []

    doc = store.get_run(run_id)
    assert doc["status"] == "completed"
    assert doc["output"] == {"a": "A1", "c": "C1"}
    assert set(doc) == {"id", "workflow", "version", "status", "params", "output", "error", "search",
                        "backfill_id", "scheduled_at", "created_at", "started_at", "finished_at", "steps"}
    assert [s["name"] for s in doc["steps"]] == ["a", "b", "c"]
    for step in doc["steps"]:
        assert set(step) == {"name", "task_id", "status", "attempts", "output", "error", "started_at",
                             "finished_at"}
        assert (step["status"], step["attempts"], step["error"]) == ("completed", 1, None)
    assert doc["finished_at"] is not None
    logs = store.task_logs(run_id=run_id)
    assert {entry["message"] for entry in logs} >= {"attempt 1 completed", "completed a"}
    # One commit per command, per result batch and per relay pass that found messages (a and c
    # went out together, then b): 6 for 3 steps here, one step per batch. A coordinator batching
    # the results of many runs commits far less than once per step.
    assert len(commits) == 1 + 3 + 2, len(commits)


def test_counts_by_task_type(store: Store) -> None:
    store.deploy(ONE, "one.flow")
    for n in range(3):
        store.start_run("one", {"n": n})
    store.create_task("data_processing", {"operation": "noop"})
    first, *_ = tasks_of(relay(store))
    complete(store, first, {"ok": True})

    counts = store.counts()
    assert counts["by_type"]["http_request"] == {
        "pending": 2, "processing": 0, "failed": 0, "retrying": 0, "completed": 1,
    }
    assert counts["by_type"]["data_processing"]["pending"] == 1
    assert counts["total"]["pending"] == 3


# --- failures, retries, dead letters, saga ------------------------------------------------------


def test_failed_step_retries_then_dead_letters_and_compensates_in_reverse(
    store: Store, engine: Engine, clock: Clock
) -> None:
    store.deploy(SAGA, "saga.flow")
    run_id = store.start_run("saga", {"order": "o-1"})
    (charge,) = tasks_of(relay(store))
    complete(store, charge, {"id": "CH"})
    clock.advance(1)
    (reserve,) = tasks_of(relay(store))
    complete(store, reserve, {"id": "RS"})
    (ship,) = tasks_of(relay(store))

    # Given ship fails with a retryable error on its first attempt
    boom = Failure("http.503", "upstream unavailable")
    store.apply_results([result(ship, "started"), result(ship, "failed", error=boom)])
    assert store.get_task(ship.task_id)["status"] == "retrying"
    # When the timers run before the delay is over, nothing happens
    clock.advance(5)
    assert store.run_timers().applied == 0
    assert relay(store) == []
    # When the delay has passed, the task is pending again with the next attempt and token
    clock.advance(6)
    assert store.run_timers().applied == 1
    (ship2,) = tasks_of(relay(store))
    assert (ship2.task_id, ship2.attempt, ship2.fencing_token) == (ship.task_id, 2, 2)
    assert ship2.idempotency_key == f"{ship.task_id}:2"

    # When the last attempt fails too
    store.apply_results([result(ship2, "started"), result(ship2, "failed", error=boom)])

    # Then the task is failed with a dead letter (row + message)
    assert store.get_task(ship.task_id)["status"] == "failed"
    (letter,) = store.list_dead_letters()
    assert letter["task_id"] == ship.task_id and "attempts spent" in letter["reason"]
    sent = relay(store)
    assert [m.routing_key for m in sent if m.exchange == DEAD_LETTER_EXCHANGE] == ["http_request"]
    # and the compensations run one at a time, the last completed step first
    (undo_reserve,) = tasks_of(sent)
    assert undo_reserve.task_type == "compensation" and undo_reserve.step == "reserve"
    assert store.get_run(run_id)["status"] == "compensating"
    complete(store, undo_reserve, {"released": True})
    (undo_charge,) = tasks_of(relay(store))
    assert undo_charge.step == "charge"
    complete(store, undo_charge, {"refunded": True})

    doc = store.get_run(run_id)
    assert doc["status"] == "compensated"
    assert doc["error"]["type"] == "http.503"
    steps = {s["name"]: s for s in doc["steps"]}
    assert steps["ship"]["status"] == "failed" and steps["ship"]["attempts"] == 2
    assert steps["reserve"]["status"] == "compensated"
    assert steps["charge"]["compensation"]["status"] == "completed"
    messages = [entry["message"] for entry in store.task_logs(task_id=ship.task_id)]
    assert len([m for m in messages if m.startswith("attempt")]) == 2

    # A compensated run can be neither retried nor compensated again.
    with pytest.raises(IllegalTransition):
        store.retry_run(run_id)
    with pytest.raises(IllegalTransition):
        store.compensate_run(run_id)


def test_a_run_past_its_deadline_fails_and_compensates(store: Store, clock: Clock) -> None:
    store.deploy(SAGA, "saga.flow")
    run_id = store.start_run("saga", {"order": "o-3"})
    (charge,) = tasks_of(relay(store))
    complete(store, charge, {"id": "CH"})
    (reserve,) = tasks_of(relay(store))
    store.apply_results([result(reserve, "started")])

    # When the run passes its deadline (timeout 1h) while reserve is still running
    clock.advance(3601)
    outcome = store.run_timers()

    # Then reserve is cancelled (its late result refused), and charge is compensated
    assert run_id in outcome.runs_touched
    assert store.get_task(reserve.task_id)["status"] == "cancelled"
    assert store.apply_results([result(reserve, "completed", {"id": "late"})]).dropped == 1
    doc = store.get_run(run_id)
    assert doc["status"] == "compensating" and doc["error"]["type"] == "timeout"
    (undo,) = tasks_of(relay(store))
    assert undo.step == "charge"
    complete(store, undo, {})
    assert store.get_run(run_id)["status"] == "compensated"
    assert store.run_timers().applied == 0


def test_compensate_a_completed_run_by_hand(store: Store) -> None:
    store.deploy(SAGA, "saga.flow")
    run_id = store.start_run("saga", {"order": "o-4"})
    for output in ({"id": "CH"}, {"id": "RS"}, {"id": "SH"}):
        (task,) = tasks_of(relay(store))
        complete(store, task, output)
    assert store.get_run(run_id)["status"] == "completed"

    store.compensate_run(run_id)

    undone = []
    while sent := tasks_of(relay(store)):
        (undo,) = sent
        undone.append(undo.step)
        complete(store, undo, {})
    assert undone == ["reserve", "charge"]
    assert store.get_run(run_id)["status"] == "compensated"


def test_retry_run_restarts_the_failed_step(store: Store) -> None:
    store.deploy(ONE, "one.flow")
    run_id = store.start_run("one", {"n": 1})
    (task,) = tasks_of(relay(store))
    fatal = Failure("http.4xx", "bad request", retryable=False)
    store.apply_results([result(task, "failed", error=fatal)])
    assert store.get_run(run_id)["status"] == "failed"
    relay(store)

    store.retry_run(run_id)

    (again,) = tasks_of(relay(store))
    # The next attempt number (a new idempotency key: the target may have cached the failure)
    assert (again.task_id, again.attempt, again.fencing_token) == (task.task_id, 2, 2)
    assert again.idempotency_key == f"{task.task_id}:2"
    assert store.get_run(run_id)["status"] == "running"
    assert store.get_run(run_id)["error"] is None
    complete(store, again, {"ok": 1})
    assert store.get_run(run_id)["status"] == "completed"
    with pytest.raises(IllegalTransition) as caught:
        store.retry_run(run_id)
    assert (caught.value.current, caught.value.target) == ("completed", "running")


def test_expired_lease_refuses_the_late_result(store: Store, clock: Clock) -> None:
    store.deploy(SAGA, "saga.flow")
    store.start_run("saga", {"order": "o-2"})
    (charge,) = tasks_of(relay(store))
    store.apply_results([result(charge, "started")])

    # Given the worker goes silent past its lease (30 s default + grace)
    clock.advance(60)
    assert store.run_timers().applied == 1
    # Then the same attempt is delivered again: same idempotency key, next fencing token
    task = store.get_task(charge.task_id)
    assert task["status"] == "pending" and task["attempt"] == 1
    (again,) = tasks_of(relay(store))
    assert (again.attempt, again.idempotency_key) == (1, charge.idempotency_key)
    assert again.fencing_token == charge.fencing_token + 1

    # When the silent worker's result finally arrives, it is refused (old fencing token)
    outcome = store.apply_results([result(charge, "completed", {"id": "late"})])
    assert (outcome.applied, outcome.dropped) == (0, 1)

    # and the redelivery's result counts
    complete(store, again, {"id": "CH"})
    assert store.get_task(charge.task_id)["output"] == {"id": "CH"}


def test_lease_expiries_are_bounded_then_a_timeout_failure(engine: Engine, clock: Clock) -> None:
    store = Store(engine, clock=clock, rng=random.Random(7), lease_seconds=30.0, max_deliveries=3)
    store.deploy(SAGA, "saga.flow")
    store.start_run("saga", {"order": "o-5"})
    (message,) = tasks_of(relay(store))
    keys = {message.idempotency_key}
    # Given a worker that takes the task and goes silent, delivery after delivery
    for expiry in (1, 2):
        store.apply_results([result(message, "started")])
        clock.advance(60)
        assert store.run_timers().applied == 1
        (message,) = tasks_of(relay(store))
        keys.add(message.idempotency_key)
        assert _lease_expiries(engine, message.task_id) == expiry
    assert keys == {f"{message.task_id}:1"}, "every delivery of attempt 1 has one key"
    # When the third lease of the attempt expires, the attempt fails with class timeout
    store.apply_results([result(message, "started")])
    clock.advance(60)
    store.run_timers()
    task = store.get_task(message.task_id)
    assert task["status"] == "retrying" and task["error"]["type"] == "timeout"
    clock.advance(30)
    store.run_timers()
    (next_attempt,) = tasks_of(relay(store))
    assert next_attempt.attempt == 2 and next_attempt.idempotency_key == f"{message.task_id}:2"
    assert _lease_expiries(engine, message.task_id) == 0


def _lease_expiries(engine: Engine, task_id: str) -> int:
    from sqlalchemy import text as sql

    with engine.connect() as conn:
        return int(conn.execute(sql("SELECT lease_expiries FROM tasks WHERE id = :id"), {"id": task_id}).scalar_one())


def test_duplicate_results_are_dropped(store: Store) -> None:
    store.deploy(ONE, "one.flow")
    run_id = store.start_run("one", {"n": 1})
    (task,) = tasks_of(relay(store))
    done = result(task, "completed", {"v": 1})

    first = store.apply_results([result(task, "started"), done, done])
    second = store.apply_results([result(task, "started"), done])

    assert (first.applied, first.dropped, first.runs_touched) == (2, 1, (run_id,))
    assert (second.applied, second.dropped) == (0, 2)
    assert store.get_task(task.task_id)["output"] == {"v": 1}
    assert len([m for m in store.task_logs(task_id=task.task_id) if m["message"] == "attempt 1 completed"]) == 1


def test_a_result_may_overtake_its_started_message(store: Store) -> None:
    store.deploy(ONE, "one.flow")
    run_id = store.start_run("one", {"n": 1})
    (task,) = tasks_of(relay(store))
    assert store.apply_results([result(task, "completed", {"v": 2})]).applied == 1
    assert store.apply_results([result(task, "started")]).dropped == 1
    assert store.get_run(run_id)["status"] == "completed"


def test_two_coordinators_apply_the_same_results_once(store: Store, engine: Engine) -> None:
    store.deploy(ONE, "one.flow")
    runs = [store.start_run("one", {"n": n}) for n in range(20)]
    standalone = [store.create_task("data_processing", {"n": n}) for n in range(5)]
    sent = tasks_of(relay(store))
    assert len(sent) == 25
    results = [r for t in sent for r in (result(t, "started"), result(t, "completed", {"t": t.task_id}))]

    outcomes = []
    barrier = threading.Barrier(2)

    def coordinator(batch: list[ResultMessage]) -> None:
        other = Store(engine)
        barrier.wait()
        outcomes.append(other.apply_results(batch))

    threads = [
        threading.Thread(target=coordinator, args=(results,)),
        threading.Thread(target=coordinator, args=(list(reversed(results)),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(outcomes) == 2
    # Each task went pending -> processing -> completed at most once in total; a reversed batch
    # may see completed before started (started then dropped), hence <= 2 per task.
    assert sum(o.applied for o in outcomes) + sum(o.dropped for o in outcomes) == 2 * len(results)
    assert 25 <= sum(o.applied for o in outcomes) <= 50
    assert all(store.get_run(r)["status"] == "completed" for r in runs)
    assert all(store.get_task(t)["status"] == "completed" for t in standalone)
    logs = [m for r in runs for m in store.task_logs(run_id=r) if m["message"] == "attempt 1 completed"]
    assert len(logs) == 20
    assert count(engine, Task.__table__, Task.__table__.c.finished_seq.isnot(None)) == 25


# --- outbox -------------------------------------------------------------------------------------


def test_relay_keeps_the_messages_when_publish_fails(store: Store, engine: Engine) -> None:
    store.deploy(ONE, "one.flow")
    store.start_run("one", {"n": 1})

    def broken(messages: list[OutboxMessage]) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        store.relay_outbox(broken)
    assert count(engine, Outbox.__table__) == 1
    sent = relay(store)
    assert len(sent) == 1 and json.loads(sent[0].body)["v"] == 1
    assert count(engine, Outbox.__table__) == 0


# --- commands -----------------------------------------------------------------------------------


def test_cancel_run_cancels_its_tasks_and_only_once(store: Store) -> None:
    store.deploy(CHAIN, "chain.flow")
    run_id = store.start_run("chain", {"name": "x"})
    sent = tasks_of(relay(store))

    store.cancel_run(run_id)

    doc = store.get_run(run_id)
    assert doc["status"] == "cancelled"
    assert {s["status"] for s in doc["steps"] if s["name"] in ("a", "c")} == {"cancelled"}
    # A worker that was running one of them cannot record its result.
    assert store.apply_results([result(sent[0], "completed", {})]).dropped == 1
    with pytest.raises(IllegalTransition) as caught:
        store.cancel_run(run_id)
    assert caught.value.current == "cancelled"
    with pytest.raises(NotFound):
        store.cancel_run(str(uuid.uuid4()))


def test_standalone_tasks_delayed_cancelled_retried(store: Store, clock: Clock, engine: Engine) -> None:
    later = store.create_task("http_request", {"url": "https://x.example"}, run_at=clock.now + 60)
    assert store.get_task(later)["status"] == "retrying"
    assert relay(store) == []
    clock.advance(61)
    store.run_timers()
    (message,) = tasks_of(relay(store))
    assert (message.task_id, message.attempt) == (later, 1)

    store.cancel_task(later)
    with pytest.raises(IllegalTransition):
        store.cancel_task(later)

    once = store.create_task("http_request", {}, max_attempts=1)
    (msg,) = tasks_of(relay(store))
    store.apply_results([result(msg, "failed", error=Failure("network", "refused"))])
    (letter,) = store.list_dead_letters()
    assert store.requeue_dead_letter(letter["id"]) == once
    assert store.get_task(once)["status"] == "pending"
    with pytest.raises(IllegalTransition):
        store.discard_dead_letter(letter["id"])
    assert store.list_dead_letters() == []
    assert count(engine, DeadLetter.__table__) == 1


def test_list_runs_pages_with_a_cursor(store: Store, clock: Clock) -> None:
    store.deploy(ONE, "one.flow")
    ids = []
    for n in range(7):
        clock.advance(1)
        ids.append(store.start_run("one", {"n": n}))
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list_runs(workflow="one", limit=3, cursor=cursor)
        seen.extend(r["id"] for r in page["runs"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    assert store.list_runs(status="completed")["runs"] == []
    with pytest.raises(InvalidParams):
        store.list_runs(cursor="garbage")
