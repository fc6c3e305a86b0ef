"""engine.core.retry: error classes, backoff and the retry decision (pure, no I/O)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dsl.spec import DEFAULT_RETRYABLE_ERRORS, Retry
from engine.core.contracts import Failure
from engine.core.retry import backoff_delay, decide, error_matches


@pytest.mark.parametrize(
    "error_type, classes, expected",
    [
        ("http.503", ["http.5xx"], True),
        ("http.503", ["http.503"], True),
        ("http.503", ["http.502"], False),
        ("http.503", ["http.4xx"], False),
        ("http.429", ["http.429"], True),
        ("http.429", ["http.4xx"], True),
        ("http.429", ["http.5xx"], False),
        ("http.404", list(DEFAULT_RETRYABLE_ERRORS), False),
        ("http.429", list(DEFAULT_RETRYABLE_ERRORS), True),
        ("timeout", ["timeout"], True),
        ("network", ["network"], True),
        ("invalid_input", ["invalid_input"], True),
        ("handler", ["handler"], True),
        ("handler", ["timeout", "network"], False),
        ("timeout", [], False),
        # A family name only matches itself; "http.5xx" is not a code of its own family's pattern.
        ("http.5xx", ["http.5xx"], True),
        ("http.abc", ["http.axx"], False),
    ],
)
def test_error_matches(error_type: str, classes: list[str], expected: bool) -> None:
    assert error_matches(error_type, classes) is expected


def test_backoff_without_jitter_is_exponential_and_capped() -> None:
    retry = Retry(attempts=10, delay=1.0, backoff=2.0, max_delay=10.0, jitter=False)
    assert [backoff_delay(retry, n, None) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_survives_huge_attempt_numbers() -> None:
    retry = Retry(attempts=10**6, delay=1.0, backoff=2.0, max_delay=30.0, jitter=False)
    assert backoff_delay(retry, 100_000, None) == 30.0


@given(
    attempt=st.integers(min_value=1, max_value=60),
    delay=st.floats(min_value=0.0, max_value=100.0),
    backoff=st.floats(min_value=1.0, max_value=5.0),
    max_delay=st.floats(min_value=0.0, max_value=1000.0),
    seed=st.integers(),
)
def test_jitter_stays_between_half_and_full_delay(
    attempt: int, delay: float, backoff: float, max_delay: float, seed: int
) -> None:
    plain = Retry(attempts=99, delay=delay, backoff=backoff, max_delay=max_delay, jitter=False)
    jittered = Retry(attempts=99, delay=delay, backoff=backoff, max_delay=max_delay, jitter=True)
    d = backoff_delay(plain, attempt, None)
    assert d <= max_delay
    assert d / 2 <= backoff_delay(jittered, attempt, random.Random(seed)) <= d


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    retry = Retry(jitter=True)
    assert backoff_delay(retry, 3, random.Random(7)) == backoff_delay(retry, 3, random.Random(7))


def test_retryable_failure_with_attempts_left_is_retried_after_the_backoff() -> None:
    # Given a policy of 3 attempts without jitter
    retry = Retry(attempts=3, delay=2.0, backoff=3.0, jitter=False)
    # When the second attempt fails with a 503
    decision = decide(retry, 2, Failure(type="http.503", message="unavailable"))
    # Then it is retried after delay * backoff
    assert decision.retry is True
    assert decision.delay == 6.0
    assert "http.503" in decision.reason


def test_last_attempt_is_not_retried() -> None:
    decision = decide(Retry(attempts=3), 3, Failure(type="timeout", message="slow"))
    assert decision.retry is False
    assert "attempts spent" in decision.reason


def test_retry_1_means_no_retry() -> None:
    assert decide(Retry(attempts=1), 1, Failure(type="network", message="reset")).retry is False


def test_class_outside_the_policy_is_not_retried() -> None:
    decision = decide(Retry(attempts=5), 1, Failure(type="http.404", message="not found"))
    assert decision.retry is False
    assert "not a retryable error class" in decision.reason


def test_the_policy_wins_over_the_workers_retryable_flag() -> None:
    # The worker thinks invalid input will not get better, but the user asked to retry it.
    policy = Retry(attempts=3, errors=("invalid_input",), jitter=False)
    failure = Failure(type="invalid_input", message="bad", retryable=False)
    assert decide(policy, 1, failure).retry is True
    # And a "retryable" network error is not retried when the user left network out.
    no_network = Retry(attempts=3, errors=("timeout",))
    assert decide(no_network, 1, Failure(type="network", message="x", retryable=True)).retry is False
