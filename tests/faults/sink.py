"""The HTTP target of the fault suite: records every request and applies its effect once per
Idempotency-Key (a repeated key gets the first answer back, a *replay*), like a well-behaved API.

Paths: ``/sN`` answer ``{step: "sN"}``; ``/fail`` 400; ``/undo/...`` 200; ``/undo_fail/...`` 400;
``/slow`` sleeps ``body.delay`` seconds; ``/poison`` calls ``on_poison(client_port)`` (the harness
kills the worker holding that connection) and never answers.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Request:
    at: float
    path: str
    body: Any
    key: str | None
    replay: bool = False


@dataclass
class FaultSink:
    on_poison: Callable[[int], None] | None = None
    hook: Callable[[Request], None] | None = None  # called on every request (before answering)
    requests: list[Request] = field(default_factory=list)
    _answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FaultSink":
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = None
                request = Request(time.monotonic(), self.path, body, self.headers.get("Idempotency-Key"))
                if self.path.startswith("/poison"):
                    with sink._lock:
                        sink.requests.append(request)
                    if sink.on_poison is not None:
                        sink.on_poison(self.client_address[1])
                    time.sleep(60)  # never answers (the worker is dead by now)
                    self.close_connection = True
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

            do_GET = do_PUT = do_DELETE = do_POST

            def handle(self) -> None:
                try:
                    super().handle()
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _respond(self, request: Request) -> tuple[int, Any]:
        if self.hook is not None:
            self.hook(request)
        path = request.path
        if path == "/fail":
            return 400, {"error": "refused for good"}
        if path.startswith("/undo_fail"):
            return 400, {"error": "cannot undo"}
        if path == "/slow":
            time.sleep(float((request.body or {}).get("delay") or 1.0))
            return 200, {"step": "slow"}
        return 200, {"step": path.rsplit("/", 1)[-1], "path": path}

    def _handle(self, request: Request) -> tuple[int, Any]:
        key = request.key
        with self._lock:
            if key is not None and key in self._answers:
                request.replay = True
                self.requests.append(request)
                return self._answers[key]
        answer = self._respond(request)
        with self._lock:
            if key is not None and key in self._answers:
                request.replay = True
                self.requests.append(request)
                return self._answers[key]
            self.requests.append(request)
            if key is not None and answer[0] < 500:
                self._answers[key] = answer
        return answer

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def effects(self, prefix: str = "/") -> list[Request]:
        return [r for r in self.snapshot() if not r.replay and r.path.startswith(prefix)]
