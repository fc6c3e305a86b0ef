"""A worker paused as a whole (SIGSTOP, a VM freeze) does not count the pause against its handlers'
deadlines: declaring a timeout on resume would retry, under a new idempotency key, an effect that
may already have happened."""

from __future__ import annotations

import time
from concurrent.futures import Future

from engine.contracts import ResultMessage, TaskMessage
from engine.settings import Settings
from workers.consumer import Worker, _InFlight


class _Delivery:
    acked = False

    def ack(self) -> None:
        self.acked = True


def _worker_with_overdue_task() -> tuple[Worker, _InFlight, list[ResultMessage]]:
    worker = Worker(Settings(database_url="sqlite://", broker_url="memory://"), ["noop"])
    published: list[ResultMessage] = []
    worker._publish = published.append  # type: ignore[method-assign]  # record instead of sending
    task = TaskMessage("t1", "noop", 1, 1, {}, "t1:1", timeout=1.0)
    running: Future[ResultMessage] = Future()
    running.set_running_or_notify_cancel()  # a handler still running, never finishing here
    now = time.monotonic()
    entry = _InFlight(_Delivery(), task, started_at=now - 20, deadline=now - 10, future=running)
    worker._inflight[id(running)] = entry
    return worker, entry, published


def test_a_pause_of_the_process_extends_the_deadlines() -> None:
    worker, entry, published = _worker_with_overdue_task()
    worker._last_check = time.monotonic() - 30  # the pump did not turn for 30 s: paused
    worker._expire_overdue()
    assert published == [] and not entry.message.acked
    assert entry.deadline is not None and entry.deadline > time.monotonic() - 10 + 25


def test_without_a_pause_an_overdue_handler_is_reported_timed_out() -> None:
    worker, entry, published = _worker_with_overdue_task()
    worker._last_check = time.monotonic()  # the pump turned just now
    worker._expire_overdue()
    assert [r.error.type for r in published if r.error] == ["timeout"]
    assert entry.message.acked
