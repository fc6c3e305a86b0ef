"""JSON error answers from the HTTP servers themselves, before a request reaches Flask.

Flask answers every error under ``/api`` with the envelope ``{"error": {code, message, details}}``
(``web/api/errors.py``), but some requests never get that far: waitress (``flow serve``) refuses a
body past its limit with its own ``text/plain`` 413, and werkzeug's server (``flow up``) refuses a
very long request line (414) or header (431) with an HTML page. These classes make both servers
answer with the same envelope. The body is built by a pure function, so both share it.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from waitress.channel import HTTPChannel
from waitress.task import ErrorTask
from werkzeug.serving import WSGIRequestHandler

CODES = {400: "bad_request", 408: "request_timeout", 413: "payload_too_large", 414: "uri_too_long",
         431: "headers_too_large", 501: "not_implemented", 505: "http_version_not_supported"}
HINTS = {413: "Send at most 1 MiB.", 414: "Put long values in a JSON body instead of the URL.",
         431: "Send fewer or shorter headers."}


def error_body(status: int, message: str | None = None) -> bytes:
    """The API's error envelope for a refusal by the server."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    text = " ".join(part for part in (message or phrase, HINTS.get(status, "")) if part).strip()
    envelope = {"error": {"code": CODES.get(status, f"http_{status}"), "message": text, "details": None}}
    return json.dumps(envelope).encode("utf-8")


class JsonErrorRequestHandler(WSGIRequestHandler):
    """werkzeug's request handler (``flow up``), answering the server's own refusals in JSON."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        body = error_body(code, message)
        self.log_error("code %d, message %s", code, message)
        self.send_response(code, message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)


class JsonErrorTask(ErrorTask):
    """waitress's error answer (``flow serve``), in JSON."""

    def execute(self) -> None:
        error: Any = self.request.error
        body = error_body(int(error.code), f"{error.reason}: {error.body}" if error.body else str(error.reason))
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                      ("Connection", "close")])
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):
    """A waitress channel whose refusals are ``JsonErrorTask``s."""

    error_task_class = JsonErrorTask


def waitress_server(app: Any, **options: Any) -> Any:
    """A waitress server for ``app`` (``waitress.server.create_server`` options) whose refusals are
    JSON; ``run()`` serves until KeyboardInterrupt."""
    from waitress.server import create_server

    server = create_server(app, **options)
    server.channel_class = JsonErrorChannel
    return server
