"""The worker's prefetch window follows the steps' duration (workers/prefetch.py)."""

from __future__ import annotations

from workers.prefetch import PrefetchWindow


def test_before_any_step_finished_one_delivery_waits_per_thread() -> None:
    assert PrefetchWindow(8, 32).size == 16


def test_quick_steps_fill_the_window_up_to_the_cap() -> None:
    window = PrefetchWindow(4, 32)
    for _ in range(10):
        window.observe(0.002)
    assert window.size == 32


def test_slow_steps_hold_little_more_than_the_threads() -> None:
    window = PrefetchWindow(8, 32)
    for _ in range(20):
        window.observe(1.5)
    # 8 threads finish 8 x 0.5 / 1.5 = 2.7 steps within half a second: 3 more than the threads
    assert window.size == 11


def test_very_slow_steps_still_keep_one_delivery_ready() -> None:
    window = PrefetchWindow(8, 32)
    window.observe(600.0)
    assert window.size == 9


def test_a_low_cap_wins() -> None:
    window = PrefetchWindow(8, 4)
    window.observe(0.001)
    assert window.size == 4
