"""A small LSP client that speaks JSON-RPC to `flow lsp` over its stdin/stdout, as an editor does.

The benchmark (bench/lsp_latency.py) and the tests (tests/unit/test_lsp.py) drive the server with it.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from typing import Any, BinaryIO


class LspClient:
    """Starts ``flow lsp`` and sends requests and notifications; a reader thread queues what comes back."""

    def __init__(self, command: list[str] | None = None, cwd: str | None = None) -> None:
        command = command or [sys.executable, "-m", "flow.cli.main", "lsp"]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        cwd=cwd, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self._next_id = 0
        self._responses: dict[int, "queue.Queue[dict[str, Any]]"] = {}
        self._lock = threading.Lock()
        self.notifications: "queue.Queue[dict[str, Any]]" = queue.Queue()
        assert self.process.stdout is not None
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: BinaryIO) -> None:
        while True:
            length = None
            while True:
                header = stream.readline()
                if not header:
                    return  # the server exited
                if header in (b"\r\n", b"\n"):
                    break
                name, _, value = header.decode("ascii").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length is None:
                continue
            message = json.loads(stream.read(length).decode("utf-8"))
            if "id" in message and "method" not in message:
                with self._lock:
                    box = self._responses.get(message["id"])
                if box is not None:
                    box.put(message)
            elif "id" in message:  # a request of the server (workspace/configuration ...): answer it empty
                self._send({"jsonrpc": "2.0", "id": message["id"], "result": None})
            else:
                self.notifications.put(message)

    def _send(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode("utf-8")
        assert self.process.stdin is not None
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()

    def request(self, method: str, params: Any, timeout: float = 30.0) -> Any:
        """Send a request and wait for its result; raises ``RuntimeError`` on an error response."""
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            box: "queue.Queue[dict[str, Any]]" = queue.Queue()
            self._responses[request_id] = box
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        try:
            response = box.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no answer to {method} within {timeout} s; server stderr: {self.stderr()}") from None
        if "error" in response:
            raise RuntimeError(f"{method} failed: {response['error']}")
        return response.get("result")

    def notify(self, method: str, params: Any) -> None:
        self._send({"jsonrpc": "2.0", "method": method, "params": params})

    def wait_for(self, method: str, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        """The params of the next notification ``method`` whose params hold ``match`` (others are dropped)."""
        while True:
            try:
                message = self.notifications.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no {method} within {timeout} s; server stderr: {self.stderr()}") from None
            params = message.get("params") or {}
            if message.get("method") == method and all(params.get(k) == v for k, v in match.items()):
                return params

    def initialize(self, root: str | None = None, encodings: list[str] | None = None) -> dict[str, Any]:
        capabilities: dict[str, Any] = {"textDocument": {"publishDiagnostics": {"versionSupport": True},
                                                         "documentSymbol": {"hierarchicalDocumentSymbolSupport": True}}}
        if encodings:
            capabilities["general"] = {"positionEncodings": encodings}
        result: dict[str, Any] = self.request("initialize", {"processId": os.getpid(), "rootUri": root,
                                                             "capabilities": capabilities})
        self.notify("initialized", {})
        return result

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return "(still running)"
        return self.process.stderr.read().decode("utf-8", "replace")[-2000:]

    def shutdown(self, timeout: float = 10.0) -> int:
        """``shutdown`` then ``exit``; returns the server's exit status."""
        self.request("shutdown", None)
        self.notify("exit", None)
        try:
            return self.process.wait(timeout)
        finally:
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
