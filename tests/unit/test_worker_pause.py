"""A worker paused as a whole (SIGSTOP, a VM freeze) does not count the pause against its handlers'
deadlines: declaring a timeout on resume would retry, under a new idempotency key, an effect that
may already have happened."""

from __future__ import annotations

import time
from concurrent.futures import Future

from engine.core.contracts import ResultMessage, TaskMessage
from engine.settings import Settings
from workers.consumer import TaskClock, Worker, _InFlight
from workers.handler_api import TaskContext


class _Delivery:
    acked = False

    def ack(self) -> None:
        self.acked = True


def _paused_clock(seconds: float) -> TaskClock:
    clock = TaskClock()
    clock._last_turn -= seconds  # the loop last turned `seconds` ago: the process was paused
    return clock


def test_the_task_clock_leaves_out_a_pause_even_before_the_loop_turns() -> None:
    clock = _paused_clock(30)
    before = time.monotonic() - clock._paused
    seen_by_a_handler = clock()  # a handler thread reads it first, right after SIGCONT
    assert before - seen_by_a_handler > 29
    assert clock.turn() > 29  # then the loop turns and takes the pause out for good
    assert abs(clock() - seen_by_a_handler) < 0.1  # the same clock, before and after the turn


def test_a_handler_deadline_survives_a_pause() -> None:
    clock = TaskClock()
    context = TaskContext(TaskMessage("t", "noop", 1, 1, {}, "t:1"), Settings("sqlite://", "memory://"), {},
                          deadline=clock() + 1.0, clock=clock)
    clock._last_turn -= 30  # paused 30 s with 1 s left
    assert context.remaining() and context.remaining() > 0.5


def _worker_with_running_task() -> tuple[Worker, _InFlight, list[ResultMessage]]:
    worker = Worker(Settings(database_url="sqlite://", broker_url="memory://"), ["noop"])
    published: list[ResultMessage] = []
    worker._publish = published.append  # type: ignore[method-assign]  # record instead of sending
    task = TaskMessage("t1", "noop", 1, 1, {}, "t1:1", timeout=1.0)
    running: Future[ResultMessage] = Future()
    running.set_running_or_notify_cancel()  # a handler still running, never finishing here
    entry = _InFlight(_Delivery(), task, started_at=time.monotonic(), deadline=None, future=running)
    worker._inflight[id(running)] = entry
    return worker, entry, published


def test_a_pause_of_the_process_does_not_expire_a_handler() -> None:
    worker, entry, published = _worker_with_running_task()
    entry.deadline = worker._clock() + 1.0  # 1 s left when the process was stopped
    worker._clock._last_turn -= 30  # then 30 s of SIGSTOP
    worker._expire_overdue()
    assert published == [] and not entry.message.acked


def test_without_a_pause_an_overdue_handler_is_reported_timed_out() -> None:
    worker, entry, published = _worker_with_running_task()
    entry.deadline = worker._clock() - 10  # overdue by 10 s while the process ran
    worker._expire_overdue()
    assert [r.error.type for r in published if r.error] == ["timeout"]
    assert entry.message.acked
