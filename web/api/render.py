"""Turn what the store returns into JSON, with secrets masked.

Deferred values ``{"$expr": tree}`` (a ``secrets.NAME`` the worker resolves) are shown by their source
form, never evaluated; and any configured secret value that still appears in a string is replaced by
``***`` (a defence in depth against a handler echoing a header back).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import uuid
from collections.abc import Mapping
from typing import Any, Iterable

from flask import Response, jsonify

from web.api.context import services

MASK = "***"
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary words


def _describe(tree: Any) -> str:
    if isinstance(tree, str):
        return tree  # already described (plain() ran on this value before)
    try:
        from dsl.evaluator import describe
    except ImportError:
        return MASK
    try:
        return str(describe(tree))
    except Exception:  # a tree describe cannot print is still a secret: mask it whole
        return MASK


def plain(value: Any) -> Any:
    """A JSON-ready copy of ``value``: dataclasses, enums, times, UUIDs and ``to_json()`` objects."""
    kind = type(value)
    # Documents are mostly plain dicts, lists and strings: those first (a batch start's answer
    # walks tens of thousands of values).
    if kind is str or kind is int or kind is bool or kind is float or value is None:
        return value
    if kind is dict:
        if len(value) == 1 and "$expr" in value:
            return {"$expr": _describe(value["$expr"])}
        return {str(k): plain(v) for k, v in value.items()}
    if kind is list:
        return [plain(v) for v in value]
    if isinstance(value, (bool, int, float, str)):
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    to_json = getattr(value, "to_json", None)
    if callable(to_json) and not isinstance(value, type):
        return plain(to_json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if hasattr(value, "_asdict"):
        return plain(value._asdict())
    if isinstance(value, Mapping):
        if len(value) == 1 and "$expr" in value:
            return {"$expr": _describe(value["$expr"])}
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _scrub(value: Any, secrets: Iterable[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, secrets) for v in value]
    return value


def safe(value: Any) -> Any:
    """``plain(value)`` with deferred values described and configured secret values masked."""
    secrets = sorted(
        (s for s in services().settings.secrets.values() if len(s) >= MIN_SECRET_LENGTH),
        key=len, reverse=True,
    )
    result = plain(value)
    return _scrub(result, secrets) if secrets else result


def json_response(value: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON answer of ``safe(value)``."""
    response = jsonify(safe(value))
    response.status_code = status
    for key, header in (headers or {}).items():
        response.headers[key] = header
    return response
