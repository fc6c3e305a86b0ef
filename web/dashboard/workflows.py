"""Workflows: the list; one workflow with its highlighted source and diagnostics, its DAG, its
versions, and the start-run form built from its typed params."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort, redirect, request, url_for

import dsl
from dsl import graph as dsl_graph
from dsl.spec import WorkflowSpec
from engine.core.errors import InvalidParams
from web.api.context import store
from web.dashboard import forms
from web.dashboard.highlight import highlight
from web.dashboard.render import inline_svg, is_htmx, page

bp = Blueprint("workflows", __name__, url_prefix="/workflows")


@bp.get("")
def index() -> Response:
    return page("workflows/index.html", "workflows/_table.html", workflows=store().list_workflows())


def _version_arg() -> int | None:
    raw = request.args.get("version", "")
    if not raw:
        return None
    if not raw.isdigit():
        abort(400, f"version={raw!r} is not a version number.")
    return int(raw)


def _context(name: str, version: int | None) -> dict[str, Any]:
    stored = store().get_version(name, version)
    spec = WorkflowSpec.from_json(stored["spec"])
    check = dsl.compile_source(stored["source"], stored.get("filename") or f"{name}.flow")
    diagnostics = list(check.diagnostics)  # a deployed version compiled: warnings, at most
    return {
        "workflow": stored,
        "params": [p.to_json() for p in spec.params],
        "lines": highlight(stored["source"], diagnostics),
        "diagnostics": diagnostics,
        "graph": inline_svg(dsl_graph.render(spec, "svg")),
        "latest": max(stored["versions"]) if stored["versions"] else stored["version"],
    }


@bp.get("/<name>")
def show(name: str) -> Response:
    context = _context(name, _version_arg())
    return page("workflows/show.html", "workflows/_start_form.html",
                fields=forms.fields(context["params"]), problems=[], **context)


@bp.post("/<name>/runs")
def start(name: str) -> Any:
    """Start a run from the form. Errors re-render the form (422), each next to its field."""
    version = _version_arg()
    context = _context(name, version)
    values, errors = forms.parse(context["params"], request.form)
    problems: list[str] = []
    if not errors:
        try:
            run_id = store().start_run(name, values, version=context["workflow"]["version"])
        except InvalidParams as exc:
            errors, problems = forms.assign(exc.problems, [p["name"] for p in context["params"]])
        else:
            target = url_for("dashboard.runs.show", run_id=str(run_id))
            if is_htmx():
                response = Response(status=200)
                response.headers["HX-Redirect"] = target
                return response
            return redirect(target, 303)
    fields = forms.fields(context["params"], request.form, errors)
    return page("workflows/show.html", "workflows/_start_form.html", status=422,
                fields=fields, problems=problems, **context)
