"""The commands of ``flow`` that deploy and run workflows: ``db upgrade``, ``deploy``, ``run``."""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Iterator, Sequence

import click

from engine.core.states import TERMINAL_RUN_STATUSES
from engine.settings import Settings, redact_url
from flow.cli.common import (
    deploy_file,
    open_store,
    parse_params,
    settings_from_env,
    setup_logging,
)
from flow.cli.processes import Threads, start_engine
from flow.cli.python_steps import (
    import_option,
    import_step_types,
    known_step_types,
    module_names,
    steps_option,
)
from flow.steps import manifest

log = logging.getLogger("flow.cli")
TERMINAL_RUN = frozenset(status.value for status in TERMINAL_RUN_STATUSES)


@click.group("db")
def db_group() -> None:
    """Manage the database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations shipped with this version of Flow (safe to run again).

    The database is DATABASE_URL, else the one the DB_* variables name, else the embedded SQLite
    file in FLOW_DATA_DIR (default .flow).
    """
    from engine.store import db

    settings = settings_from_env()
    try:
        db.upgrade(settings.database_url)
    except Exception as exc:  # SQLAlchemy/Alembic raise many types; the message is what matters
        raise click.ClickException(
            f"cannot upgrade the database at {redact_url(settings.database_url)}: {exc}"
        ) from None
    click.echo(f"database {redact_url(settings.database_url)} is at revision {db.head_revision()}")


@click.command("deploy")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@steps_option
@import_option
def deploy(files: tuple[str, ...], steps_file: str | None, imports: tuple[str, ...]) -> None:
    """Compile FILES and store each workflow as a new version (an unchanged source is a no-op).

    Prints one line per workflow: name, version, and whether it was created or unchanged.
    Compile errors are printed like `flow check` prints them, and the exit status is 1. On RabbitMQ,
    a warning names each dotted step type whose queue no worker consumes.

    \b
    Python step types: --import MODULE (or --steps FILE from `flow steps export`) checks the
    config of their steps, as `flow check` does.
    """
    import dsl
    from web.api.served import unserved

    step_types = known_step_types(imports, steps_file)
    settings = settings_from_env()
    store = open_store(settings)
    failed = False
    for path in files:
        try:
            deployed = deploy_file(store, path, step_types)
        except SystemExit:
            failed = True
            continue
        for item in deployed:
            state = "created" if item.created else "unchanged"
            click.echo(f"{item.name}  v{item.version}  {state}")
        specs = dsl.compile_file(path, step_types).specs or []
        for warning in unserved(specs, settings.broker_url):
            click.echo(f"warning[{warning['code']}]: {warning['message']}", err=True)
    if failed:
        raise SystemExit(1)


@click.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--workflow", "-w", "workflow", metavar="NAME",
              help="The workflow of FILE to run; needed when FILE declares several.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A run parameter; VALUE is parsed as JSON when it is JSON (42, true, [1,2]), "
                   "else taken as text. Repeatable; wins over --params-json.")
@click.option("--params-json", metavar="JSON", help="All parameters as one JSON object.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the final run document as JSON on stdout (progress goes to stderr).")
@click.option("--local", is_flag=True,
              help="Run a coordinator and workers inside this process instead of relying on running "
                   "`flow coordinator` and `flow worker` processes. Implied on the embedded default "
                   "(no DATABASE_URL/BROKER_URL).")
@click.option("--timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Give up following the run after SECONDS (exit 1); the run itself goes on.")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1),
              help="Handler threads of the in-process worker (with --local).")
@import_option
def run(file: str, workflow: str | None, params: tuple[str, ...], params_json: str | None,
        as_json: bool, local: bool, timeout: float | None, concurrency: int, imports: tuple[str, ...]) -> None:
    """Deploy FILE, start a run of its workflow, and follow it step by step.

    Exits 0 only if the run completed; 1 if it failed, was compensated, cancelled or timed out.

    \b
    Examples:
      flow run workflows/hello.flow --local
      flow run order.flow -w order_saga -p order_id=42 -p 'items=[{"sku": "A", "qty": 1}]'
      flow run billing.flow --local --import steps -p customer=ada -p amount=42
    """
    from engine.core.errors import InvalidParams

    settings = settings_from_env()
    local = local or settings.embedded
    setup_logging(settings, logging.WARNING)
    parse_params(params, params_json)  # a typo in -p fails before anything is deployed
    step_types = import_step_types(module_names(imports, environ={})) if imports else []
    store = open_store(settings)
    deployed = deploy_file(store, file, manifest(step_types) or None)
    name = _pick_workflow(deployed, workflow, file)
    version = next(d.version for d in deployed if d.name == name)
    run_params = parse_params(params, params_json, text_params(store, name, version))

    threads = Threads()
    if local:
        start_engine(threads, settings, store, concurrency=concurrency, step_types=step_types)
    try:
        try:
            run_id = store.start_run(name, run_params, version=version)
        except InvalidParams as exc:
            problems = exc.problems or [str(exc)]
            raise click.ClickException(
                "invalid parameters:\n  " + "\n  ".join(str(p) for p in problems)
            ) from None
        publish_now(store, settings)
        echo = Progress(err=as_json)
        echo.line(f"run {run_id} of {name} v{version} started"
                  + (" (in this process)" if local else f" (broker {redact_url(settings.broker_url)})"))
        document = follow_run(store, run_id, echo, timeout, hint=not local)
    finally:
        threads.join()
    if as_json:
        click.echo(json.dumps(public_document(document), indent=2, default=str))
    else:
        print_summary(document, echo)
    raise SystemExit(0 if document.get("status") == "completed" else 1)


def publish_now(store: Any, settings: Settings) -> None:
    """Relay the outbox once, so the first step starts now rather than at a coordinator's next poll.

    Best effort: if the broker is unreachable the rows stay and a coordinator relays them.
    """
    from engine.runtime.messaging import Broker

    broker = Broker(settings)
    try:
        store.relay_outbox(broker.publisher().publish_batch, limit=100)
    except Exception as exc:  # the coordinators relay the same rows; nothing is lost
        log.debug("immediate relay skipped: %s", exc)
    finally:
        broker.close()


def text_params(store: Any, name: str, version: int) -> frozenset[str]:
    """The params that ``name`` v``version`` declares as ``string`` (nullable or not)."""
    spec = store.get_version(name, version).get("spec") or {}
    return frozenset(p["name"] for p in spec.get("params") or []
                     if str(p.get("type", "")).rstrip("?") == "string")


def _pick_workflow(deployed: Sequence[Any], wanted: str | None, file: str) -> str:
    names = [d.name for d in deployed]
    if wanted:
        if wanted not in names:
            raise click.BadParameter(
                f"{file} has no workflow {wanted!r}; it declares {', '.join(names) or 'none'}",
                param_hint="--workflow",
            )
        return wanted
    if len(names) == 1:
        return names[0]
    if not names:
        raise click.ClickException(f"{file} declares no workflow")
    raise click.UsageError(f"{file} declares several workflows ({', '.join(names)}); choose one with --workflow")


class Progress:
    """Progress lines with the time since the start; colours only on a terminal (click strips them)."""

    COLOURS = {"completed": "green", "failed": "red", "retrying": "yellow", "processing": "cyan",
               "compensated": "magenta", "compensating": "magenta", "compensation_failed": "red",
               "cancelled": "red", "skipped": "bright_black"}

    def __init__(self, *, err: bool) -> None:
        self.err = err
        self.started = time.monotonic()

    def line(self, text: str, status: str | None = None) -> None:
        stamp = f"{time.monotonic() - self.started:7.2f}s"
        if status:
            text = text.replace(status, click.style(status, fg=self.COLOURS.get(status)), 1)
        click.echo(f"{stamp}  {text}", err=self.err)


def _step_states(document: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each step of the run document, then its compensation when one ran."""
    for step in document.get("steps") or []:
        yield step
        if step.get("compensation"):
            yield {**step["compensation"], "name": step.get("name"), "kind": "compensation"}


def _step_key(step: dict[str, Any]) -> tuple[Any, ...]:
    return (step.get("name"), step.get("item"), step.get("kind"))


def _step_label(step: dict[str, Any]) -> str:
    label = str(step.get("name"))
    if step.get("item") is not None:
        label += f"[{step['item']}]"
    if step.get("kind") and step.get("kind") != "step":
        label += f" ({step['kind']})"
    return label


def follow_run(store: Any, run_id: Any, echo: Progress, timeout: float | None, *, hint: bool) -> dict[str, Any]:
    """Poll the run until it ends (or ``timeout``), printing each status change of a step."""
    seen: dict[tuple[Any, ...], tuple[Any, Any]] = {}
    run_status = None
    deadline = None if timeout is None else time.monotonic() + timeout
    hinted = False
    delay = 0.02
    while True:
        document = store.get_run(run_id)
        for step in _step_states(document):
            key = _step_key(step)
            state = (step.get("status"), step.get("attempts"))
            if seen.get(key, ("pending", 0)) == state:
                continue  # steps start pending: a line for that would only be noise
            seen[key] = state
            status = str(step.get("status"))
            text = f"  {_step_label(step):<24} {status}"
            if (step.get("attempts") or 0) > 1:
                text += f" (attempt {step['attempts']})"
            error = step.get("error")
            if error and status in ("failed", "retrying", "compensation_failed"):
                message = error.get("message") if isinstance(error, dict) else error
                text += f": {message}"
            echo.line(text, status)
        if document.get("status") != run_status:
            run_status = document.get("status")
            echo.line(f"run {run_status}", run_status)
        if run_status in TERMINAL_RUN:
            return document
        if deadline is not None and time.monotonic() >= deadline:
            echo.line(f"gave up following after {timeout}s; the run goes on (status {run_status})")
            return document
        if hint and not hinted and not seen and time.monotonic() - echo.started > 10:
            hinted = True
            echo.line("no step has started after 10s: are `flow coordinator` and `flow worker` running "
                      "against this database and broker? (or use --local)")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def public_document(document: dict[str, Any]) -> dict[str, Any]:
    """The run document with its documented keys first (extra keys the store adds are kept)."""
    keys = ("id", "workflow", "version", "status", "params", "output", "error", "steps")
    ordered = {key: document.get(key) for key in keys}
    ordered.update({k: v for k, v in document.items() if k not in ordered})
    return ordered


def print_summary(document: dict[str, Any], echo: Progress) -> None:
    status = document.get("status")
    echo.line(f"run {document.get('id')} {status}", status)
    if document.get("output") is not None:
        click.echo(json.dumps(document["output"], indent=2, default=str))
    if document.get("error"):
        click.echo(f"error: {json.dumps(document['error'], default=str)}", err=True)


def register(main: click.Group) -> None:
    """Add ``db``, ``deploy`` and ``run`` to the ``flow`` group."""
    for command in (db_group, deploy, run):
        main.add_command(command)
