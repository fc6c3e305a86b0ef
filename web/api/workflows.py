"""Workflows: deploy (``.flow`` source or the task API's JSON definition), check, list, versions, graph."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from engine.store.schedule_deploys import deploy_with_schedules
import dsl
from web.api import schemas
from web.api.context import services, store
from web.api.errors import ApiError, diagnostic_json, not_found
from web.api.operations import operation
from web.api.render import json_response, plain
from web.api.served import unserved_warnings
from web.api.validation import json_body, query_args

bp = Blueprint("workflows", __name__, url_prefix="/workflows")

DEFAULT_FILENAME = "api.flow"
NOT_FOUND = {404: ("No such workflow or version", "Error")}


@bp.post("")
@operation(
    "Deploy workflows: `.flow` source, or the task API's {name, definition}",
    tag="workflows", role="admin", body="DeployWorkflow", text_body=True,
    responses={201: ("The stored versions (an unchanged source keeps its version)", "Deployed"),
               400: ("Malformed body", "Error"), 422: ("The source does not compile", "Error")},
    description="JSON `{\"source\": \"...\", \"filename\": \"orders.flow\"}` or `{\"name\", \"definition\"}`; "
                "or the raw source with `Content-Type: text/plain`.",
)
def deploy() -> Response:
    body = json_body(schemas.DEPLOY_WORKFLOW, text_field="source")
    if "source" not in body:
        return json_response({"versions": [store().deploy_seed(body)], "warnings": []}, 201)
    filename = body.get("filename") or DEFAULT_FILENAME
    step_types = _step_types(body)
    # Registers the schedules the source declares, as `flow deploy` does.
    deployed = deploy_with_schedules(store(), body["source"], filename, services().schedules,
                                     step_types=step_types)
    specs = dsl.compile_source(body["source"], filename, step_types).specs or []
    return json_response({"versions": deployed, "warnings": unserved_warnings(specs)}, 201)


def _step_types(body: dict[str, Any]) -> dict[str, Any] | None:
    """The installed plugins' step types plus the body's ``step_types`` (a Python steps manifest)."""
    given = body.get("step_types")
    if not given:
        return None
    from dsl.plugins import INSTALLED

    return {**dict(INSTALLED), **given}


@bp.post("/check")
@operation(
    "Compile source without storing it; answer the diagnostics with their spans",
    tag="workflows", role="viewer", body="CheckWorkflow", text_body=True,
    responses={200: ("The diagnostics (ok is false when any is an error)", "CheckResult"),
               400: ("Malformed body", "Error")},
)
def check() -> Response:
    body = json_body(schemas.CHECK_WORKFLOW, text_field="source")
    result = dsl.compile_source(body["source"], body.get("filename") or DEFAULT_FILENAME, _step_types(body))
    return json_response({
        "ok": bool(result.ok),
        "diagnostics": [diagnostic_json(d) for d in result.diagnostics],
        "workflows": [spec.name for spec in (result.specs or [])],
    })


@bp.get("")
@operation("Deployed workflows with their latest version", tag="workflows", role="viewer",
           responses={200: ("The workflows", "WorkflowList")})
def list_all() -> Response:
    return json_response({"workflows": list(store().list_workflows())})


@bp.get("/<name>")
@operation("A workflow: its latest version (source and spec) and every version number", tag="workflows",
           role="viewer", responses={200: ("The workflow", "Version"), **NOT_FOUND})
def versions(name: str) -> Response:
    return json_response(_version(name, None))


@bp.get("/<name>/versions/<int:version>")
@operation("One version: its source and compiled spec", tag="workflows", role="viewer",
           responses={200: ("The version", "Version"), **NOT_FOUND})
def version(name: str, version: int) -> Response:
    return json_response(_version(name, version))


@bp.get("/<name>/graph.svg")
@operation(
    "The workflow's DAG as SVG (latest version, or ?version=N)", tag="workflows", role="viewer",
    query=schemas.GRAPH_QUERY,
    responses={200: ("An SVG image", "svg"), **NOT_FOUND},
)
def graph(name: str) -> Response:
    from dsl import graph as dsl_graph
    from dsl.spec import WorkflowSpec

    args = query_args(schemas.GRAPH_QUERY)
    stored = _version(name, args.get("version"))
    spec = stored.get("spec")
    if spec is None:
        raise ApiError(404, "not_found", f"Workflow {name} has no compiled spec.")
    svg = dsl_graph.render(WorkflowSpec.from_json(spec), "svg")
    response = Response(svg, mimetype="image/svg+xml")
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _version(name: str, version: int | None) -> dict[str, Any]:
    found = plain(store().get_version(name, version))
    if not found:
        raise not_found("Workflow", name if version is None else f"{name} version {version}")
    return found  # type: ignore[no-any-return]


