"""Runs: the filterable, paginated, self-updating list; a run with its coloured DAG, timeline and
every step's attempts; retry, cancel and compensate (each confirmed, its result shown in place)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, abort, flash, redirect, request, url_for

from dsl import graph as dsl_graph
from dsl.spec import WorkflowSpec
from engine.core.errors import Conflict, IllegalTransition, InvalidParams
from engine.core.search import parse_terms
from engine.core.states import RunStatus
from engine.store import dashboard as queries
from web.api.context import services, store
from web.audit import note_failure
from web.dashboard.charts import timeline_svg
from web.dashboard.render import LIVE_RUN, LIVE_TASK, inline_svg, is_htmx, page
from web.dashboard.security import current_user

bp = Blueprint("runs", __name__, url_prefix="/runs")

PAGE_SIZE = 25
STATUSES = tuple(s.value for s in RunStatus)


def _time_arg(name: str, problems: list[str]) -> datetime | None:
    raw = request.args.get(name, "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        problems.append(f"{name}: {raw!r} is not a time like 2030-01-31T09:00")
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@bp.get("")
def index() -> Response:
    """The runs, newest first, filtered by workflow, status, creation time and business keys
    (``search=order=4711 customer=acme``); polls while live."""
    problems: list[str] = []
    filters = {key: request.args.get(key, "").strip() for key in ("workflow", "status", "since", "until", "search")}
    search, search_problems = parse_terms(filters["search"])
    problems.extend(f"search: {p}" for p in search_problems)
    if filters["status"] and filters["status"] not in STATUSES:
        problems.append(f"status: {filters['status']!r} is not one of {', '.join(STATUSES)}")
    since, until = _time_arg("since", problems), _time_arg("until", problems)
    cursor = request.args.get("cursor") or None
    result: dict[str, Any] = {"runs": [], "next_cursor": None}
    if not problems:
        try:
            result = store().list_runs(
                workflow=filters["workflow"] or None, status=filters["status"] or None,
                since=since, until=until, limit=PAGE_SIZE, cursor=cursor, search=search,
            )
        except InvalidParams as exc:
            problems.extend(exc.problems)
    active = {key: value for key, value in filters.items() if value}
    return page(
        "runs/index.html", "runs/_table.html",
        runs=result["runs"], next_cursor=result["next_cursor"], cursor=cursor, filters=filters,
        active=active, problems=problems, statuses=STATUSES,
        workflows=[w["name"] for w in store().list_workflows()] if not is_htmx() else [],
        live=any(r["status"] in LIVE_RUN for r in result["runs"]),
        self_url=url_for(".index", **_with_cursor(active, cursor)),
    )


def run_context(run_id: str) -> dict[str, Any]:
    run = store().get_run(run_id)
    version = store().get_version(run["workflow"], run["version"])
    spec = WorkflowSpec.from_json(version["spec"])
    task_rows = queries.run_tasks(services().db, run_id)
    logs: dict[str, list[dict[str, Any]]] = {}
    for line in store().task_logs(run_id=run_id):
        logs.setdefault(line["task_id"], []).append(line)
    statuses = {step["name"]: step["status"] for step in run["steps"]}
    live = run["status"] in LIVE_RUN or any(t["status"] in LIVE_TASK for t in task_rows)
    return {
        "run": run,
        "tasks": task_rows,
        "logs": logs,
        "graph": inline_svg(dsl_graph.render(spec, "svg", statuses=statuses)),
        "timeline": inline_svg(timeline_svg(run, task_rows)),
        "live": live,
        "audit": store().access.list_audit(run_id=run_id, limit=50)["events"],
    }


@bp.get("/<run_id>")
def show(run_id: str) -> Response:
    """A run; htmx polls the same URL for the live fragment while the run is not finished."""
    return page("runs/show.html", "runs/_live.html", **run_context(run_id), notice=None)


def _act(run_id: str, action: Callable[[], object], done: str) -> Any:
    """Run ``action``; show the run with the outcome in place (htmx) or redirect with a flash."""
    status = 200
    try:
        action()
        notice = {"kind": "ok", "text": done}
    except (IllegalTransition, Conflict) as exc:
        status, notice = 409, {"kind": "error", "text": f"Not done: {exc}"}
        note_failure(notice["text"])
    if not is_htmx():
        flash(notice["text"], notice["kind"])
        return redirect(url_for(".show", run_id=run_id), 303)
    return page("runs/show.html", "runs/_live.html", status=status, **run_context(run_id), notice=notice)


@bp.post("/<run_id>/retry")
def retry(run_id: str) -> Any:
    return _act(run_id, lambda: store().retry_run(run_id), "Retrying the run from its failed steps.")


@bp.post("/<run_id>/cancel")
def cancel(run_id: str) -> Any:
    return _act(run_id, lambda: store().cancel_run(run_id), "The run is cancelled.")


@bp.post("/<run_id>/compensate")
def compensate(run_id: str) -> Any:
    return _act(run_id, lambda: store().compensate_run(run_id),
                "Compensating: the completed steps are undone in reverse order.")


@bp.post("/<run_id>/tasks/<task_id>/retry")
def retry_task(run_id: str, task_id: str) -> Any:
    task = store().get_task(task_id)
    if task["run_id"] != run_id:
        abort(404, f"Task {task_id} is not part of run {run_id}.")
    return _act(run_id, lambda: store().retry_task(task_id), f"Retrying task {task['step'] or task_id}.")


@bp.post("/<run_id>/tasks/<task_id>/approve")
def approve(run_id: str, task_id: str) -> Any:
    """Answer a waiting ``approval`` step: the form's ``decision`` is ``approve`` or ``reject``."""
    task = store().get_task(task_id)
    if task["run_id"] != run_id:
        abort(404, f"Task {task_id} is not part of run {run_id}.")
    approved = request.form.get("decision") != "reject"
    comment = (request.form.get("comment") or "").strip()[:1000] or None
    user = current_user() or {"username": "unknown"}
    return _act(
        run_id,
        lambda: store().approve_step(run_id, task["step"], approved, user["username"], comment,
                                     item=task.get("item")),
        f"{'Approved' if approved else 'Rejected'} step {task['step']}.",
    )


def _with_cursor(args: dict[str, str], cursor: str | None) -> dict[str, Any]:
    """The query of this page (filters, and the cursor when paged) for ``url_for``."""
    return {**args, "cursor": cursor} if cursor else dict(args)
