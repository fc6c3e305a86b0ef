"""Request parsing: JSON bodies checked against the JSON Schemas that also feed ``/api/openapi.json``.

Schemas are plain JSON Schema 2020-12 dicts (the dialect of OpenAPI 3.1), validated with
``jsonschema``; a view names its schema once, in its ``@operation``, and never parses by hand.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Mapping

from flask import request
from jsonschema import Draft202012Validator
from werkzeug.exceptions import RequestEntityTooLarge

from web.api.errors import ApiError

MAX_BODY_BYTES = 1024 * 1024
TEXT_TYPES = ("text/plain", "text/x-flow", "application/x-flow")


def _is_json(mimetype: str) -> bool:
    return mimetype == "application/json" or (mimetype.startswith("application/") and mimetype.endswith("+json"))


@lru_cache(maxsize=None)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_json))


def validate(value: Any, schema: Mapping[str, Any], *, where: str = "body") -> None:
    """Raise a 400 listing every place where ``value`` breaks ``schema``."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    problems = [
        {"path": "/".join(str(part) for part in error.absolute_path) or "", "message": error.message}
        for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if problems:
        summary = "; ".join(f"{p['path'] or where}: {p['message']}" for p in problems[:3])
        raise ApiError(400, "invalid_body", f"The request {where} is not valid: {summary}", problems)


def raw_body() -> bytes:
    """The request body; 413 past 1 MiB whatever the ``Content-Length`` claimed, chunked or not.

    The stream is read to one byte past the limit, so that a chunked body (no ``Content-Length``)
    that goes on is refused as too large instead of being cut off and then failing as bad JSON.
    """
    cached = request.environ.get("flow.raw_body")
    if cached is not None:
        return bytes(cached)
    too_large = ApiError(413, "payload_too_large", "The request body is larger than 1 MiB.")
    try:
        data = request.stream.read(MAX_BODY_BYTES + 1)
        # werkzeug's stream stops at MAX_CONTENT_LENGTH without an error for a chunked body; one
        # more read tells whether the body goes on (then it raises RequestEntityTooLarge).
        if len(data) >= MAX_BODY_BYTES and request.stream.read(1):
            raise too_large
    except RequestEntityTooLarge:
        raise too_large from None
    if len(data) > MAX_BODY_BYTES:
        raise too_large
    request.environ["flow.raw_body"] = data
    return data


def known_fields(schema: Mapping[str, Any]) -> set[str] | None:
    """The top-level fields ``schema`` names (its ``properties`` and those of its ``oneOf``/``anyOf``
    branches), or None when it takes any (no ``properties`` at all)."""
    names: set[str] = set(schema.get("properties", {}))
    for branch in (*schema.get("oneOf", ()), *schema.get("anyOf", ())):
        names.update(branch.get("properties", {}))
    return names or None


def refuse_unknown_fields(value: Any, schema: Mapping[str, Any]) -> None:
    """422 naming every top-level field of ``value`` that ``schema`` does not know."""
    known = known_fields(schema)
    if known is None or not isinstance(value, dict):
        return
    unknown = sorted(str(key) for key in value if key not in known)
    if unknown:
        raise ApiError(422, "unknown_field",
                       f"The request body has fields this endpoint does not take: {', '.join(unknown)} "
                       f"(it takes {', '.join(sorted(known))}).", {"unknown": unknown, "known": sorted(known)})


def json_body(schema: Mapping[str, Any] | None, *, optional: bool = False, text_field: str | None = None) -> Any:
    """Parse and validate the JSON body.

    Parameters:
        schema: the JSON Schema of the body (None: any JSON value).
        optional: an empty body stands for ``{}``.
        text_field: also accept a ``text/plain`` body, returned as ``{text_field: body}``.

    Raises:
        ApiError: 415 for another content type, 400 for malformed JSON or a body that breaks the
        schema, 422 for a field the schema does not name, 413 for a body over 1 MiB.
    """
    data = raw_body()
    mimetype = request.mimetype or ""
    if not data.strip() and optional:
        return {}
    if text_field is not None and mimetype in TEXT_TYPES:
        try:
            return {text_field: data.decode("utf-8")}
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", "The request body is not valid UTF-8.") from None
    if not _is_json(mimetype):
        accepted = "application/json" + (" or text/plain" if text_field else "")
        raise ApiError(415, "unsupported_media_type",
                       f"Send the body as {accepted} (got {mimetype or 'no Content-Type'}).")
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"The request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "malformed_json", "The request body is nested too deeply.") from None
    _check_text(value)
    if schema is not None:
        refuse_unknown_fields(value, schema)
        validate(value, schema)
    return value


MAX_DEPTH = 100


def _check_text(value: Any, depth: int = 0) -> None:
    """Refuse strings PostgreSQL cannot store: NUL characters and unpaired surrogates (``\\ud800``)."""
    if depth > MAX_DEPTH:
        raise ApiError(400, "invalid_body", f"The request body is nested deeper than {MAX_DEPTH} levels.")
    if isinstance(value, str):
        if "\x00" in value:
            raise ApiError(400, "invalid_body", "Strings in the body cannot contain NUL (\\u0000).")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "invalid_body", "Strings in the body must be valid Unicode "
                                                "(an unpaired surrogate escape was sent).") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, depth + 1)
            _check_text(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_text(item, depth + 1)


def query_args(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The query string as a dict (integers converted where the schema says so), validated."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    values: dict[str, Any] = {}
    for key, raw in request.args.items():
        kind = properties.get(key, {}).get("type")
        if kind == "integer":
            try:
                values[key] = int(raw)
            except ValueError:
                raise ApiError(400, "invalid_query", f"Query parameter {key}={raw!r} is not an integer.") from None
        else:
            values[key] = raw
    validate(values, schema, where="query")
    return values


IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


def idempotency_key() -> str | None:
    """The ``Idempotency-Key`` header, or None; 400 past 255 characters."""
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip() or None
    if key is not None and len(key) > MAX_KEY_LENGTH:
        raise ApiError(400, "bad_request", f"{IDEMPOTENCY_HEADER} is longer than {MAX_KEY_LENGTH} characters.")
    return key


def check_url_text() -> None:
    """``before_request``: path and query values must be storable text too (a NUL would reach SQL)."""
    _check_text(list((request.view_args or {}).values()) + list(request.args.values()))
