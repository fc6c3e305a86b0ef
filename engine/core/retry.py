"""Which failures are retried, and after how long (pure).

The coordinator calls :func:`decide` when a worker reports a failed attempt. The step's retry policy
(``dsl.spec.Retry``) is the only authority: the worker's ``retryable`` flag is kept on the failure
record for the dashboard, but a user who lists ``invalid_input`` in ``errors`` gets it retried, and
one who leaves ``network`` out does not.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from dsl.spec import Retry
from engine.core.contracts import Failure


@dataclass(frozen=True)
class RetryDecision:
    retry: bool
    delay: float
    reason: str


def error_matches(error_type: str, classes: Sequence[str]) -> bool:
    """Whether the error class ``error_type`` is one of ``classes``.

    ``http.NNN`` also matches its family ``http.Nxx`` (``http.503`` matches ``http.5xx``); every
    other class matches only itself.
    """
    if error_type in classes:
        return True
    prefix, _, code = error_type.partition(".")
    if prefix == "http" and len(code) == 3 and code.isdigit():
        return f"http.{code[0]}xx" in classes
    return False


def backoff_delay(retry: Retry, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (counting from 1).

    ``min(max_delay, delay * backoff ** (attempt - 1))``; with ``jitter``, uniform in ``[d/2, d]``
    so that many tasks failing together do not come back together. ``rng`` makes jitter
    reproducible in tests; ``None`` uses the module's generator.
    """
    exponent = max(attempt, 1) - 1
    try:
        delay = min(retry.max_delay, retry.delay * retry.backoff**exponent)
    except OverflowError:  # attempt 2000 with backoff 2: the cap applies long before
        delay = retry.max_delay
    delay = max(delay, 0.0)
    if retry.jitter and delay > 0:
        delay = (rng or random).uniform(delay / 2, delay)
    return float(delay)


def decide(
    retry: Retry, attempt: int, failure: Failure, rng: random.Random | None = None
) -> RetryDecision:
    """Retry the failed attempt ``attempt`` (counting from 1) of a task, or give up.

    Retries iff attempts remain and the failure's class is in ``retry.errors``.
    """
    if not error_matches(failure.type, retry.errors):
        allowed = ", ".join(retry.errors) or "none"
        return RetryDecision(
            False, 0.0, f"{failure.type} is not a retryable error class (retryable: {allowed})"
        )
    if attempt >= retry.attempts:
        return RetryDecision(
            False, 0.0, f"{failure.type} on attempt {attempt} of {retry.attempts}: attempts spent"
        )
    delay = backoff_delay(retry, attempt, rng)
    return RetryDecision(
        True,
        delay,
        f"{failure.type} on attempt {attempt} of {retry.attempts}: retrying in {delay:.3g}s",
    )
