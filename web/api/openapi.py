"""``GET /api/openapi.json`` (OpenAPI 3.1) and ``GET /api/docs``, generated from the URL map and the
``@operation`` records, with the request schemas that validate the bodies as components."""

from __future__ import annotations

import html
import re
from typing import Any, Iterator

from flask import Blueprint, Flask, Response, current_app

from web.api import schemas
from web.api.operations import Operation, operation, operation_of
from web.api.render import json_response

bp = Blueprint("openapi", __name__)

TITLE = "Flow API"
VERSION = "1.0.0"
_CONVERTER = re.compile(r"<(?:(\w+):)?(\w+)>")
_PARAM_TYPES = {"int": {"type": "integer"}, "float": {"type": "number"}, "uuid": {"type": "string", "format": "uuid"}}
_SKIP_METHODS = {"HEAD", "OPTIONS"}


def api_routes(app: Flask) -> Iterator[tuple[str, str, str, Operation | None]]:
    """Every ``(path, method, endpoint, record)`` of the API blueprint."""
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api."):
            continue
        for method in sorted((rule.methods or set()) - _SKIP_METHODS):
            yield rule.rule, method, rule.endpoint, operation_of(app.view_functions.get(rule.endpoint))


def _path_parameters(rule: str) -> tuple[str, list[dict[str, Any]]]:
    parameters = []
    for converter, name in _CONVERTER.findall(rule):
        parameters.append({"name": name, "in": "path", "required": True,
                           "schema": _PARAM_TYPES.get(converter, {"type": "string"})})
    return _CONVERTER.sub(r"{\2}", rule), parameters


def _responses(record: Operation, auth: bool) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for status, (description, schema) in sorted(record.responses.items()):
        answer: dict[str, Any] = {"description": description}
        if schema == "svg":
            answer["content"] = {"image/svg+xml": {"schema": {"type": "string"}}}
        elif schema is not None:
            answer["content"] = {"application/json": {"schema": schemas.ref(schema)}}
        answers[str(status)] = answer
    error = {"content": {"application/json": {"schema": schemas.ref("Error")}}}
    if auth:
        answers.setdefault("401", {"description": "No token, or a wrong, revoked or expired one", **error})
        answers.setdefault("429", {"description": "Too many wrong tokens from this address; see Retry-After",
                                   "headers": {"Retry-After": {"schema": {"type": "integer"},
                                                               "description": "Seconds to wait."}}, **error})
    if record.body is not None:
        answers.setdefault("400", {"description": "Malformed JSON or body", **error})
        answers.setdefault("422", {"description": "A field the body does not take, or invalid values", **error})
        answers.setdefault("413", {"description": "Body over 1 MiB", **error})
        answers.setdefault("415", {"description": "Body is not JSON", **error})
    answers.setdefault("503", {"description": "The database or the broker is down", **error})
    return answers


def _operation(record: Operation, method: str, endpoint: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    mutating = method not in ("GET", "HEAD")
    needs_token = record.role != "public" and mutating
    document: dict[str, Any] = {
        "operationId": endpoint.replace(".", "_"),
        "summary": record.summary,
        "tags": [record.tag],
        "responses": _responses(record, auth=record.role != "public"),
        "x-flow-role": record.role,
    }
    if record.description:
        document["description"] = record.description
    params = list(parameters)
    for name, description in record.headers.items():
        params.append({"name": name, "in": "header", "required": False, "description": description,
                       "schema": {"type": "string", "maxLength": 255}})
    for name, schema in (record.query or {}).get("properties", {}).items():
        params.append({"name": name, "in": "query", "required": False, "schema": schema})
    # A family of parameters (`search.KEY`): OpenAPI names parameters one by one, so the family is
    # one entry whose name shows the pattern and whose description says how to fill it in.
    for schema in (record.query or {}).get("patternProperties", {}).values():
        family = {k: v for k, v in schema.items() if k not in ("x-flow-name", "description")}
        params.append({"name": schema["x-flow-name"], "in": "query", "required": False,
                       "description": schema["description"], "schema": family})
    if params:
        document["parameters"] = params
    if record.body is not None:
        content: dict[str, Any] = {"application/json": {"schema": schemas.ref(record.body)}}
        if record.text_body:
            content["text/plain"] = {"schema": schemas.SOURCE}
        document["requestBody"] = {"required": record.body_required, "content": content}
    # Reads need a token unless FLOW_API_OPEN_READS=true (or on the embedded default); mutations always do.
    document["security"] = [{"bearer": []}] if needs_token else ([{}, {"bearer": []}] if record.role != "public" else [])
    return document


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every API route.

    Raises:
        LookupError: a route has no ``@operation`` record (the tests catch this).
    """
    paths: dict[str, dict[str, Any]] = {}
    for rule, method, endpoint, record in api_routes(app):
        if record is None:
            raise LookupError(f"{method} {rule} ({endpoint}) has no @operation record")
        path, parameters = _path_parameters(rule)
        paths.setdefault(path, {})[method.lower()] = _operation(record, method, endpoint, parameters)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": TITLE,
            "version": VERSION,
            "description": "Flow's JSON API. Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`. "
                           "Mutations need `Authorization: Bearer <token>`. See docs/api.md.",
        },
        "servers": [{"url": "/"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas.COMPONENTS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "FLOW_API_TOKEN of the server"}},
        },
    }


@bp.get("/openapi.json")
@operation("This OpenAPI 3.1 document", tag="meta", role="public",
           responses={200: ("The document", None)})
def openapi_json() -> Response:
    return json_response(build_document(current_app._get_current_object()))  # type: ignore[attr-defined]


@bp.get("/docs")
@operation("A readable page of the endpoints", tag="meta", role="public",
           responses={200: ("HTML", None)})
def docs_page() -> Response:
    document = build_document(current_app._get_current_object())  # type: ignore[attr-defined]
    rows = []
    for path, methods in document["paths"].items():
        for method, op in methods.items():
            rows.append(
                f"<tr><td><code>{html.escape(method.upper())}</code></td><td><code>{html.escape(path)}</code></td>"
                f"<td>{html.escape(op['summary'])}</td><td>{html.escape(op['x-flow-role'])}</td></tr>"
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Flow API</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{padding:.2em .8em;vertical-align:top}"
        "tr:nth-child(even){background:#f4f4f4}</style></head><body>"
        f"<h1>{TITLE} {VERSION}</h1><p>The machine-readable document is at "
        "<a href='/api/openapi.json'>/api/openapi.json</a>.</p>"
        "<table><tr><th>Method</th><th>Path</th><th>What</th><th>Role</th></tr>"
        + "".join(rows) + "</table></body></html>"
    )
    return Response(page, mimetype="text/html")
