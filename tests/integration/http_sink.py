"""A local HTTP server for the integration tests: the target of the workflows' HTTP steps.

It records every request (time, method, path, JSON body, Idempotency-Key) and, like a well-behaved
API, applies a request's effect once per Idempotency-Key: a repeated key gets the first answer back
without a second effect. So ``effects`` counts what really happened and ``requests`` counts what was
sent (at-least-once execution shows up as replays, never as double effects).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

Answer = tuple[int, Any]  # status, JSON body


@dataclass
class Request:
    at: float
    method: str
    path: str
    body: Any
    key: str | None
    replay: bool = False


@dataclass
class Sink:
    """``respond(request) -> (status, body)`` decides each answer; 5xx answers are not cached."""

    respond: Callable[[Request], Answer]
    requests: list[Request] = field(default_factory=list)
    _answers: dict[str, Answer] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "Sink":
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                status, answer = sink._handle(Request(time.monotonic(), self.command, self.path, body,
                                                      self.headers.get("Idempotency-Key")))
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client died (a killed worker): expected

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client died mid-request (a killed worker): expected

            def log_message(self, *args: Any) -> None:  # keep the test output readable
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _handle(self, request: Request) -> Answer:
        key = request.key
        with self._lock:
            if key is not None and key in self._answers:
                request.replay = True
                self.requests.append(request)
                return self._answers[key]
        answer = self.respond(request)  # outside the lock: a slow endpoint must not serialise others
        with self._lock:
            if key is not None and key in self._answers:  # a concurrent duplicate won the race
                request.replay = True
                self.requests.append(request)
                return self._answers[key]
            self.requests.append(request)
            if key is not None and answer[0] < 500:
                self._answers[key] = answer
        return answer

    def effects(self, path_prefix: str = "/", method: str | None = None) -> list[Request]:
        """Requests that had an effect (not replays), in arrival order, filtered by path/method."""
        with self._lock:
            return [r for r in self.requests
                    if not r.replay and r.path.startswith(path_prefix) and (method is None or r.method == method)]

    def sent(self, path_prefix: str = "/") -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]
