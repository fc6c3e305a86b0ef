"""Runs: start (with params and an ``Idempotency-Key``), list with filters and a cursor, detail, logs,
cancel, retry from the failed step, compensate."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, url_for

from engine.core.errors import InvalidParams
from engine.core.search import parse_filters
from web.api import schemas
from web.api.context import store
from web.api.errors import ApiError
from web.api.operations import operation
from web.api.render import json_response, plain
from web.api.timeparse import parse_time
from web.api.validation import idempotency_key, json_body, query_args
from web.audit import action_record, mark_recorded

bp = Blueprint("runs", __name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
RUN_ERRORS = {404: ("No such run", "Error")}
TRANSITION_ERRORS = {**RUN_ERRORS, 409: ("Not allowed in the run's current status", "Error")}


def run_document(run_id: str) -> Any:
    """The run document: the same JSON as ``flow run --json``."""
    return store().get_run(run_id)


@bp.post("/workflows/<name>/runs")
@operation(
    "Start a run of a workflow",
    tag="runs", role="operator", body="StartRun", body_required=False,
    headers={IDEMPOTENCY_HEADER: "Repeat a start safely: the same key gives back the same run."},
    responses={201: ("The run (running, its first tasks pending)", "Run"), 400: ("Malformed body", "Error"),
               404: ("No such workflow or version", "Error"),
               409: ("The Idempotency-Key was used for a different start", "Error"),
               422: ("The params do not match the workflow's typed params; details lists each problem", "Error")},
)
def start(name: str) -> Response:
    body = json_body(schemas.START_RUN, optional=True)
    # The audit row commits with the run (one commit per start); a refusal is recorded after the
    # response as usual.
    outcome = store().start(name, [(body.get("params") or {}, idempotency_key())],
                            version=body.get("version"), audit=action_record(status=201))[0]
    if outcome.error is not None:
        raise outcome.error
    mark_recorded()
    run_id = str(outcome.run_id)
    return json_response(outcome.document, 201, {"Location": url_for(".get", run_id=run_id)})


MAX_BATCH = 1000


@bp.post("/workflows/<name>/runs/batch")
@operation(
    "Start many runs of a workflow in one call (one transaction)",
    tag="runs", role="operator", body="StartRuns",
    description="Up to 1,000 entries, each `{params, idempotency_key}`. Entries are independent (not "
                "all-or-nothing): one whose params do not fit, or whose key started a run of another "
                "workflow, is answered with its error and starts nothing; every other entry starts, and "
                "all the runs started commit together, with their first messages. A key that started a "
                "run before answers that run (as the single start does), also within one call.",
    responses={200: ("One entry per request entry, in order: `{index, run}` or `{index, error}`", "StartedRuns"),
               400: ("Malformed body (or more than 1,000 entries)", "Error"),
               404: ("No such workflow or version", "Error")},
)
def start_batch(name: str) -> Response:
    from web.api.errors import engine_error_body

    body = json_body(schemas.START_RUNS)
    entries = [(entry.get("params") or {}, entry.get("idempotency_key")) for entry in body["runs"]]
    outcomes = store().start(name, entries, version=body.get("version"))
    answer = []
    for index, outcome in enumerate(outcomes):
        if outcome.error is not None:
            answer.append({"index": index, "error": engine_error_body(outcome.error)})
        else:
            answer.append({"index": index, "run": outcome.document})
    return json_response({"runs": answer})


@bp.get("/runs")
@operation(
    "Runs, newest first, filtered by workflow, status, creation time and business keys; paged with a cursor",
    tag="runs", role="viewer", query=schemas.LIST_RUNS_QUERY,
    responses={200: ("A page of runs; pass next_cursor as ?cursor= for the next one", "RunPage"),
               400: ("Bad filter", "Error")},
)
def list_runs() -> Response:
    args = query_args(schemas.LIST_RUNS_QUERY)
    search, problems = parse_filters({k.removeprefix("search."): v for k, v in args.items() if k.startswith("search.")})
    if problems:
        raise ApiError(400, "invalid_query", "; ".join(problems), problems)
    try:
        page = store().list_runs(
            workflow=args.get("workflow"),
            status=args.get("status"),
            since=parse_time(args["since"], "since") if "since" in args else None,
            until=parse_time(args["until"], "until") if "until" in args else None,
            limit=args.get("limit", 50),
            cursor=args.get("cursor"),
            search=search,
        )
    except InvalidParams as exc:  # a cursor that no page gave out
        raise ApiError(400, "invalid_query", "; ".join(exc.problems), exc.problems) from None
    return json_response(_page(page))


def _page(page: Any) -> dict[str, Any]:
    """``{"runs", "next_cursor"}`` from what ``list_runs`` returns (a page object or a pair)."""
    if isinstance(page, tuple) and len(page) == 2:
        runs, cursor = page
        return {"runs": list(runs), "next_cursor": cursor}
    data = plain(page)
    if isinstance(data, dict):
        runs = data.get("runs", data.get("items", []))
        return {"runs": runs, "next_cursor": data.get("next_cursor")}
    return {"runs": data, "next_cursor": None}


@bp.get("/runs/<run_id>")
@operation("A run with every step and attempt; with ?wait=, once it is terminal", tag="runs", role="viewer",
           query=schemas.GET_RUN_QUERY,
           description="With `wait`, the answer comes when the run reaches a terminal status (at once if "
                       "it has) or when the time is up, whichever is first; the status tells which.",
           responses={200: ("The run document", "Run"), 400: ("Bad wait", "Error"), **RUN_ERRORS,
                      503: ("Too many waiting requests on this server: poll, or retry shortly", "Error")})
def get(run_id: str) -> Response:
    args = query_args(schemas.GET_RUN_QUERY)
    if "wait" not in args:
        return json_response(run_document(run_id))
    from web.api.waiting import parse_wait, waiters

    seconds = parse_wait(args["wait"])
    try:
        document = waiters().wait(run_id, seconds, lambda: run_document(run_id))
    except ApiError as exc:
        if exc.status != 503:
            raise
        response = json_response({"error": {"code": exc.code, "message": exc.message, "details": exc.details}},
                                 503, {"Retry-After": "1"})
        return response
    return json_response(document)


@bp.get("/runs/<run_id>/logs")
@operation("The run's task logs, oldest first", tag="runs", role="viewer",
           responses={200: ("The logs", "Logs"), **RUN_ERRORS})
def logs(run_id: str) -> Response:
    run_document(run_id)  # 404 for an unknown run rather than an empty list
    return json_response({"logs": list(store().task_logs(run_id=run_id))})


@bp.post("/runs/<run_id>/cancel")
@operation("Cancel a run", tag="runs", role="operator",
           responses={200: ("The run, cancelled", "Run"), **TRANSITION_ERRORS})
def cancel(run_id: str) -> Response:
    store().cancel_run(run_id)
    return json_response(run_document(run_id))


@bp.post("/runs/<run_id>/retry")
@operation("Retry a failed run from its failed step", tag="runs", role="operator",
           responses={200: ("The run, running again", "Run"), **TRANSITION_ERRORS})
def retry(run_id: str) -> Response:
    store().retry_run(run_id)
    return json_response(run_document(run_id))


@bp.post("/runs/<run_id>/compensate")
@operation("Compensate a run: undo its completed steps in reverse order", tag="runs", role="operator",
           responses={200: ("The run, compensating", "Run"), **TRANSITION_ERRORS})
def compensate(run_id: str) -> Response:
    store().compensate_run(run_id)
    return json_response(run_document(run_id))


@bp.post("/runs/<run_id>/steps/<step>/approve")
@operation(
    "Answer a waiting approval step: approve it, or reject it (the step completes either way)",
    tag="runs", role="operator", body="Approve",
    description="The step's output becomes `{approved, by, comment}`, where `by` is the name of the "
                "token (or `admin` for the server's FLOW_API_TOKEN); workflows branch on "
                "`steps.NAME.output.approved` with `when`.",
    responses={200: ("The run, with the step completed", "Run"), 400: ("Malformed body", "Error"),
               404: ("No such run, or no approval step of that name", "Error"),
               409: ("The step is not waiting for an answer (not reached yet, or answered)", "Error")},
)
def approve(run_id: str, step: str) -> Response:
    body = json_body(schemas.APPROVE)
    store().approve_step(run_id, step, bool(body["approved"]), _caller(), body.get("comment"),
                         item=body.get("item"))
    return json_response(run_document(run_id))


def _caller() -> str:
    """Who answers: the token's name, ``admin`` for FLOW_API_TOKEN, ``anonymous`` without a token
    (the open embedded default)."""
    from web.audit import actor

    return actor()[0]
