"""Durations printed as the language writes them: ``format_duration`` is the inverse of ``parse_duration``."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from dsl.build_base import format_duration, parse_duration


@pytest.mark.parametrize("seconds, text", [
    (1.0, "1s"), (60.0, "1m"), (5400.0, "1h30m"), (86_400.0, "1d"), (0.25, "250ms"), (90061.5, "1d1h1m1s500ms"),
    (0.0, "0s"), (0.0001, "0.0001"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=1, max_value=10**10))
def test_a_printed_duration_parses_back_to_the_same_seconds(millis: int) -> None:
    seconds = parse_duration(f"{millis}ms")
    assert seconds is not None
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
