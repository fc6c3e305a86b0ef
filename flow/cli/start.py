"""``flow start NAME``: start runs of a deployed workflow, one (``-p``) or many (``--params-file``).

The many-run form reads JSON Lines and starts them in batches of ``BATCH_SIZE``, each batch one
transaction (what ``POST /api/workflows/NAME/runs/batch`` does), and prints one line per input line
in order, so that a script can pair its inputs with the runs. ``flow/cli/main.py`` registers it with
``start.register(main)``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import click

from dsl.errors import FlowError
from flow.cli.common import open_store, parse_params, settings_from_env, setup_logging

BATCH_SIZE = 1000  # the batch endpoint's limit: one transaction each
ITEM_KEYS = frozenset({"params", "idempotency_key"})


@dataclass(frozen=True)
class Item:
    """One run to start: the params and the idempotency key of one input line."""

    line: int
    params: dict[str, Any]
    idempotency_key: str | None = None


class ParamsFileError(FlowError, ValueError):
    """A line of a params file that is not a run to start."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")


def read_items(lines: Iterable[str], source: str = "-") -> Iterator[Item]:
    """The runs of a JSON Lines text: one JSON object per line, blank lines skipped.

    A line is either the params themselves (``{"order_id": 42}``) or, like an item of the batch
    endpoint, an object of ``params`` and ``idempotency_key`` (``{"params": {...},
    "idempotency_key": "order-42"}``): an object whose keys are among those two, with ``params`` an
    object, is read the second way.
    """
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text:
            continue
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ParamsFileError(source, number, f"not JSON ({exc}); each line must be one JSON object") from None
        if not isinstance(value, dict):
            raise ParamsFileError(source, number, f"a JSON {type(value).__name__}, not an object of params")
        if "params" in value and set(value) <= ITEM_KEYS and isinstance(value["params"], dict):
            key = value.get("idempotency_key")
            if key is not None and (not isinstance(key, str) or not key):
                raise ParamsFileError(source, number, "idempotency_key must be a non-empty string")
            yield Item(number, value["params"], key)
        else:
            yield Item(number, value)


def batches(items: Iterable[Item], size: int = BATCH_SIZE) -> Iterator[list[Item]]:
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@click.command("start")
@click.argument("workflow", metavar="NAME")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A run parameter; VALUE is parsed as JSON when it is JSON, else taken as text. "
                   "Repeatable; wins over --params-json.")
@click.option("--params-json", metavar="JSON", help="All parameters as one JSON object.")
@click.option("--params-file", type=click.File("r"), metavar="FILE",
              help="Start one run per line of FILE (JSON Lines; - for stdin): each line the params, or "
                   '{"params": {...}, "idempotency_key": "..."}. The whole file is checked first; '
                   "then batches of 1,000 runs, one transaction each.")
@click.option("--idempotency-key", metavar="KEY",
              help="A start repeated with the same key gives the run it started before.")
@click.option("--version", type=click.IntRange(min=1), help="The version to start (default: the newest).")
@click.option("--wait", "wait", is_flag=True,
              help="Follow the run until it ends (one run only); exit 1 unless it completed.")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="With --wait: give up following after SECONDS (exit 1); the run goes on.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: the run document (one run), or one object per input line.")
def start(workflow: str, params: tuple[str, ...], params_json: str | None, params_file: IO[str] | None,
          idempotency_key: str | None, version: int | None, wait: bool, timeout: float | None,
          as_json: bool) -> None:
    """Start runs of the deployed workflow NAME and print their ids.

    Runs start in the database; running `flow coordinator` and `flow worker` processes (or `flow
    up`) carry them out. Exits 1 if a run could not be started.

    \b
    Examples:
      flow start order_saga -p order_id=42
      flow start order_saga -p order_id=42 --idempotency-key order-42 --wait
      flow start order_saga --params-file orders.jsonl > run_ids.txt
    """
    settings = settings_from_env()
    setup_logging(settings, logging.WARNING)
    if params_file is not None:
        if params or params_json or idempotency_key or wait:
            raise click.UsageError("--params-file starts many runs: it takes no -p, --params-json, "
                                   "--idempotency-key or --wait (put params and keys in the file)")
        store = open_store(settings)
        refused = _start_file(store, workflow, version, params_file, as_json)
        raise SystemExit(1 if refused else 0)
    store = open_store(settings)
    parse_params(params, params_json)  # a typo in -p fails before the database is asked
    run_id = _start_one(store, workflow, version, params, params_json, idempotency_key)
    if not wait:
        if as_json:
            from flow.cli.run import public_document

            click.echo(json.dumps(public_document(store.get_run(run_id)), indent=2, default=str))
        else:
            click.echo(run_id)
        return
    from flow.cli.run import Progress, follow_run, print_summary, public_document, publish_now

    publish_now(store, settings)
    echo = Progress(err=as_json)
    echo.line(f"run {run_id} of {workflow} started")
    document = follow_run(store, run_id, echo, timeout, hint=True)
    if as_json:
        click.echo(json.dumps(public_document(document), indent=2, default=str))
    else:
        print_summary(document, echo)
    raise SystemExit(0 if document.get("status") == "completed" else 1)


def _latest_version(store: Any, workflow: str, version: int | None) -> int:
    from engine.core.errors import NotFound

    try:
        return int(store.get_version(workflow, version)["version"])
    except NotFound as exc:
        raise click.ClickException(str(exc)) from None


def _start_one(store: Any, workflow: str, version: int | None, params: tuple[str, ...],
               params_json: str | None, idempotency_key: str | None) -> str:
    from engine.core.errors import Conflict, InvalidParams
    from flow.cli.run import text_params

    pinned = _latest_version(store, workflow, version)
    run_params = parse_params(params, params_json, text_params(store, workflow, pinned))
    try:
        outcome = store.start(workflow, [(run_params, idempotency_key)], version=pinned, documents=False)[0]
    except InvalidParams as exc:
        raise click.ClickException(_invalid(exc)) from None
    if isinstance(outcome.error, (InvalidParams, Conflict)):
        raise click.ClickException(_invalid(outcome.error))
    if outcome.error is not None:
        raise outcome.error
    assert outcome.run_id is not None
    return str(outcome.run_id)


def _invalid(exc: Exception) -> str:
    from engine.core.errors import InvalidParams

    if not isinstance(exc, InvalidParams) or not exc.problems:
        return str(exc)
    return "invalid parameters:\n  " + "\n  ".join(exc.problems)


def _start_file(store: Any, workflow: str, version: int | None, source: IO[str], as_json: bool) -> int:
    """Start every line of ``source``; print one line per input line; the number refused.
    The whole file is read first: a malformed line starts nothing."""
    try:
        items = list(read_items(source, str(source.name)))
    except ParamsFileError as exc:
        raise click.ClickException(f"{exc}; nothing was started") from None
    pinned = _latest_version(store, workflow, version)
    started = again = refused = 0
    for batch in batches(items):
        outcomes = store.start(workflow, [(item.params, item.idempotency_key) for item in batch],
                               version=pinned, documents=False)
        for item, outcome in zip(batch, outcomes):
            if outcome.error is not None:
                refused += 1
                message = _invalid(outcome.error)
                _emit(as_json, {"line": item.line, "error": message},
                      f"line {item.line}: not started: {message}", err=True)
                continue
            started += outcome.created
            again += not outcome.created
            _emit(as_json, {"line": item.line, "run_id": outcome.run_id, "created": outcome.created},
                  str(outcome.run_id))
    summary = f"{started} run{'s' if started != 1 else ''} of {workflow} v{pinned} started"
    if again:
        summary += f", {again} already started by their idempotency keys"
    if refused:
        summary += f", {refused} refused"
    click.echo(summary, err=True)
    return refused


def _emit(as_json: bool, record: dict[str, Any], text: str, *, err: bool = False) -> None:
    if as_json:
        sys.stdout.write(json.dumps(record, default=str) + "\n")
    else:
        click.echo(text, err=err)


def register(group: click.Group) -> None:
    """Register ``start`` on the ``flow`` group."""
    group.add_command(start)
