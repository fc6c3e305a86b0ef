"""How many deliveries a worker holds: as many as its handler threads can start soon.

A delivery held by a worker waits there for a free handler thread while other workers may be
idle, and comes back redelivered if the worker dies. A window sized for quick steps (a few ms
each) is far too big for slow ones: 32 deliveries for 8 threads of 1.5 s steps wait up to 6 s.
So the window follows the steps' measured duration: the handler threads plus what they finish
within ``START_WITHIN`` seconds, between ``threads + 1`` and the ``FLOW_PREFETCH`` cap.
"""

from __future__ import annotations

import math

# A held delivery should start within this many seconds.
START_WITHIN = 0.5
# Weight of the newest duration in the running average.
SMOOTHING = 0.2


class PrefetchWindow:
    """The prefetch count for ``threads`` handler threads, capped at ``cap``; ``observe`` each
    finished handler's duration, read ``size``."""

    def __init__(self, threads: int, cap: int) -> None:
        self.threads = max(1, threads)
        self.cap = max(1, cap)
        self._average: float | None = None

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self._average = seconds if self._average is None else (
            SMOOTHING * seconds + (1 - SMOOTHING) * self._average)

    @property
    def size(self) -> int:
        if self._average is None:
            extra = self.threads  # nothing measured yet: one delivery waiting per thread
        else:
            extra = math.ceil(self.threads * START_WITHIN / max(self._average, 1e-3))
        return max(1, min(self.cap, max(self.threads + 1, self.threads + extra)))
