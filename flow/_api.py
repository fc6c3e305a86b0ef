"""The API's requests and answers without I/O, shared by ``Client`` and ``AsyncClient``.

Each endpoint is a function that builds a ``Call`` (method, path, query, body, and whether a retry
after a connection error is safe); the clients only send calls and hand the answers to the parsers
here. So the sync and async clients cannot drift apart, and the rules (which requests are retried,
how long to back off, how to hold a wait) are tested without a server.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from flow.errors import APIStatusError, error_from_body

DEFAULT_URL = "http://127.0.0.1:3030"
URL_ENV, TOKEN_ENV = "FLOW_URL", "FLOW_API_TOKEN"
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "compensated", "compensation_failed"})
BATCH_LIMIT = 1000  # runs per request of the batch endpoint
MAX_HOLD = 30  # seconds one ``GET /api/runs/ID?wait=`` may hold
# The read timeout of a held GET: the hold plus this margin, so that httpx does not give up first.
HOLD_MARGIN = 10.0


@dataclass(frozen=True)
class Call:
    """One request to the API.

    ``retry_safe``: sending it twice has the effect of sending it once (a read, a deploy, a start
    with an idempotency key), so the client may resend it after a connection error or a 503.
    ``timeout``: seconds for this request instead of the client's (a held wait).
    """

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    content: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    retry_safe: bool = False
    timeout: float | None = None
    answers: frozenset[int] = frozenset()  # error statuses whose body is the answer, not an error


@dataclass(frozen=True)
class Retries:
    """How often and how long the client retries a retry-safe call after a connection error or a
    503: exponential backoff from ``base`` seconds, capped at ``cap``, with full jitter."""

    attempts: int = 3
    base: float = 0.25
    cap: float = 5.0

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to sleep before retry number ``retry`` (1 for the first)."""
        return float(rand() * min(self.cap, self.base * 2 ** (retry - 1)))


def base_url(url: str | None) -> str:
    """The server's root URL from ``url``, else ``FLOW_URL``, else ``http://127.0.0.1:3030``; a
    trailing ``/api`` is dropped, so both spellings work."""
    chosen = (url or os.environ.get(URL_ENV) or DEFAULT_URL).strip().rstrip("/")
    if chosen.endswith("/api"):
        chosen = chosen[: -len("/api")]
    if "://" not in chosen:
        chosen = "http://" + chosen
    return chosen


def api_token(token: str | None) -> str | None:
    """``token``, else ``FLOW_API_TOKEN``, else None (the embedded default needs none)."""
    return token or os.environ.get(TOKEN_ENV) or None


def poll_delay(poll: int) -> float:
    """Seconds between two polls of a run when the server does not hold: 0.1 s doubling to 2 s."""
    return float(min(2.0, 0.1 * 2 ** poll))


def hold_seconds(remaining: float | None) -> int:
    """Whole seconds to ask the server to hold a ``GET /api/runs/ID?wait=`` (0: do not hold)."""
    if remaining is None:
        return MAX_HOLD
    return max(0, min(MAX_HOLD, math.floor(remaining)))


def parse_time(value: Any) -> dt.datetime | None:
    """An API timestamp (ISO 8601 with an offset) as an aware datetime; None stays None."""
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def format_time(value: dt.datetime | str) -> str:
    """A filter's time for the query string; a naive datetime is taken as UTC, as the API does."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat()


def raise_for_answer(status_code: int, text: str, headers: Mapping[str, str]) -> None:
    """Raise the ``APIStatusError`` subclass of an error answer; do nothing for a 2xx."""
    if status_code < 400:
        return
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    raise error_from_body(status_code, body, headers=headers, text=text)


def decode(text: str) -> Any:
    """The JSON body of a successful answer (None when empty, as for a 204)."""
    return json.loads(text) if text else None


# --- the endpoints --------------------------------------------------------------------------------


def deploy(path_or_source: str | os.PathLike[str], filename: str | None = None,
           step_types: Mapping[str, Any] | None = None) -> Call:
    """``POST /api/workflows`` with a ``.flow`` file's source (or the task API's ``.json`` definition).

    A ``Path`` (or any path-like) is read. A string is a path when it is a single line naming an
    existing file, or one ending in ``.flow``/``.json`` (then a missing file is an error rather than
    being sent as source); any other string is the source itself.

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    source, name = _source_of(path_or_source)
    name = filename or name
    if name and name.endswith(".json"):
        return Call("POST", "/api/workflows", json=json.loads(source), retry_safe=True)
    body: dict[str, Any] = {"source": source, "filename": name or "client.flow"}
    if step_types:
        body["step_types"] = dict(step_types)
    # Deploying the same source twice stores nothing new, so a resend after a lost answer is safe.
    return Call("POST", "/api/workflows", json=body, retry_safe=True)


def step_types_manifest(step_types: Any) -> dict[str, Any] | None:
    """The manifest of ``step_types``: a manifest mapping as is, or ``StepType`` objects, or modules
    that declare them (each module's step types)."""
    if step_types is None:
        return None
    if isinstance(step_types, Mapping):
        return dict(step_types.get("step_types", step_types))
    import types as pytypes

    from flow.steps import StepType, declared_in, manifest

    items = [step_types] if isinstance(step_types, (pytypes.ModuleType, StepType)) else list(step_types)
    found: list[StepType] = []
    for item in items:
        found.extend(declared_in(item) if isinstance(item, pytypes.ModuleType) else [item])
    return manifest(found)


def deploy_warnings(answer: Any) -> list[str]:
    """The messages of a deploy answer's ``warnings`` (a step type that no worker serves ...)."""
    return [str(w.get("message", w)) for w in (answer or {}).get("warnings") or [] if isinstance(w, dict)]


def _source_of(path_or_source: str | os.PathLike[str]) -> tuple[str, str | None]:
    if not isinstance(path_or_source, str):
        path = Path(path_or_source)
        return path.read_text(encoding="utf-8"), path.name
    text = path_or_source
    looks_like_path = "\n" not in text and "{" not in text and text.strip() != ""
    if looks_like_path and (text.endswith((".flow", ".json")) or Path(text).is_file()):
        path = Path(text)
        return path.read_text(encoding="utf-8"), path.name
    return text, None


def check(source: str, filename: str | None = None) -> Call:
    """``POST /api/workflows/check``: compile without storing."""
    return Call("POST", "/api/workflows/check", json={"source": source, "filename": filename or "client.flow"},
                retry_safe=True)


def start(workflow: str, params: Mapping[str, Any] | None, idempotency_key: str | None,
          version: int | None) -> Call:
    """``POST /api/workflows/NAME/runs``; retry-safe only with an idempotency key."""
    body: dict[str, Any] = {"params": dict(params or {})}
    if version is not None:
        body["version"] = version
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return Call("POST", f"/api/workflows/{_segment(workflow)}/runs", json=body, headers=headers,
                retry_safe=bool(idempotency_key))


@dataclass(frozen=True)
class BatchItem:
    """One run of a ``start_many``: its params and its idempotency key."""

    params: Mapping[str, Any]
    idempotency_key: str | None = None


def batch_items(params_list: Iterable[Mapping[str, Any]],
                idempotency_keys: Sequence[str | None] | None) -> list[BatchItem]:
    """Pair each params with its key.

    Raises:
        ValueError: not as many keys as params.
    """
    params = [dict(p) for p in params_list]
    if idempotency_keys is None:
        return [BatchItem(p) for p in params]
    keys = list(idempotency_keys)
    if len(keys) != len(params):
        raise ValueError(f"{len(params)} params but {len(keys)} idempotency keys")
    return [BatchItem(p, k) for p, k in zip(params, keys)]


def start_batch(workflow: str, items: Sequence[BatchItem], version: int | None) -> Call:
    """``POST /api/workflows/NAME/runs/batch`` for at most ``BATCH_LIMIT`` items; retry-safe when
    every item carries an idempotency key."""
    runs: list[dict[str, Any]] = []
    for item in items:
        entry: dict[str, Any] = {"params": dict(item.params)}
        if item.idempotency_key:
            entry["idempotency_key"] = item.idempotency_key
        runs.append(entry)
    body: dict[str, Any] = {"runs": runs}
    if version is not None:
        body["version"] = version
    return Call("POST", f"/api/workflows/{_segment(workflow)}/runs/batch", json=body,
                retry_safe=all(item.idempotency_key for item in items))


def batch_unsupported(error: APIStatusError) -> bool:
    """Whether a batch answer says the server has no batch endpoint (then start one by one).

    A 404 may also mean "no such workflow"; starting one by one then gives each item that 404,
    which is the right answer too.
    """
    return error.status_code in (404, 405)


def batch_results(answer: Any, count: int) -> list[dict[str, Any] | APIStatusError]:
    """The batch answer as one entry per item, in order: the run document or the item's error.

    Raises:
        ValueError: an answer that does not account for every item.
    """
    results: list[dict[str, Any] | APIStatusError | None] = [None] * count
    for entry in (answer or {}).get("runs", []):
        index = int(entry["index"])
        if "error" in entry and entry["error"] is not None:
            error = entry["error"]
            status = int(error.get("status") or _status_of_code(str(error.get("code", ""))))
            results[index] = error_from_body(status, {"error": error})
        else:
            results[index] = entry["run"]
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise ValueError(f"the batch answer has no entry for items {missing[:10]}")
    return [r for r in results if r is not None]


_CODE_STATUS = {"invalid_params": 422, "compile_failed": 422, "not_found": 404, "conflict": 409,
                "illegal_transition": 409, "forbidden": 403, "unauthorized": 401,
                "payload_too_large": 413, "database_unavailable": 503, "broker_unavailable": 503}


def _status_of_code(code: str) -> int:
    """The status an item error of a batch would have had as a single start."""
    return _CODE_STATUS.get(code, 400)


def get_run(run_id: str, hold: int = 0) -> Call:
    """``GET /api/runs/ID``, held up to ``hold`` seconds until the run is terminal (``?wait=``)."""
    if hold <= 0:
        return Call("GET", f"/api/runs/{_segment(run_id)}", retry_safe=True)
    return Call("GET", f"/api/runs/{_segment(run_id)}", params={"wait": f"{hold}s"}, retry_safe=True,
                timeout=hold + HOLD_MARGIN)


def list_runs(*, workflow: str | None, status: str | None, since: dt.datetime | str | None,
              until: dt.datetime | str | None, page_size: int, cursor: str | None,
              search: Mapping[str, Any] | None = None) -> Call:
    """``GET /api/runs`` with the API's filters (``search``: business keys, as ``search.KEY``) and a cursor."""
    params: dict[str, Any] = {"limit": page_size}
    for key, value in (search or {}).items():
        params[f"search.{key}"] = _search_text(value)
    for name, value in (("workflow", workflow), ("status", status), ("cursor", cursor)):
        if value is not None:
            params[name] = value
    for name, when in (("since", since), ("until", until)):
        if when is not None:
            params[name] = format_time(when)
    return Call("GET", "/api/runs", params=params, retry_safe=True)


def _search_text(value: Any) -> str:
    """A business key's value as the server indexes it: ``true``/``false``, numbers in decimal."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def run_command(run_id: str, verb: str) -> Call:
    """``POST /api/runs/ID/cancel|retry|compensate``; not retried (a resend may answer 409)."""
    return Call("POST", f"/api/runs/{_segment(run_id)}/{verb}")


def approve(run_id: str, step: str, approved: bool, comment: str | None, item: int | None) -> Call:
    """``POST /api/runs/ID/steps/STEP/approve``."""
    body: dict[str, Any] = {"approved": approved}
    if comment is not None:
        body["comment"] = comment
    if item is not None:
        body["item"] = item
    return Call("POST", f"/api/runs/{_segment(run_id)}/steps/{_segment(step)}/approve", json=body)


def run_logs(run_id: str) -> Call:
    return Call("GET", f"/api/runs/{_segment(run_id)}/logs", retry_safe=True)


def dead_letters(include_closed: bool, limit: int) -> Call:
    return Call("GET", "/api/dead-letters",
                params={"include_closed": "true" if include_closed else "false", "limit": limit},
                retry_safe=True)


def dead_letter(letter_id: str, verb: str | None = None) -> Call:
    """``GET /api/dead-letters/ID``, ``POST .../requeue`` or ``DELETE`` (``verb="discard"``)."""
    path = f"/api/dead-letters/{_segment(letter_id)}"
    if verb is None:
        return Call("GET", path, retry_safe=True)
    if verb == "discard":
        return Call("DELETE", path)
    return Call("POST", f"{path}/{verb}")


def health() -> Call:
    """``GET /api/health``: a 503 with ``"status": "down"`` is an answer, not an error."""
    return Call("GET", "/api/health", retry_safe=True, answers=frozenset({503}))


def _segment(value: str) -> str:
    """``value`` as one path segment (a workflow name or id never contains a slash)."""
    from urllib.parse import quote

    return quote(str(value), safe="")
