"""Structured logs (``engine.observability.logs``): the JSON shape, the terminal format, no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from engine.observability.logs import log_context, setup_logging
from engine.settings import Settings

ENV = {
    "FLOW_LOG_FORMAT": "json",
    "FLOW_STEP_SECRET_STRIPE_KEY": "sk_live_abcdef123456",
    "FLOW_API_TOKEN": "tok-0123456789",
    "DATABASE_URL": "postgresql+psycopg2://flow:db-p%40ss-word@db:5432/flow",
}


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def capture() -> Iterator[Any]:
    """``capture(env, stream)`` installs Flow's handler on ``stream``; removed afterwards."""
    root = logging.getLogger()
    installed: list[logging.Handler] = []
    level = root.level

    def install(env: dict[str, str], stream: io.StringIO) -> io.StringIO:
        installed.append(setup_logging(Settings.from_env(env), stream=stream))
        return stream

    yield install
    for handler in installed:
        root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_the_ids(capture: Any) -> None:
    out = capture(ENV, io.StringIO())
    log = logging.getLogger("flow.test")

    log.info("step %s done", "charge", extra={"run_id": "r-1", "task_id": "t-1", "step": "charge"})
    with log_context(run_id="r-2", task_id="t-2", step="ship", attempt=2):
        log.warning("slow")

    first, second = lines(out)
    assert set(first) == {"time", "level", "logger", "message", "run_id", "task_id", "step"}
    assert first["message"] == "step charge done" and first["level"] == "info" and first["logger"] == "flow.test"
    assert first["time"].endswith("+00:00")
    assert (second["run_id"], second["task_id"], second["step"], second["attempt"]) == ("r-2", "t-2", "ship", 2)
    logging.getLogger("flow.test").info("after")
    assert "run_id" not in lines(out)[-1]  # the context ended with the block


def test_secrets_tokens_and_passwords_are_masked(capture: Any) -> None:
    out = capture(ENV, io.StringIO())
    log = logging.getLogger("flow.test")

    log.info("calling with %s", "sk_live_abcdef123456")
    log.info("header Authorization: Bearer abc.def-ghi_123 sent; token tok-0123456789")
    log.info("connecting to amqp://guest:hunter22@rabbit:5672//")
    log.info("db password is db-p@ss-word", extra={"data": {"key": "sk_live_abcdef123456"}})
    try:
        raise ValueError("secret sk_live_abcdef123456 in an exception")
    except ValueError:
        log.exception("failed")

    text = out.getvalue()
    for secret in ("sk_live_abcdef123456", "abc.def-ghi_123", "tok-0123456789", "hunter22", "db-p@ss-word"):
        assert secret not in text, secret
    messages = [entry["message"] for entry in lines(out)]
    assert messages[0] == "calling with ***"
    assert "Bearer ***" in messages[1]
    assert "amqp://guest:***@rabbit" in messages[2]
    assert "exception" in lines(out)[-1]


def test_text_on_a_terminal_json_when_piped(capture: Any) -> None:
    terminal = capture({"FLOW_LOG_FORMAT": "auto"}, Tty())
    logging.getLogger("flow.test").info("hello", extra={"run_id": "r-9"})
    line = terminal.getvalue().strip()
    assert "INFO" in line and "flow.test: hello" in line and "[run_id=r-9]" in line
    with pytest.raises(ValueError):
        json.loads(line)

    piped = capture({"FLOW_LOG_FORMAT": "auto"}, io.StringIO())
    logging.getLogger("flow.test").info("hello")
    assert lines(piped)[-1]["message"] == "hello"


def test_setup_twice_replaces_flows_handler(capture: Any) -> None:
    first = capture(ENV, io.StringIO())
    second = capture(ENV, io.StringIO())
    logging.getLogger("flow.test").info("once")
    assert first.getvalue() == ""
    assert len(lines(second)) == 1
