"""The world of a workflow test: the real store and planner, an in-memory broker, mocked workers
and a virtual clock, driven in one thread until nothing more can happen.

One pass: publish the outbox into the in-memory broker; hand every task message to the mocked
workers and apply their results as one batch (the coordinator's path); answer the approvals the
test answers; and when all is quiet, jump the clock to the next timer (a retry's delay, a sleep,
an approval's timeout, the run's deadline) and run the timers. Deterministic: the same test
gives the same run every time (the store's jitter has a seeded random source).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from dsl.spec import WorkflowSpec
from engine.core.contracts import TASK_EXCHANGE, TaskMessage
from engine.store import OutboxMessage, Store
from engine.store.context import runs, tasks, to_datetime
from engine.store.schedule_deploys import StoreLauncher
from engine.store.schedules import ScheduleStore
from engine.store.task_rows import INTERNAL_TASK_TYPES
from flow.testing.clock import VirtualClock
from flow.testing.executor import MockedWorkers

# A run that is still moving after this many passes loops forever (a schedule of retries with
# no end cannot be: attempts are bounded); the test fails instead of hanging.
MAX_PASSES = 100_000


class Stalled(Exception):
    """The simulation did not settle within ``MAX_PASSES`` passes."""


@dataclass(frozen=True)
class Settled:
    """How the simulation ended: the virtual seconds it took and the passes it made."""

    elapsed: float
    passes: int


class InMemoryBroker:
    """The outbox relay's publish target: task messages wait here for the mocked workers."""

    def __init__(self) -> None:
        self._tasks: list[TaskMessage] = []
        self.dead_letters: list[OutboxMessage] = []

    def publish_batch(self, messages: list[OutboxMessage]) -> None:
        for message in messages:
            if message.exchange == TASK_EXCHANGE:
                self._tasks.append(TaskMessage.decode(message.body))
            else:
                self.dead_letters.append(message)

    def take(self) -> list[TaskMessage]:
        taken, self._tasks = self._tasks, []
        return taken


class FullDelays(random.Random):
    """The store's random source in tests: jitter always gives the full delay.

    Runs of several tests share one world; with real jitter the delays a run sees would depend on
    which other tests ran beside it. The policy's full delay keeps each run's timing its own.
    """

    def uniform(self, a: float, b: float) -> float:
        return max(a, b)


class _Launcher(StoreLauncher):
    """The scheduler's launcher, which also tells the world whose mocks the fired run answers to."""

    def __init__(self, store: Store, workers: MockedWorkers, registry: dict[str, MockedWorkers]) -> None:
        super().__init__(store)
        self._answering = workers
        self._registry = registry

    def start_run(self, workflow: str, params: dict[str, Any], *, idempotency_key: str,
                  scheduled_at: datetime, backfill_id: str | None = None) -> str:
        run_id = super().start_run(workflow, params, idempotency_key=idempotency_key, scheduled_at=scheduled_at,
                                   backfill_id=backfill_id)
        self._registry[run_id] = self._answering
        return run_id


class World:
    """A store on the sandbox database, with a virtual clock, an in-memory broker, and the mocked
    workers of each run started in it (the runs of several tests move side by side, as runs do
    under one coordinator; each answers to its own test's mocks)."""

    def __init__(self, engine: Engine, start: float) -> None:
        self.clock = VirtualClock(start)
        self.store = Store(engine, clock=self.clock, rng=FullDelays())
        self.broker = InMemoryBroker()
        self._workers: dict[str, MockedWorkers] = {}  # by run id; child runs map to their root's
        # Approval tasks whose mock outcome was taken (each waiting approval takes one).
        self._decided: set[str] = set()

    def start(self, workflow: str, params: dict[str, Any], workers: MockedWorkers,
              scheduled_at: str | None = None) -> str:
        """Start a run whose tasks ``workers`` answer (as a schedule's fire, when ``scheduled_at``
        is given); its id. Raises ``InvalidParams``."""
        run_id = self.store.start_run(workflow, params, scheduled_at=scheduled_at)
        self._workers[run_id] = workers
        return run_id

    def start_all(self, workflow: str, runs_of: list[tuple[dict[str, Any], MockedWorkers]]) -> list[str]:
        """Start one run per ``(params, workers)`` in one transaction; their ids. Raises
        ``InvalidParams`` (then none is started: start them one by one to see which)."""
        run_ids = self.store.start_runs(workflow, [params for params, _ in runs_of])
        for run_id, (_, workers) in zip(run_ids, runs_of):
            self._workers[run_id] = workers
        return run_ids

    def fire(self, spec: WorkflowSpec, index: int, workers: MockedWorkers) -> str:
        """Register ``spec``'s schedules as a deploy does, jump the clock to the first fire of the
        ``index``-th (from 1) and let the schedule store fire it, as the scheduler would; the id
        of the run it started (with the schedule's params and the fire time as `scheduled_at`)."""
        launcher = _Launcher(self.store, workers, self._workers)
        schedules = ScheduleStore(self.store.engine, launcher, clock=self.clock)
        version = int(self.store.get_version(spec.name)["version"])
        schedule_id = schedules.sync_workflow(spec.name, version, spec.schedules)[index - 1]
        due = schedules.get(schedule_id).next_fire_at
        if due is None:
            raise Stalled(f"schedule {index} of {spec.name} never fires after the test's start")
        self.clock.advance_to(due.timestamp())
        schedules.fire_due()
        fired = schedules.fires(schedule_id, limit=1)
        if not fired or not fired[0]["run_id"]:
            raise Stalled(f"schedule {index} of {spec.name} did not start a run: {fired[0] if fired else 'no fire'}")
        return str(fired[0]["run_id"])

    def settle(self) -> Settled:
        """Move every run until it ends or waits for something no timer brings (an approval
        nobody answers, say). Raises ``Stalled``."""
        for passes in range(1, MAX_PASSES + 1):
            self.store.relay_outbox(self.broker.publish_batch, limit=100_000)
            messages = self.broker.take()
            if messages:
                self.store.apply_results([self._workers_of(m.run_id).answer(m) for m in messages])
                continue
            if self._answer_approvals():
                continue
            due = self._next_timer()
            if due is None:
                return Settled(self.clock.elapsed, passes)
            self.clock.advance_to(due)
            self.store.run_timers(limit=100_000)
        raise Stalled(f"the runs were still moving after {MAX_PASSES} passes of the simulation")

    def _workers_of(self, run_id: str | None) -> MockedWorkers:
        """The workers of ``run_id``'s test: a subflow's child run answers to its root's mocks."""
        if run_id is None:
            raise Stalled("a task without a run reached the test's workers")
        if run_id not in self._workers:
            with self.store.engine.connect() as conn:
                parent = conn.execute(select(runs.c.parent_run_id).where(runs.c.id == run_id)).scalar()
                conn.rollback()
            self._workers[run_id] = self._workers_of(parent)
        return self._workers[run_id]

    def _answer_approvals(self) -> bool:
        answered = False
        for task_id, run_id, step, item in self._waiting_approvals():
            if task_id in self._decided:
                continue
            workers = self._workers_of(run_id)
            mock = workers.mock_for(step, "step", item)
            if mock is None:
                continue  # no mock: the approval waits (for its timeout, or for ever)
            outcome = workers.next_outcome(mock, item)
            self._decided.add(task_id)
            if outcome.kind not in ("approve", "reject"):
                continue  # `timeout`: nobody answers; the approval's timer fails it
            self.store.approve_step(run_id, step, outcome.kind == "approve", "flow test",
                                    outcome.comment, item=item)
            answered = True
        return answered

    def _waiting_approvals(self) -> list[tuple[str, str, str, int | None]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                select(tasks.c.id, tasks.c.run_id, tasks.c.step, tasks.c.item)
                .where(tasks.c.task_type == "approval", tasks.c.status == "processing")
                .order_by(tasks.c.created_at, tasks.c.id)
            ).all()
            conn.rollback()
        return [(str(t), str(r), str(s), i) for t, r, s, i in rows]

    def _next_timer(self) -> float | None:
        """The earliest instant at which a timer has something to do, if any."""
        waiting_internal = (tasks.c.status == "processing") & tasks.c.task_type.in_(sorted(INTERNAL_TASK_TYPES))
        due_task = select(func.min(tasks.c.next_attempt_at)).where(
            (tasks.c.status == "retrying") | waiting_internal, tasks.c.next_attempt_at.is_not(None))
        deadline = select(func.min(runs.c.deadline)).where(runs.c.status == "running", runs.c.deadline.is_not(None))
        with self.store.engine.connect() as conn:
            instants = conn.execute(select(due_task.scalar_subquery(), deadline.scalar_subquery())).one()
            conn.rollback()
        found = [moment.timestamp() for moment in map(to_datetime, instants) if moment is not None]
        return min(found) if found else None
