"""The tests' one HTTP target (tests/http_sink.py): once per Idempotency-Key, the fault suite's
paths by default, a responder of the test's own otherwise, and the poison path."""

from __future__ import annotations

import threading

import httpx
import pytest

from tests.http_sink import Request, Sink


@pytest.fixture
def sink():
    made: list[Sink] = []

    def make(**options) -> Sink:
        s = Sink(**options).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def test_a_key_has_its_effect_once_and_replays_get_the_first_answer(sink) -> None:
    s = sink()
    first = httpx.post(f"{s.url}/s1", json={"run": "r"}, headers={"Idempotency-Key": "k1"})
    again = httpx.post(f"{s.url}/s1", json={"run": "other"}, headers={"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() == {"step": "s1", "path": "/s1"}
    assert [r.body for r in s.effects()] == [{"run": "r"}]
    assert [r.replay for r in s.sent("/s1")] == [False, True] and len(s.snapshot()) == 2


def test_the_fault_paths(sink) -> None:
    s = sink()
    assert httpx.post(f"{s.url}/fail").status_code == 400
    assert httpx.delete(f"{s.url}/undo/s2").status_code == 200
    assert httpx.post(f"{s.url}/undo_fail/s1").status_code == 400
    assert httpx.post(f"{s.url}/slow", json={"delay": 0.05}).json() == {"step": "slow"}
    assert [(r.method, r.path) for r in s.effects()] == [
        ("POST", "/fail"), ("DELETE", "/undo/s2"), ("POST", "/undo_fail/s1"), ("POST", "/slow")]
    assert [r.path for r in s.effects("/undo", method="DELETE")] == ["/undo/s2"]


def test_a_responder_of_the_test_and_5xx_not_cached(sink) -> None:
    answers = iter([(503, {"error": "busy"}), (200, {"ok": True})])
    seen: list[Request] = []
    s = sink(respond=lambda r: next(answers), hook=seen.append)
    assert httpx.put(f"{s.url}/x", content=b"not json", headers={"Idempotency-Key": "k"}).status_code == 503
    assert httpx.put(f"{s.url}/x", content=b"not json", headers={"Idempotency-Key": "k"}).json() == {"ok": True}
    assert httpx.put(f"{s.url}/x", headers={"Idempotency-Key": "k"}).json() == {"ok": True}  # cached now
    assert [r.body for r in seen] == ["not json", "not json"], "the hook sees the requests that are answered anew"
    assert [r.replay for r in s.snapshot()] == [False, False, True]


def test_poison_calls_back_with_the_client_port_and_never_answers(sink) -> None:
    ports: list[int] = []
    called = threading.Event()
    s = sink(on_poison=lambda port: (ports.append(port), called.set()))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{s.url}/poison", json={}, timeout=0.5)
    assert called.wait(2) and ports[0] > 0
    assert [r.path for r in s.snapshot()] == ["/poison"]
