"""The http_request handler against a local server on 127.0.0.1 (allow-listed for these tests only)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from engine.core.contracts import TaskMessage
from engine.settings import Settings
from workers.handlers import http
from workers.handler_api import HandlerError, TaskContext


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _reply(self, status: int, body: bytes, ctype: str = "application/json", extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if url.path == "/echo":
            echo = {
                "method": self.command,
                "path": url.path,
                "query": query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": json.loads(raw) if raw else None,
            }
            self._reply(200, json.dumps(echo).encode())
        elif url.path.startswith("/status/"):
            code = int(url.path.rsplit("/", 1)[1])
            extra = {"Retry-After": "7"} if code == 429 else None
            self._reply(code, json.dumps({"error": "nope"}).encode(), extra=extra)
        elif url.path == "/text":
            self._reply(200, "héllo".encode(), "text/plain; charset=utf-8")
        elif url.path == "/slow":
            time.sleep(2)
            self._reply(200, b"{}")
        elif url.path == "/big":
            # No Content-Length: the cap must work while streaming, not from the header.
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"x" * 65536
            try:
                for _ in range(64):  # 4 MiB
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif url.path == "/loop":
            self._reply(302, b"", "text/plain", {"Location": "/loop"})
        elif url.path == "/redirect":
            self._reply(int(query.get("code", "302")), b"", "text/plain", {"Location": query["to"]})
        else:
            self._reply(404, b'{"error": "not found"}')

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _route


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


ALLOWED = Settings(database_url="sqlite://", broker_url="memory://", http_allowlist=("127.0.0.1",))


def context(payload: dict[str, Any], *, settings: Settings = ALLOWED, timeout: float | None = None,
            secrets: dict[str, str] | None = None, raw: dict[str, Any] | None = None) -> TaskContext:
    message = TaskMessage("t1", "http_request", 1, 1, raw or payload, "run-1:step:0:1", timeout=timeout)
    return TaskContext(message=message, settings=settings, payload=payload, secrets=secrets or {},
                       raw_payload=raw or payload)


def failure_of(task: TaskContext):
    with pytest.raises(HandlerError) as caught:
        http.handle(task)
    return caught.value.failure


def test_get_returns_status_headers_and_json_body(server: str) -> None:
    out = http.handle(context({"url": f"{server}/echo", "query": {"a": 1, "b": "x y"}}))
    assert out["status"] == 200
    assert out["headers"]["content-type"] == "application/json"
    assert out["body"]["method"] == "GET"
    assert out["body"]["query"] == {"a": "1", "b": "x y"}


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_methods_send_a_json_body(server: str, method: str) -> None:
    out = http.handle(context({"method": method.lower(), "url": f"{server}/echo", "body": {"n": [1, 2]}}))
    assert out["body"]["method"] == method
    assert out["body"]["body"] == {"n": [1, 2]}
    assert out["body"]["headers"]["content-type"] == "application/json"


def test_sends_the_idempotency_key_and_headers(server: str) -> None:
    out = http.handle(context({"url": f"{server}/echo", "headers": {"X-Trace": "abc"}}))
    headers = out["body"]["headers"]
    assert headers["idempotency-key"] == "run-1:step:0:1"
    assert headers["x-trace"] == "abc"
    assert headers["host"] == server.removeprefix("http://")


def test_payload_idempotency_key_wins(server: str) -> None:
    out = http.handle(context({"url": f"{server}/echo", "headers": {"idempotency-key": "mine"}}))
    assert out["body"]["headers"]["idempotency-key"] == "mine"


def test_text_body(server: str) -> None:
    assert http.handle(context({"url": f"{server}/text"}))["body"] == "héllo"


@pytest.mark.parametrize(("code", "retryable"), [(404, False), (400, False), (429, True), (503, True), (500, True)])
def test_status_outside_expect_is_an_http_failure(server: str, code: int, retryable: bool) -> None:
    failure = failure_of(context({"url": f"{server}/status/{code}"}))
    assert failure.type == f"http.{code}"
    assert failure.details["status"] == code
    assert failure.retryable is retryable
    assert failure.details["body"] == {"error": "nope"}


def test_429_carries_retry_after(server: str) -> None:
    assert failure_of(context({"url": f"{server}/status/429"})).details["retry_after"] == "7"


def test_expect_accepts_listed_codes(server: str) -> None:
    out = http.handle(context({"url": f"{server}/status/404", "expect": [200, 404]}))
    assert out["status"] == 404
    assert failure_of(context({"url": f"{server}/echo", "expect": [201]})).type == "http.200"


def test_timeout(server: str) -> None:
    failure = failure_of(context({"url": f"{server}/slow", "timeout": 0.3}))
    assert failure.type == "timeout" and failure.retryable


def test_timeout_defaults_to_the_message_timeout(server: str) -> None:
    assert failure_of(context({"url": f"{server}/slow"}, timeout=0.3)).type == "timeout"


def test_network_error_on_a_closed_port() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failure = failure_of(context({"url": f"http://127.0.0.1:{port}/"}))
    assert failure.type == "network" and failure.retryable


def test_size_cap_stops_streaming(server: str) -> None:
    settings = Settings(database_url="sqlite://", broker_url="memory://", http_allowlist=("127.0.0.1",),
                        http_max_response_bytes=1 << 20)
    failure = failure_of(context({"url": f"{server}/big"}, settings=settings))
    assert failure.type == "invalid_input" and not failure.retryable
    assert failure.details["limit"] == 1 << 20
    assert "larger than the limit" in failure.message


def test_redirects_are_not_followed_by_default(server: str) -> None:
    failure = failure_of(context({"url": f"{server}/redirect?to=/echo"}))
    assert failure.type == "http.302"


def test_redirects_followed_on_request(server: str) -> None:
    out = http.handle(context({"url": f"{server}/redirect?to=/echo", "follow_redirects": True}))
    assert out["status"] == 200 and out["body"]["path"] == "/echo"


def test_303_turns_a_post_into_a_get(server: str) -> None:
    out = http.handle(context({"method": "POST", "url": f"{server}/redirect?code=303&to=/echo",
                               "body": {"a": 1}, "follow_redirects": True}))
    assert out["body"]["method"] == "GET" and out["body"]["body"] is None


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://[::1]/"])
def test_redirect_to_a_refused_address_is_refused(server: str, target: str) -> None:
    failure = failure_of(context({"url": f"{server}/redirect?to={target}", "follow_redirects": True}))
    assert failure.type == "invalid_input" and not failure.retryable
    assert "FLOW_HTTP_ALLOWLIST" in failure.message


def test_too_many_redirects(server: str) -> None:
    failure = failure_of(context({"url": f"{server}/loop", "follow_redirects": True}))
    assert failure.type == "http.302" and "too many redirects" in failure.message


def test_loopback_is_refused_without_the_allowlist(server: str) -> None:
    plain = Settings(database_url="sqlite://", broker_url="memory://")
    failure = failure_of(context({"url": f"{server}/echo"}, settings=plain))
    assert failure.type == "invalid_input"
    assert "127.0.0.1" in failure.message and "FLOW_HTTP_ALLOWLIST" in failure.message


def test_secret_and_credential_headers_are_masked_in_logs(server: str) -> None:
    raw = {"url": f"{server}/echo", "headers": {"X-Token": {"$expr": {"op": "get", "obj": {"op": "name", "name": "secrets"}, "key": "TOKEN"}},
                                                "Authorization": "Bearer abc", "X-Plain": "visible"}}
    resolved = {"url": raw["url"], "headers": {"X-Token": "s3cr3t-value", "Authorization": "Bearer abc", "X-Plain": "visible"}}
    task = context(resolved, raw=raw, secrets={"TOKEN": "s3cr3t-value"})
    out = http.handle(task)
    assert out["body"]["headers"]["x-token"] == "s3cr3t-value"  # sent in clear to the target
    logged = json.dumps(task.logs)
    assert "s3cr3t-value" not in logged and "Bearer abc" not in logged
    assert "visible" in logged


@pytest.mark.parametrize(
    ("payload", "needle"),
    [({}, "url"), ({"url": "http://x/", "method": "BREW"}, "method"), ({"url": "ftp://x/"}, "scheme"),
     ({"url": "http://x/", "expect": "ok"}, "expect")],
)
def test_bad_payloads_are_invalid_input(payload: dict[str, Any], needle: str) -> None:
    failure = failure_of(context(payload))
    assert failure.type == "invalid_input" and needle in failure.message


def test_connects_to_the_vetted_address_not_a_second_lookup(server: str) -> None:
    # Given a name that resolves once to the allow-listed address (a second lookup would fail:
    # the name does not exist in DNS), when the handler calls it, then it connects to the address
    # it vetted and sends the name in the Host header.
    answers = iter([["127.0.0.1"]])
    port = server.rsplit(":", 1)[1]
    settings = Settings(database_url="sqlite://", broker_url="memory://", http_allowlist=("127.0.0.0/8",))
    task = context({"url": f"http://rebind.invalid:{port}/echo"}, settings=settings)
    out = http.handle(task, resolver=lambda host, p: next(answers))
    assert out["body"]["headers"]["host"] == f"rebind.invalid:{port}"
