"""``flow.cli.common.wait_for_database``: capped exponential backoff, a log line per try, only for
"cannot reach the database" errors, and a stop that ends the wait (issue 16 §2)."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError, ProgrammingError

from engine.settings import Settings
from flow.cli.common import STARTUP_BACKOFF_MAX, wait_for_database

SETTINGS = Settings(database_url="postgresql+psycopg2://flow:secret@db.internal/flow", broker_url="memory://")


def _refused() -> OperationalError:
    return OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))


def test_backoff_doubles_up_to_the_cap_and_each_try_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    failures = iter(range(9))
    delays: list[float] = []

    def attempt() -> str:
        if next(failures, None) is not None:
            raise _refused()
        return "up"

    with caplog.at_level(logging.INFO, logger="flow.cli"):
        assert wait_for_database(SETTINGS, attempt, role="coordinator",
                                 sleep=lambda d: delays.append(d) or False) == "up"
    assert delays == [0.5, 1, 2, 4, 8, 16, STARTUP_BACKOFF_MAX, STARTUP_BACKOFF_MAX, STARTUP_BACKOFF_MAX]
    waits = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(waits) == 9
    assert "coordinator: the database at postgresql+psycopg2://flow:***@db.internal/flow is unreachable" in waits[0]
    assert "secret" not in caplog.text and "retrying in 0.5s (try 1)" in waits[0]
    assert "answers; starting" in caplog.records[-1].getMessage()


def test_other_errors_are_not_waited_for() -> None:
    def attempt() -> None:
        raise ProgrammingError("SELECT", {}, Exception("relation does not exist"))

    with pytest.raises(ProgrammingError):
        wait_for_database(SETTINGS, attempt, role="scheduler", sleep=lambda d: pytest.fail("waited"))


def test_a_stop_ends_the_wait() -> None:
    def attempt() -> None:
        raise _refused()

    assert wait_for_database(SETTINGS, attempt, role="flow up", sleep=lambda d: True) is None
