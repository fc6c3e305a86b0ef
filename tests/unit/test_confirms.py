"""``engine.runtime.confirms.Confirms``: acks (single and multiple), nacks, and the timeout, against
a stand-in channel whose broker answers as the test says (the RabbitMQ side is covered by every
integration test that publishes)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest

from engine.runtime.confirms import Confirms, Nacked


class Channel:
    def __init__(self) -> None:
        self.events: dict[str, set[Callable[..., Any]]] = {"basic_ack": set(), "basic_nack": set()}
        self.confirm_mode = False

    def confirm_select(self) -> None:
        self.confirm_mode = True

    def broker(self, kind: str, tag: int, multiple: bool = False) -> None:
        for callback in self.events[kind]:
            callback(tag, multiple)


class Connection:
    """``drain_events`` delivers the broker's next answer, or times out when there is none."""

    def __init__(self, channel: Channel, answers: list[tuple[str, int, bool]]) -> None:
        self.channel, self.answers = channel, answers

    def drain_events(self, timeout: float) -> None:
        if not self.answers:
            raise socket.timeout()
        self.channel.broker(*self.answers.pop(0))


def test_a_batch_is_confirmed_by_one_multiple_ack() -> None:
    channel = Channel()
    confirms = Confirms(channel)
    assert channel.confirm_mode
    for _ in range(5):
        confirms.sent()
    confirms.wait(Connection(channel, [("basic_ack", 2, False), ("basic_ack", 5, True)]))
    assert confirms.pending == 0


def test_a_nack_raises_after_everything_was_answered() -> None:
    channel = Channel()
    confirms = Confirms(channel)
    for _ in range(3):
        confirms.sent()
    with pytest.raises(Nacked, match="refused 1 message"):
        confirms.wait(Connection(channel, [("basic_nack", 2, False), ("basic_ack", 3, True)]))
    confirms.sent()  # the next batch starts clean
    confirms.wait(Connection(channel, [("basic_ack", 4, False)]))


def test_no_confirm_within_the_timeout_raises_socket_timeout() -> None:
    channel = Channel()
    confirms = Confirms(channel)
    confirms.sent()
    with pytest.raises(socket.timeout, match="no confirm"):
        confirms.wait(Connection(channel, []), timeout=0.05)
