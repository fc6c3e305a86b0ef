"""The one local HTTP target of the tests: integration, dashboard, security and fault suites.

It records every request (time, method, path, JSON body, Idempotency-Key, client port) and, like a
well-behaved API, applies a request's effect once per Idempotency-Key: a repeated key gets the first
answer back without a second effect (a *replay*; 5xx answers are not cached). So ``effects`` counts
what really happened and ``sent`` what was sent (at-least-once execution shows up as replays, never
as double effects).

``respond(request) -> (status, body)`` decides each answer. Without one, the sink answers the paths
of the fault suite (``fault_paths``):

- ``/sN`` (any other path): 200 ``{step: "sN", path}``; ``/fail``: 400; ``/undo/...``: 200;
  ``/undo_fail/...``: 400; ``/slow``: sleeps ``body.delay`` seconds (default 1), then 200;
- ``/poison``: calls ``on_poison(client_port)`` (the fault harness kills the worker holding that
  connection) and never answers.

``hook(request)`` runs before each request that is not a replay is answered.
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
    client_port: int = 0


def fault_paths(request: Request) -> Answer:
    """The answers of the fault suite's target (see the module's docstring)."""
    path = request.path
    if path == "/fail":
        return 400, {"error": "refused for good"}
    if path.startswith("/undo_fail"):
        return 400, {"error": "cannot undo"}
    if path == "/slow":
        time.sleep(float((request.body or {}).get("delay") or 1.0))
        return 200, {"step": "slow"}
    return 200, {"step": path.rsplit("/", 1)[-1], "path": path}


@dataclass
class Sink:
    respond: Callable[[Request], Answer] | None = None  # None: fault_paths, /poison included
    hook: Callable[[Request], None] | None = None
    on_poison: Callable[[int], None] | None = None
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
                request = Request(time.monotonic(), self.command, self.path, body,
                                  self.headers.get("Idempotency-Key"), client_port=self.client_address[1])
                if sink.respond is None and self.path.startswith("/poison"):
                    sink._poison(request)
                    self.close_connection = True  # never answers (the worker is dead by now)
                    return
                status, answer = sink._handle(request)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    self.close_connection = True  # the client died (a killed worker): expected

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

            def handle(self) -> None:
                try:
                    super().handle()
                except OSError:
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

    def _poison(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)
        if self.on_poison is not None:
            self.on_poison(request.client_port)
        time.sleep(60)

    def _handle(self, request: Request) -> Answer:
        key = request.key
        with self._lock:
            if key is not None and key in self._answers:
                request.replay = True
                self.requests.append(request)
                return self._answers[key]
        if self.hook is not None:
            self.hook(request)
        # Outside the lock: a slow endpoint must not serialise the others.
        answer = (self.respond or fault_paths)(request)
        with self._lock:
            if key is not None and key in self._answers:  # a concurrent duplicate won the race
                request.replay = True
                self.requests.append(request)
                return self._answers[key]
            self.requests.append(request)
            if key is not None and answer[0] < 500:
                self._answers[key] = answer
        return answer

    def snapshot(self) -> list[Request]:
        """Every request so far, replays included, in arrival order."""
        with self._lock:
            return list(self.requests)

    def effects(self, path_prefix: str = "/", method: str | None = None) -> list[Request]:
        """Requests that had an effect (not replays), in arrival order, filtered by path/method."""
        return [r for r in self.snapshot()
                if not r.replay and r.path.startswith(path_prefix) and (method is None or r.method == method)]

    def sent(self, path_prefix: str = "/") -> list[Request]:
        """Every request whose path starts with ``path_prefix``, replays included."""
        return [r for r in self.snapshot() if r.path.startswith(path_prefix)]
