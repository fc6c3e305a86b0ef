"""Retention (``engine.store.prune``, ``flow prune``) on PostgreSQL (and SQLite).

Runs are driven through the real store with an injected clock: old ones finish 60 days ago, live
ones are still running (some started just as long ago). The prune must delete only what finished
before the cutoff, in batches of the size asked for, and leave every live row alone.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, event, func, select

from engine.core.contracts import TASK_EXCHANGE, Failure, ResultMessage, TaskMessage
from engine.store import OutboxMessage, Store, db
from engine.store.models import DeadLetter, Run, Task, TaskLog
from engine.store.prune import parse_age, prune
from tests.integration.conftest import Clock

pytestmark = pytest.mark.integration

ONE = """flow 1
workflow one(n: int) {
  step only: http { method: "GET"  url: "https://one.example/${params.n}" }
}
"""
DAY = 86400.0


def _tasks(store: Store) -> list[TaskMessage]:
    sent: list[OutboxMessage] = []
    while store.relay_outbox(sent.extend, limit=100):
        pass
    return [TaskMessage.decode(m.body) for m in sent if m.exchange == TASK_EXCHANGE]


def _result(task: TaskMessage, status: str, error: Failure | None = None) -> ResultMessage:
    return ResultMessage(task.task_id, task.attempt, task.fencing_token, status,
                         output={"ok": True} if status == "completed" else None, error=error,
                         worker="test", logs=({"level": "info", "message": status},))


def _runs(store: Store, n: int, *, finish: str | None) -> list[str]:
    """``n`` runs of ``one``; ``finish``: "completed", "failed" (dead letter), or None (running)."""
    ids = [store.start_run("one", {"n": i}) for i in range(n)]
    for task in _tasks(store):
        results = [_result(task, "started")]
        if finish == "completed":
            results.append(_result(task, "completed"))
        elif finish == "failed":
            results.append(_result(task, "failed", Failure("invalid_input", "bad", retryable=False)))
        store.apply_results(results)
    return ids


def _count(engine: Engine, model: Any, *where: Any) -> int:
    table = model.__table__
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def test_old_finished_runs_are_pruned_in_batches_and_live_ones_untouched(engine: Engine) -> None:
    # Given: 60 days ago, 7 runs completed and 3 failed (with dead letters and a standalone task),
    # and 2 runs started that are still running; today 4 more completed and 2 are running.
    clock = Clock(1_800_000_000.0)
    store = Store(engine, clock=clock, rng=random.Random(1))
    store.deploy(ONE, "one.flow")
    old_done = _runs(store, 7, finish="completed") + _runs(store, 3, finish="failed")
    old_live = _runs(store, 2, finish=None)
    standalone = store.create_task("noop", {"output": 1}, max_attempts=1)
    (task,) = _tasks(store)
    store.apply_results([_result(task, "started"), _result(task, "completed")])
    clock.now += 60 * DAY
    new_done = _runs(store, 4, finish="completed")
    new_live = _runs(store, 2, finish=None)
    assert _count(engine, DeadLetter) == 3
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    # When: pruning what is older than 30 days, 4 rows per batch
    now = datetime.fromtimestamp(clock.now, timezone.utc)
    dry = prune(engine, timedelta(days=30), batch_size=4, dry_run=True, now=now)
    result = prune(engine, timedelta(days=30), batch_size=4, now=now)

    # Then: the 10 old finished runs, their 10 tasks, their logs and dead letters, and the old
    # standalone task are gone; the dry run counted the same; the live runs are all still there.
    assert result.deleted["runs"] == 10
    assert result.deleted["tasks"] == 11
    assert result.deleted["dead_letters"] == 3
    assert result.deleted["task_logs"] > 0
    assert dry.deleted == result.deleted
    remaining = {r for (r,) in _rows(engine, select(Run.id))}
    assert remaining == set(old_live + new_done + new_live)
    assert not remaining & set(old_done)
    assert _count(engine, Task, Task.id == standalone) == 0
    assert _count(engine, Task, Task.run_id.in_(old_live)) == 2
    assert _count(engine, TaskLog, TaskLog.run_id.in_(old_live + new_done)) > 0
    assert _count(engine, DeadLetter) == 0
    # Batches: 10 runs in 4+4+2, each batch its own DELETE of at most 4 runs.
    run_deletes = [s for s in statements if s.lstrip().upper().startswith("DELETE FROM RUNS")]
    assert len(run_deletes) == 3
    assert result.batches >= 3 + 1 + 1 + 1 + 1
    # And a second prune finds nothing.
    assert prune(engine, timedelta(days=30), batch_size=4, now=now).total == 0
    # The store still works on what is left.
    assert store.get_run(old_live[0])["status"] == "running"


def _rows(engine: Engine, statement: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(statement))


def test_a_parent_run_waits_for_its_child_runs(engine: Engine) -> None:
    # Given: an old finished parent whose child run is still running
    clock = Clock(1_800_000_000.0)
    store = Store(engine, clock=clock)
    store.deploy(ONE, "one.flow")
    (parent,) = _runs(store, 1, finish="completed")
    child = store.start_run("one", {"n": 9}, parent_run_id=parent)
    clock.now += 60 * DAY
    now = datetime.fromtimestamp(clock.now, timezone.utc)

    # When / Then: the parent stays while the child lives (its foreign key would break otherwise)
    assert prune(engine, timedelta(days=30), now=now).deleted["runs"] == 0
    for task in _tasks(store):
        store.apply_results([_result(task, "started"), _result(task, "completed")])
    assert store.get_run(child)["status"] == "completed"
    # the child finished just now: both stay until it too is old
    assert prune(engine, timedelta(days=30), now=now).deleted["runs"] == 0
    later = now + timedelta(days=31)
    assert prune(engine, timedelta(days=30), now=later).deleted["runs"] == 2


def test_flow_prune_command(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from flow.cli.main import main

    db.upgrade(postgres_url)
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    runner = CliRunner()
    dry = runner.invoke(main, ["prune", "--older-than", "30d", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would delete" in dry.output
    done = runner.invoke(main, ["prune", "--older-than", "30d", "--batch-size", "10", "--json"])
    assert done.exit_code == 0, done.output
    assert '"deleted"' in done.output
    bad = runner.invoke(main, ["prune", "--older-than", "soon"])
    assert bad.exit_code == 2 and "30d" in bad.output
    short = runner.invoke(main, ["prune", "--older-than", "10m"])
    assert short.exit_code == 2 and "catch-up window" in short.output


@pytest.mark.parametrize("text, seconds", [("30d", 30 * DAY), ("12h", 43200), ("90m", 5400), ("2w", 14 * DAY),
                                           ("7", 7 * DAY), ("45s", 45)])
def test_parse_age(text: str, seconds: float) -> None:
    assert parse_age(text).total_seconds() == seconds
