"""JSON errors for the API: one envelope ``{"error": {"code", "message", "details"}}`` for every failure.

Engine errors map to statuses here, so views never catch them: ``NotFound`` → 404,
``IllegalTransition`` and ``Conflict`` → 409, ``InvalidParams`` and ``CompileFailed`` → 422; a database or
broker that cannot be reached → 503. Anything else is logged and answered with a bare 500: a stack
trace never reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from dsl.errors import Diagnostic, FlowError
from engine.core import errors
from engine.core.timing import ScheduleError

log = logging.getLogger(__name__)

# Werkzeug's status codes, named the way clients match on them.
HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    503: "unavailable",
}


class ApiError(FlowError):
    """An error with its HTTP status, raised by views and helpers and rendered as the JSON envelope."""

    def __init__(self, status: int, code: str, message: str, details: Any = None, *,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = dict(headers or {})


def error_response(status: int, code: str, message: str, details: Any = None) -> Response:
    """The JSON envelope with ``status``."""
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    return response


def not_found(what: str, ident: object) -> ApiError:
    """A 404 that names the missing resource, e.g. ``Run 3f2c… doesn't exist.``"""
    return ApiError(404, "not_found", f"{what} {ident} doesn't exist.")


def _engine_error(exc: Exception) -> ApiError | None:
    """Translate an ``engine.core.errors.EngineError`` (every error the engine raises on purpose,
    the schedules' included), or None if ``exc`` is not one."""
    if not isinstance(exc, errors.EngineError):
        return None
    message = str(exc) or type(exc).__name__
    if isinstance(exc, errors.NotFound):
        return ApiError(404, "not_found", message)
    if isinstance(exc, errors.IllegalTransition):
        return ApiError(409, "illegal_transition", message, {
            "entity": exc.entity, "id": exc.id, "current": exc.current, "target": exc.target})
    if isinstance(exc, errors.InvalidParams):
        return ApiError(422, "invalid_params", message, exc.problems or [message])
    if isinstance(exc, errors.CompileFailed):
        diagnostics = [diagnostic_json(d) for d in exc.diagnostics]
        return ApiError(422, "compile_failed", "The workflow source does not compile.", diagnostics)
    if isinstance(exc, errors.Conflict):
        return ApiError(409, "conflict", message)
    if isinstance(exc, ScheduleError):
        return ApiError(422, "invalid_schedule", message)
    return ApiError(400, "bad_request", message)


def engine_error_body(exc: Exception) -> dict[str, Any]:
    """``{code, message, details}`` of an engine error, as an error answer would carry it (the
    batch start answers each entry's error this way)."""
    error = _engine_error(exc) or ApiError(400, "bad_request", str(exc) or type(exc).__name__)
    return {"code": error.code, "message": error.message, "details": error.details}


def _unavailable(exc: Exception) -> ApiError | None:
    """A 503 when ``exc`` says the database or the broker cannot be reached (400 for a value the
    database refuses)."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return ApiError(503, "database_unavailable", "The database cannot be reached; try again later.")
    if isinstance(exc, sa_exc.DataError):
        # The database refused a value (out of range, bad text): the request's fault, not a 500.
        return ApiError(400, "invalid_value", "A value in the request cannot be stored or compared.")
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return ApiError(503, "database_unavailable", "The database connection was lost; try again later.")
    try:
        from kombu.exceptions import OperationalError as BrokerOperationalError
    except ImportError:  # pragma: no cover - kombu is a dependency
        return None
    if isinstance(exc, (BrokerOperationalError, ConnectionError)):
        return ApiError(503, "broker_unavailable", "The message broker cannot be reached; try again later.")
    return None


def diagnostic_json(diagnostic: Diagnostic) -> dict[str, Any]:
    """A compiler diagnostic as JSON: the fields of ``flow check --json`` (severity, code, message,
    file, line, column, end_line, end_column), plus the same position as a ``span`` object and the
    ``notes``."""
    document = dict(diagnostic.to_json())
    document["span"] = diagnostic.span.to_json()
    document["notes"] = list(diagnostic.notes)
    return document


def _is_api_request() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def register_error_handlers(app: Flask) -> None:
    """Answer every error under ``/api`` with the JSON envelope; other paths keep Flask's pages."""

    @app.errorhandler(ApiError)
    def handle_api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        response.headers.update(exc.headers)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="flow"'
        return response

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException) -> Any:
        if not _is_api_request():
            return exc
        status = exc.code or 500
        response = error_response(status, HTTP_CODES.get(status, "error"), _http_message(exc))
        if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def handle_exception(exc: Exception) -> Any:
        if not _is_api_request():
            raise exc  # the dashboard keeps Flask's own 500 page
        translated = _engine_error(exc) or _unavailable(exc)
        if translated is not None:
            if translated.status == 503:
                log.warning("service unavailable during %s %s: %s", request.method, request.path, type(exc).__name__)
            return error_response(translated.status, translated.code, translated.message, translated.details)
        log.exception("unhandled error during %s %s", request.method, request.path)
        return error_response(500, "internal_error", "Flow could not handle this request; the server log has the details.")


def _http_message(exc: HTTPException) -> str:
    status = exc.code or 500
    if status == 404:
        return f"Nothing at {request.path}; see /api/openapi.json for the endpoints."
    if status == 405:
        return f"{request.method} is not allowed on {request.path}."
    if status == 413:
        return "The request body is larger than 1 MiB."
    return exc.description or exc.name
