"""The ``http_request`` handler: one HTTP call, guarded against SSRF, with a response size cap.

Payload: ``method`` (GET), ``url``, ``headers``, ``query``, ``body`` (JSON), ``expect`` (accepted
status codes; default 200–299), ``timeout`` (seconds; default the task's timeout, else 30),
``follow_redirects`` (false; when true, up to 5 hops, each one vetted). Output ``{status, headers,
body}``, the body decoded as JSON when the response says it is JSON.

Every hop connects to the address that ``workers.ssrf`` vetted (the URL is rewritten to the IP and
the name travels in the ``Host`` header and the TLS SNI), so DNS cannot change the answer between
the check and the connect.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

import httpx

from engine.core.contracts import Failure
from workers.handler_api import HandlerError, InvalidInput, TaskContext
from workers.ssrf import Refused, Resolver, Target, system_resolver, vet_url

DEFAULT_TIMEOUT = 30.0
MAX_REDIRECTS = 5
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Header names whose values are credentials: masked in logs, dropped on a cross-origin redirect.
SENSITIVE_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key", "x-auth-token"}
)
_BODY_EXCERPT = 2048


def handle(task: TaskContext, *, resolver: Resolver = system_resolver) -> dict[str, Any]:
    """Run the HTTP request the payload describes; see the module docstring."""
    payload = task.payload
    url = payload.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidInput("http_request needs a 'url' (a string)")
    method = str(payload.get("method") or "GET").upper()
    if method not in METHODS:
        raise InvalidInput(f"http_request: method {method!r} is not one of {', '.join(METHODS)}")
    headers = _headers(payload.get("headers"))
    if not any(name.lower() == "idempotency-key" for name in headers):
        headers["Idempotency-Key"] = task.message.idempotency_key
    expect = _expect(payload.get("expect"))
    timeout = _timeout(payload.get("timeout"), task)
    follow = bool(payload.get("follow_redirects", False))
    body = payload.get("body")
    has_body = "body" in payload and body is not None

    try:
        start_url = httpx.URL(url)
        if payload.get("query"):
            start_url = start_url.copy_merge_params(_query(payload["query"]))
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InvalidInput(f"http_request: the URL {url!r} is not valid: {exc}") from None

    started = time.monotonic()
    # One client per task: the pool is keyed by IP, and sharing it across tasks could reuse a TLS
    # connection made for another host name on the same address. trust_env=False: no proxy from the
    # environment may reroute the call around the guard.
    with httpx.Client(trust_env=False, follow_redirects=False, timeout=timeout) as client:
        current, hops = start_url, 0
        while True:
            target = _vet(current, task, resolver)
            task.log("info", f"{method} {target.url}", headers=_masked_headers(headers, task), hop=hops)
            response = _send(client, target, method, headers, body if has_body else None, has_body, timeout)
            try:
                if follow and response.is_redirect and "location" in response.headers:
                    if hops >= MAX_REDIRECTS:
                        raise HandlerError(Failure(
                            type=f"http.{response.status_code}",
                            message=f"too many redirects (more than {MAX_REDIRECTS}) from {start_url}",
                            retryable=False,
                            details={"status": response.status_code, "redirects": hops},
                        ))
                    nxt = target.url.join(response.headers["location"])
                    method, has_body = _redirect_method(response.status_code, method, has_body)
                    if _origin(nxt) != _origin(target.url):
                        headers = {k: v for k, v in headers.items() if k.lower() not in SENSITIVE_HEADERS}
                    current, hops = nxt, hops + 1
                    continue
                content = _read_capped(response, task, timeout)
            finally:
                response.close()
            break

    status = response.status_code
    task.log("info", f"response {status}", bytes=len(content), seconds=round(time.monotonic() - started, 3))
    decoded = _decode(response, content)
    if status not in expect:
        raise HandlerError(_status_failure(response, decoded, method, target))
    return {"status": status, "headers": _response_headers(response.headers), "body": decoded}


def _vet(url: httpx.URL, task: TaskContext, resolver: Resolver) -> Target:
    try:
        return vet_url(url, task.settings.http_allowlist, resolver)
    except Refused as refused:
        # A name that does not resolve may resolve later (DNS outage): that is a network failure.
        if refused.details.get("dns"):
            raise HandlerError(Failure("network", refused.message, True, refused.details)) from None
        raise HandlerError(Failure("invalid_input", refused.message, False, refused.details)) from None


def _send(
    client: httpx.Client,
    target: Target,
    method: str,
    headers: dict[str, str],
    body: Any,
    has_body: bool,
    timeout: float,
) -> httpx.Response:
    request_headers = dict(headers)
    request_headers["Host"] = target.host_header
    extensions: dict[str, Any] = {}
    if target.url.scheme == "https":
        # The certificate is checked against the name, not the IP we connect to.
        extensions["sni_hostname"] = target.host
    request = client.build_request(
        method,
        target.pinned_url,
        headers=request_headers,
        json=body if has_body else None,
        timeout=timeout,
        extensions=extensions,
    )
    try:
        return client.send(request, stream=True)
    except httpx.TimeoutException as exc:
        raise HandlerError(Failure("timeout", f"{method} {target.url} timed out after {timeout}s: {exc!r}", True,
                                   {"timeout": timeout})) from None
    except httpx.TransportError as exc:
        raise HandlerError(Failure("network", f"{method} {target.url} failed: {exc!r}", True,
                                   {"host": target.host, "address": str(target.address)})) from None


def _read_capped(response: httpx.Response, task: TaskContext, timeout: float) -> bytes:
    limit = task.settings.http_max_response_bytes
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, int(declared))
    chunks: list[bytes] = []
    size = 0
    try:
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit, size)
            chunks.append(chunk)
            if task.remaining() == 0.0:
                raise HandlerError(Failure("timeout", "the task deadline passed while reading the response", True))
    except httpx.TimeoutException as exc:
        raise HandlerError(Failure("timeout", f"reading the response timed out after {timeout}s: {exc!r}",
                                   True, {"timeout": timeout})) from None
    except httpx.TransportError as exc:
        raise HandlerError(Failure("network", f"reading the response failed: {exc!r}", True)) from None
    return b"".join(chunks)


def _too_large(limit: int, size: int) -> HandlerError:
    return HandlerError(Failure(
        type="invalid_input",
        message=f"the response body is larger than the limit of {limit} bytes (read {size} so far); "
        "raise FLOW_HTTP_MAX_RESPONSE_BYTES or fetch less",
        retryable=False,
        details={"limit": limit, "received": size},
    ))


def _status_failure(response: httpx.Response, body: Any, method: str, target: Target) -> Failure:
    status = response.status_code
    details: dict[str, Any] = {"status": status, "body": _excerpt(body)}
    if "retry-after" in response.headers:
        details["retry_after"] = response.headers["retry-after"]
    return Failure(
        type=f"http.{status}",
        message=f"{method} {target.url} returned {status} {response.reason_phrase}".rstrip(),
        retryable=status >= 500 or status == 429,
        details=details,
    )


def _decode(response: httpx.Response, content: bytes) -> Any:
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    text = content.decode(response.encoding or "utf-8", errors="replace")
    if ctype == "application/json" or ctype.endswith("+json"):
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            return text  # the server lied about the type; the text is still useful
    return text


def _excerpt(body: Any) -> Any:
    """The body as is when small, else its first characters: a failure record stays small."""
    text = body if isinstance(body, str) else json.dumps(body)
    return body if len(text) <= _BODY_EXCERPT else text[:_BODY_EXCERPT] + "…"


def _redirect_method(status: int, method: str, has_body: bool) -> tuple[str, bool]:
    # As browsers and httpx do: 303 always becomes GET, 301/302 turn POST into GET; 307/308 keep.
    if status == 303 and method != "HEAD" or status in (301, 302) and method == "POST":
        return "GET", False
    return method, has_body


def _origin(url: httpx.URL) -> tuple[str, bytes, int | None]:
    return url.scheme, url.raw_host, url.port


def _masked_headers(headers: Mapping[str, str], task: TaskContext) -> dict[str, str]:
    raw = (task.raw_payload or {}).get("headers")
    deferred = {k.lower() for k, v in raw.items() if isinstance(v, Mapping) and "$expr" in v} if isinstance(raw, Mapping) else set()
    return {
        name: "***" if name.lower() in SENSITIVE_HEADERS or name.lower() in deferred else value
        for name, value in headers.items()
    }


def _response_headers(headers: httpx.Headers) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in headers.multi_items():
        merged[name] = f"{merged[name]}, {value}" if name in merged else value
    return merged


def _headers(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise InvalidInput("http_request: 'headers' must be an object of name: value")
    return {str(name): value if isinstance(value, str) else json.dumps(value) for name, value in raw.items()}


def _query(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidInput("http_request: 'query' must be an object of name: value")
    return {str(k): v if isinstance(v, (str, list)) else json.dumps(v) for k, v in raw.items()}


def _expect(raw: Any) -> frozenset[int] | range:
    if raw is None:
        return range(200, 300)
    codes = raw if isinstance(raw, list) else [raw]
    try:
        return frozenset(int(code) for code in codes)
    except (TypeError, ValueError):
        raise InvalidInput(f"http_request: 'expect' must be a list of status codes, not {raw!r}") from None


def _timeout(raw: Any, task: TaskContext) -> float:
    try:
        timeout = float(raw if raw is not None else task.message.timeout or DEFAULT_TIMEOUT)
    except (TypeError, ValueError):
        raise InvalidInput(f"http_request: 'timeout' must be a number of seconds, not {raw!r}") from None
    if timeout <= 0:
        raise InvalidInput("http_request: 'timeout' must be positive")
    remaining = task.remaining()
    if remaining is None:
        return timeout
    if remaining <= 0:
        raise HandlerError(Failure("timeout", "the task deadline passed before the request was sent", True))
    return min(timeout, remaining)  # never wait past the task's deadline
