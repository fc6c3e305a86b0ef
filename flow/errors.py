"""The exceptions of the Flow client.

Every error of the API has the same body, ``{"error": {"code", "message", "details"}}``; the client
turns it into an exception of the class that matches the status (``NotFoundError`` for a 404 ...), and
each carries the ``status_code``, the ``code`` (``not_found``, ``illegal_transition`` ...), the
``message`` and the ``details`` (for a 422, every problem or diagnostic). The tree follows the
habit of httpx-based SDKs::

    FlowError
    ├── APIConnectionError          the server could not be reached (after the safe retries)
    ├── APIStatusError              the server answered with an error status
    │   ├── BadRequestError             400
    │   ├── AuthenticationError         401
    │   ├── PermissionDeniedError       403
    │   ├── NotFoundError               404
    │   ├── ConflictError               409
    │   │   └── IllegalTransitionError      the run's or task's status does not allow it
    │   ├── PayloadTooLargeError        413
    │   ├── UnprocessableEntityError    422
    │   │   ├── InvalidParamsError          params that do not fit the workflow (``problems``)
    │   │   └── CompileError                source that does not compile (``diagnostics``)
    │   └── ServerError                 5xx
    │       └── ServiceUnavailableError     503: the database or broker is down; try again later
    ├── RunFailedError              ``Run.result()`` of a run that did not complete (``error`` record)
    ├── WaitTimeoutError            ``Run.wait()`` ran out of time (also a ``TimeoutError``)
    └── BatchStartError             ``start_many()`` where some items failed (``results``)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from flow.runs import RunDocument

__all__ = [
    "FlowError", "APIConnectionError", "APIStatusError", "BadRequestError", "AuthenticationError",
    "PermissionDeniedError", "NotFoundError", "ConflictError", "IllegalTransitionError",
    "PayloadTooLargeError", "UnprocessableEntityError", "InvalidParamsError", "CompileError",
    "ServerError", "ServiceUnavailableError", "RunFailedError", "WaitTimeoutError", "BatchStartError",
    "NoWorkerWarning", "error_from_body",
]


class NoWorkerWarning(UserWarning):
    """``deploy`` stored a workflow with a step type that no worker serves yet: its steps will wait
    in their queue until ``flow worker --import MODULE`` consumes it."""


class FlowError(Exception):
    """The base class of every exception the client raises."""


class APIConnectionError(FlowError):
    """The request did not get an answer: connection refused, reset or timed out.

    Raised after the retries the client allows for the request (reads, deploys and starts with an
    idempotency key); other requests are never retried, because the server may have acted on them.
    The httpx exception is the ``__cause__``.
    """

    def __init__(self, message: str, *, method: str, url: str) -> None:
        super().__init__(message)
        self.method = method
        self.url = url


class APIStatusError(FlowError):
    """The server answered with an error status and the API's error body.

    Attributes:
        status_code: the HTTP status (404 ...).
        code: the API's machine-readable code (``not_found``, ``invalid_params`` ...).
        message: the API's human-readable message.
        details: the API's details: a list of problems, of diagnostics, or a mapping; may be None.
        headers: the response headers (``Retry-After``, ``Allow`` ...).
    """

    def __init__(self, status_code: int, code: str, message: str, details: Any = None, *,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details
        self.headers: dict[str, str] = dict(headers or {})

    def __str__(self) -> str:
        return f"{self.status_code} {self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status_code}, {self.code!r}, {self.message!r})"


class BadRequestError(APIStatusError):
    """400: the body or a query parameter is malformed (``details`` lists each problem)."""


class AuthenticationError(APIStatusError):
    """401: no token, a wrong or revoked one, or no token configured on the server."""


class PermissionDeniedError(APIStatusError):
    """403: the token's role is too low for the request."""


class NotFoundError(APIStatusError):
    """404: no such run, workflow, version, dead letter or path."""


class ConflictError(APIStatusError):
    """409: the request conflicts with the current state, or an idempotency key was reused."""


class IllegalTransitionError(ConflictError):
    """409 ``illegal_transition``: e.g. cancelling a finished run or retrying a completed one.

    ``current`` and ``target`` are the statuses from ``details`` when the server names them.
    """

    @property
    def current(self) -> str | None:
        return self.details.get("current") if isinstance(self.details, dict) else None

    @property
    def target(self) -> str | None:
        return self.details.get("target") if isinstance(self.details, dict) else None


class PayloadTooLargeError(APIStatusError):
    """413: the body is over the API's 1 MiB."""


class UnprocessableEntityError(APIStatusError):
    """422: the request is well-formed but cannot be carried out (bad params, source, schedule)."""


class InvalidParamsError(UnprocessableEntityError):
    """422 ``invalid_params``: the params do not fit the workflow; ``problems`` lists every one."""

    @property
    def problems(self) -> list[str]:
        return [str(p) for p in self.details] if isinstance(self.details, list) else [self.message]

    def __str__(self) -> str:
        return "\n".join([f"{self.status_code} {self.code}: {self.message.split(': ')[0]}",
                          *(f"  - {p}" for p in self.problems)])


class CompileError(UnprocessableEntityError):
    """422 ``compile_failed``: the source does not compile; ``diagnostics`` are the compiler's, each
    a mapping with ``severity``, ``code``, ``message``, ``file``, ``line``, ``column`` ..."""

    @property
    def diagnostics(self) -> list[dict[str, Any]]:
        return [d for d in self.details if isinstance(d, dict)] if isinstance(self.details, list) else []

    def __str__(self) -> str:
        lines = [f"{self.status_code} {self.code}: {self.message}"]
        for d in self.diagnostics:
            span = d.get("span") or {}
            where = ":".join(str(x) for x in (span.get("file", d.get("file")), span.get("line", d.get("line")),
                                              span.get("column", d.get("column"))) if x is not None)
            code = f" {d['code']}" if d.get("code") else ""
            lines.append(f"  {where}: {d.get('severity', 'error')}{code}: {d.get('message', '')}")
        return "\n".join(lines)


class ServerError(APIStatusError):
    """5xx: the server failed."""


class ServiceUnavailableError(ServerError):
    """503: PostgreSQL or RabbitMQ cannot be reached from the server; try again later."""


class RunFailedError(FlowError):
    """The run ended without completing: ``failed``, ``cancelled``, ``compensated`` or
    ``compensation_failed``.

    Attributes:
        run: the run, in its final state.
        status: its status.
        error: the run's error record (``type``, ``message``, ``step`` ...), None for a cancelled run.
    """

    def __init__(self, run: "RunDocument") -> None:
        self.run = run
        self.status: str = run.status
        self.error: dict[str, Any] | None = run.error
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"run {self.run.id} of {self.run.workflow} ended {self.status}"
        if self.error:
            step = f" in step {self.error['step']}" if self.error.get("step") else ""
            kind = f"{self.error['type']}: " if self.error.get("type") else ""
            text += f"{step}: {kind}{self.error.get('message', '')}"
        return text


class WaitTimeoutError(FlowError, TimeoutError):
    """``Run.wait()`` or ``Run.result()`` timed out; ``run`` is the last state seen (not terminal)."""

    def __init__(self, run: "RunDocument", timeout: float) -> None:
        self.run = run
        self.timeout = timeout
        super().__init__(f"run {run.id} is still {run.status} after {timeout:g}s")


class BatchStartError(FlowError):
    """``start_many()`` could not start every run.

    ``results`` has one entry per input, in order: the ``Run``, or the ``APIStatusError`` of that item;
    ``errors`` are the failed ones as ``(index, error)``.
    """

    def __init__(self, results: Sequence[Any]) -> None:
        self.results = list(results)
        self.errors = [(i, r) for i, r in enumerate(self.results) if isinstance(r, Exception)]
        first_index, first = self.errors[0]
        super().__init__(f"{len(self.errors)} of {len(self.results)} runs could not be started; "
                         f"the first, item {first_index}: {first}")


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError, 401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
    409: ConflictError, 413: PayloadTooLargeError, 422: UnprocessableEntityError,
    503: ServiceUnavailableError,
}
_BY_CODE: dict[str, type[APIStatusError]] = {
    "illegal_transition": IllegalTransitionError, "invalid_params": InvalidParamsError,
    "compile_failed": CompileError,
}


def error_from_body(status_code: int, body: Any, *, headers: Mapping[str, str] | None = None,
                    text: str = "") -> APIStatusError:
    """The exception for an error answer: ``body`` is the decoded JSON (or None), ``text`` the raw
    body, used for the message when the answer is not the API's envelope (a proxy's HTML page)."""
    envelope = body.get("error") if isinstance(body, dict) else None
    if isinstance(envelope, dict):
        code = str(envelope.get("code") or f"http_{status_code}")
        message = str(envelope.get("message") or "")
        details = envelope.get("details")
    else:
        code, message, details = f"http_{status_code}", (text.strip()[:500] or f"HTTP {status_code}"), None
    cls = _BY_CODE.get(code)
    if cls is None or not issubclass(cls, _BY_STATUS.get(status_code, APIStatusError)):
        cls = _BY_STATUS.get(status_code) or (ServerError if status_code >= 500 else APIStatusError)
    return cls(status_code, code, message, details, headers=headers)
