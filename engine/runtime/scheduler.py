"""The scheduler process: fire what is due, sleep until the next fire (at most a second), repeat.

Several schedulers may run at once: ``ScheduleStore.fire_due`` locks each schedule it fires and
the fire's unique key makes a second fire of the same time a no-op, so no leader is needed.
Delayed retries of tasks are not the scheduler's: the coordinator's timer pass owns them.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy.exc import SQLAlchemyError

from engine.observability import metrics
from engine.settings import Settings
from engine.store.backfill import start_queued
from engine.store.schedule_deploys import StoreLauncher
from engine.store.schedule_values import FireOutcome
from engine.store.schedules import ScheduleStore

log = logging.getLogger("flow.scheduler")

# Schedules created or resumed by another process are seen within this many seconds.
MAX_SLEEP = 1.0
# Never spin: even when a fire is due "now", wait this long between passes that found nothing.
MIN_SLEEP = 0.01
# After a database error, wait before trying again (PostgreSQL restarting, a network blip).
ERROR_BACKOFF = 2.0
# FLOW_RETENTION_DAYS: seconds between prunes, and how long a stopping scheduler waits for one.
PRUNE_INTERVAL = 3600.0
PRUNE_JOIN = 10.0


class Scheduler:
    """Fires due schedules in a loop until ``stop`` is set.

    Parameters:
        schedules: the ``ScheduleStore`` (its clock is the scheduler's clock).
        settings: for the catch-up window.
        limit: the most fires per pass; a pass that hits it is followed at once by another.
    """

    def __init__(self, schedules: ScheduleStore, settings: Settings | None = None, *, limit: int = 100) -> None:
        self.schedules = schedules
        if settings is not None:
            schedules.catchup_window = settings.catchup_window_seconds
        self.limit = limit
        self.totals = FireOutcome()
        self.retention_days = settings.retention_days if settings is not None else 0.0
        self._pruner: threading.Thread | None = None
        self._next_prune = 0.0

    @classmethod
    def from_store(cls, store: Any, settings: Settings, clock: Callable[[], float] = time.time) -> "Scheduler":
        """A scheduler over ``engine.store.Store`` (its engine, its runs and tasks)."""
        schedules = ScheduleStore(store.engine, StoreLauncher(store), clock=clock,
                                  catchup_window=settings.catchup_window_seconds)
        return cls(schedules, settings)

    def tick(self) -> float:
        """One pass: fire what is due; returns how long to sleep before the next pass."""
        outcome = self.schedules.fire_due(limit=self.limit)
        # Backfills waiting under their max_parallel get the slots their finished runs freed.
        started = start_queued(self.schedules, limit=self.limit)
        if started:
            log.info("backfill fires started", extra={"started": len(started)})
        self.totals += outcome
        metrics.observe_fires(outcome.fired, outcome.missed, outcome.duplicates, outcome.failed)
        if outcome != FireOutcome():
            log.info("schedules fired", extra={"fired": outcome.fired, "missed": outcome.missed,
                                               "duplicates": outcome.duplicates, "failed": outcome.failed})
        if outcome.fired + outcome.duplicates + outcome.failed >= self.limit:
            return 0.0  # more is due than one pass takes
        return self._until_next_fire()

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; a pass in progress finishes (its transaction commits)."""
        log.info("scheduler started")
        while not stop.is_set():
            try:
                delay = self.tick()
            except SQLAlchemyError as exc:
                log.warning("scheduler pass failed, retrying in %.0f s: %s", ERROR_BACKOFF, exc)
                delay = ERROR_BACKOFF
            self._maybe_prune(stop)
            if delay > 0:
                stop.wait(delay)
        if self._pruner is not None:
            self._pruner.join(PRUNE_JOIN)  # it stops after its batch in progress
        log.info("scheduler stopped")

    def _maybe_prune(self, stop: threading.Event) -> None:
        """FLOW_RETENTION_DAYS: prune old finished work every PRUNE_INTERVAL, in a thread of its own
        so that a long prune never delays a fire (see ``engine.store.prune``)."""
        if not self.retention_days or time.monotonic() < self._next_prune:
            return
        if self._pruner is not None and self._pruner.is_alive():
            return
        self._next_prune = time.monotonic() + PRUNE_INTERVAL
        from engine.store.prune import prune

        def body() -> None:
            try:
                prune(self.schedules.engine, timedelta(days=self.retention_days), should_stop=stop.is_set)
            except SQLAlchemyError as exc:
                log.warning("retention prune failed; next try in %.0f s: %s", PRUNE_INTERVAL, exc)

        self._pruner = threading.Thread(target=body, name="flow-prune", daemon=True)
        self._pruner.start()

    def _until_next_fire(self) -> float:
        due = self.schedules.next_due_at()
        if due is None:
            return MAX_SLEEP
        now = datetime.fromtimestamp(self.schedules.clock(), timezone.utc)
        return min(MAX_SLEEP, max(MIN_SLEEP, (due - now).total_seconds()))
