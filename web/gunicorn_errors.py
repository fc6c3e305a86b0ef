"""gunicorn's own refusals (``flow serve`` on PostgreSQL) in the API's JSON envelope.

gunicorn answers a request it cannot parse (a request line past ``limit_request_line``, headers past
``limit_request_field_size``, a bad method or version) itself, with an HTML page written by
``gunicorn.util.write_error``; its workers call that function and no other. ``JsonErrorThreadWorker``
is the ``gthread`` worker with that function replaced, in the worker process only (which serves
nothing but Flow), by one that writes ``web.wire_errors.error_body``.
"""

from __future__ import annotations

import socket
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from web.wire_errors import error_body

WORKER_CLASS = "web.gunicorn_errors.JsonErrorThreadWorker"


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """What ``gunicorn.util.write_error`` does, with the JSON envelope as the body."""
    body = error_body(status_int, f"{reason}: {mesg}" if mesg else reason)
    head = (f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    util.write_nonblock(sock, head.encode("latin-1") + body)


class JsonErrorThreadWorker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's ``gthread`` worker whose refusals are JSON."""

    def init_process(self) -> Any:
        util.write_error = write_json_error
        return super().init_process()
