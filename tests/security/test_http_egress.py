"""HTTP steps: every non-public target refused in every spelling, through DNS and redirects, and
proved by a ``socket.connect`` audit hook: no connection ever left loopback. Bodies over the cap
and slow responses are bounded."""

from __future__ import annotations

import ipaddress
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest

from engine.core.contracts import TaskMessage
from engine.settings import Settings
from workers.handlers import http
from workers.handler_api import HandlerError, TaskContext

CONNECTS: list[Any] = []


def _hook(event: str, args: tuple) -> None:
    if event == "socket.connect":
        CONNECTS.append(args[1])


sys.addaudithook(_hook)


def assert_only_loopback() -> None:
    for address in CONNECTS:
        host = address[0] if isinstance(address, tuple) else address
        assert ipaddress.ip_address(host).is_loopback, f"a connection left loopback: {address}"


@pytest.fixture(autouse=True)
def _audit() -> Iterator[None]:
    CONNECTS.clear()
    yield
    assert_only_loopback()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/redirect"):
            target = self.path.split("to=", 1)[1]
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/big":
            body = b"x" * (3 * 1024 * 1024)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()  # no Content-Length: the cap must hold while streaming
            try:
                self.wfile.write(body)
            except OSError:
                pass
            self.close_connection = True
        elif self.path == "/slow":
            time.sleep(5)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def ctx(payload: dict[str, Any], allow: tuple[str, ...] = (), cap: int = 1024 * 1024) -> TaskContext:
    settings = Settings(database_url="sqlite://", broker_url="memory://", http_allowlist=allow,
                        http_max_response_bytes=cap)
    message = TaskMessage("t1", "http_request", 1, 1, payload, "t1:1", timeout=10)
    return TaskContext(message=message, settings=settings, payload=payload, secrets={}, raw_payload=payload)


def refused(payload: dict[str, Any], resolver: Any = None, allow: tuple[str, ...] = ()) -> Any:
    with pytest.raises(HandlerError) as caught:
        if resolver is None:
            http.handle(ctx(payload, allow))
        else:
            http.handle(ctx(payload, allow), resolver=resolver)
    return caught.value.failure


LITERALS = [
    "http://127.0.0.1/", "http://127.1/", "http://2130706433/", "http://0x7f000001/", "http://0177.0.0.1/",
    "http://0x7f.0.0.1/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/",
    "http://0.0.0.0/", "http://0/", "http://[::]/", "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/", "http://2852039166/", "http://0xa9fea9fe/", "http://[fe80::1]/",
    "http://10.0.0.1/", "http://172.16.0.1/", "http://192.168.0.1/", "http://100.64.0.1/",
    "http://[fd00::1]/", "http://[fd00:ec2::254]/", "http://localhost./", "https://127.0.0.1:443/",
]


@pytest.mark.parametrize("url", LITERALS)
def test_non_public_literal_refused_without_connecting(url: str) -> None:
    def resolver(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]  # "localhost." resolves to loopback: refused after resolution

    failure = refused({"url": url}, resolver)
    assert failure.type == "invalid_input" and not failure.retryable
    assert CONNECTS == []


@pytest.mark.parametrize("answer", ["127.0.0.1", "169.254.169.254", "10.1.2.3", "::1", "::ffff:10.0.0.1",
                                    "fe80::1", "0.0.0.0"])
def test_dns_answers_pointing_inside_are_refused(answer: str) -> None:
    failure = refused({"url": "http://public.example/"}, lambda h, p: ["93.184.216.34", answer])
    assert failure.type == "invalid_input" and "refusing" in failure.message
    assert CONNECTS == []


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:70/", "ftp://example.com/",
                                 "dict://127.0.0.1:11211/", "http://user:pass@example.com/",
                                 "http://:secret@example.com/"])
def test_other_schemes_and_credentials_refused(url: str) -> None:
    failure = refused({"url": url}, lambda h, p: ["93.184.216.34"])
    assert failure.type == "invalid_input"
    assert CONNECTS == []


@pytest.mark.parametrize("target", ["http://169.254.169.254/", "http://10.0.0.1/", "http://[fd00::1]:1/",
                                    "http://2852039166/", "file:///etc/passwd"])
def test_redirects_to_inside_are_refused(server: str, target: str) -> None:
    # The sink itself is allow-listed by address; where it redirects to is vetted again.
    failure = refused({"url": f"{server}/redirect?to={target}", "follow_redirects": True}, allow=("127.0.0.1/32",))
    assert failure.type == "invalid_input"
    assert len(CONNECTS) == 1  # only the allow-listed sink


def test_oversized_body_is_bounded(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(HandlerError) as caught:
        http.handle(ctx({"url": f"{server}/big"}, allow=("127.0.0.1",), cap=1024 * 1024))
    assert "1048576" in caught.value.failure.message or "large" in caught.value.failure.message.lower()
    assert time.monotonic() - started < 5


def test_slow_response_is_bounded(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(HandlerError) as caught:
        http.handle(ctx({"url": f"{server}/slow", "timeout": 1}, allow=("127.0.0.1",)))
    assert caught.value.failure.type == "timeout"
    assert time.monotonic() - started < 3
