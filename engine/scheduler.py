"""The scheduler process: fire what is due, sleep until the next fire (at most a second), repeat.

Several schedulers may run at once: ``ScheduleStore.fire_due`` locks each schedule it fires and
the fire's unique key makes a second fire of the same time a no-op, so no leader is needed.
Delayed retries of tasks are not the scheduler's: the coordinator's timer pass owns them.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

from sqlalchemy.exc import SQLAlchemyError

from engine import metrics
from engine.settings import Settings
from engine.store_schedules import FireOutcome, ScheduleStore, StoreLauncher

log = logging.getLogger("flow.scheduler")

# Schedules created or resumed by another process are seen within this many seconds.
MAX_SLEEP = 1.0
# Never spin: even when a fire is due "now", wait this long between passes that found nothing.
MIN_SLEEP = 0.01
# After a database error, wait before trying again (PostgreSQL restarting, a network blip).
ERROR_BACKOFF = 2.0


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

    @classmethod
    def from_store(cls, store: Any, settings: Settings, clock: Callable[[], float] = time.time) -> "Scheduler":
        """A scheduler over ``engine.store.Store`` (its engine, its runs and tasks)."""
        schedules = ScheduleStore(store.engine, StoreLauncher(store), clock=clock,
                                  catchup_window=settings.catchup_window_seconds)
        return cls(schedules, settings)

    def tick(self) -> float:
        """One pass: fire what is due; returns how long to sleep before the next pass."""
        outcome = self.schedules.fire_due(limit=self.limit)
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
            if delay > 0:
                stop.wait(delay)
        log.info("scheduler stopped")

    def _until_next_fire(self) -> float:
        due = self.schedules.next_due_at()
        if due is None:
            return MAX_SLEEP
        now = datetime.fromtimestamp(self.schedules.clock(), timezone.utc)
        return min(MAX_SLEEP, max(MIN_SLEEP, (due - now).total_seconds()))
