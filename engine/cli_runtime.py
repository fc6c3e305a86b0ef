"""The runtime commands of ``flow``: db upgrade, deploy, run, coordinator, up (and worker).

A thin adapter: each command reads the settings, builds the store and broker, and calls the engine.
``engine/cli.py`` registers them with one line: ``cli_runtime.register(main)``.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import click

from engine.settings import Settings, SettingsError

log = logging.getLogger("flow.cli")

BUILTIN_TASK_TYPES = ("http_request", "data_processing", "compensation", "noop")
TERMINAL_RUN = frozenset({"completed", "failed", "cancelled", "compensated", "compensation_failed"})


# -- shared helpers ---------------------------------------------------------------------------


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


class _JsonFormatter(logging.Formatter):
    """One JSON object per line (FLOW_LOG_FORMAT=json, or auto when stderr is not a terminal)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _setup_logging(settings: Settings, level: int = logging.INFO) -> None:
    if logging.getLogger().handlers:
        return
    from engine.logging_setup import setup_logging  # JSON lines, secrets masked (docs/operations.md)

    setup_logging(settings, level)


def _metrics_server(settings: Settings, role: str) -> None:
    from engine.metrics import start_metrics_server  # FLOW_METRICS_PORT (0 = off)

    start_metrics_server(settings, role)


def _redact(url: str) -> str:
    from engine.coordinator import _redact as redact

    return redact(url)


def _open_store(settings: Settings, *, upgrade: bool | None = None, pre_ping: bool = True) -> Any:
    """A ``Store`` on the configured database; the embedded database is migrated on the fly.

    ``pre_ping=False`` (the coordinator): no ``SELECT 1`` round trip (an autocommit statement,
    which PostgreSQL also counts as a commit) before every transaction; the coordinator's loop
    retries a pass that a broken connection failed, and the pool then reconnects."""
    from engine import db
    from engine.store import Store

    try:
        engine = db.make_engine(settings.database_url, **({} if pre_ping else {"pool_pre_ping": False}))
    except db.DriverMissing as exc:
        raise click.ClickException(str(exc)) from None
    if upgrade if upgrade is not None else settings.embedded:
        db.upgrade(engine)
    elif not db.is_up_to_date(engine):
        raise click.ClickException(
            f"the database at {_redact(settings.database_url)} is not at the newest schema; "
            "run `flow db upgrade` first"
        )
    return Store(engine, lease_seconds=settings.lease_seconds, max_deliveries=settings.max_deliveries)


def _render_compile_failure(exc: Any, source: str) -> str:
    from dsl.errors import render_diagnostic

    diagnostics = getattr(exc, "diagnostics", None) or []
    if not diagnostics:
        return str(exc)
    return "\n".join(render_diagnostic(d, source) for d in diagnostics)


def _deploy_file(store: Any, path: str) -> list[Any]:
    """Deploy one file; prints its compile errors and raises ``SystemExit(1)`` when it has some."""
    from engine.errors import CompileFailed
    from engine.store_schedules import deploy_with_schedules

    source = Path(path).read_text(encoding="utf-8")
    try:
        # Schedules are registered on deploy, replaced on redeploy, removed when they disappear.
        return deploy_with_schedules(store, source, path)
    except CompileFailed as exc:
        click.echo(_render_compile_failure(exc, source), err=True)
        raise SystemExit(1) from None


def _parse_params(pairs: Sequence[str], params_json: str | None,
                  text_params: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``--params-json`` then ``-p key=value`` on top; values parse as JSON when they can.

    A param the workflow declares as ``string`` (``text_params``) keeps its text as written, so
    that ``-p order_id=42`` means the string "42", not a number the type check would refuse.
    """
    params: dict[str, Any] = {}
    if params_json:
        try:
            loaded = json.loads(params_json)
        except ValueError as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--params-json") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object like '{\"n\": 3}'", param_hint="--params-json")
        params.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE (e.g. -p order_id=42)", param_hint="-p")
        key = key.strip()
        if key in text_params and not raw.startswith('"'):
            params[key] = raw
            continue
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw  # not JSON: the text itself
    return params


class _Threads:
    """Background threads of this process (coordinator, workers, web) sharing one stop event."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, name: str, target: Callable[[], Any]) -> None:
        def body() -> None:
            try:
                target()
            except Exception:  # a dead thread must not go unnoticed: stop the whole process
                log.exception("%s stopped with an error; stopping", name)
                self.stop.set()

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self, timeout: float = 30.0) -> None:
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _start_engine(threads: _Threads, settings: Settings, store: Any, *, concurrency: int, grace: float = 5.0) -> None:
    """A coordinator and a worker for every built-in task type, in threads of this process."""
    from engine.coordinator import Coordinator
    from engine.messaging import Broker
    from workers.consumer import Worker

    broker = Broker(settings)
    coordinator = Coordinator(store, broker, settings, task_types=BUILTIN_TASK_TYPES)
    worker = Worker(settings, BUILTIN_TASK_TYPES, concurrency=concurrency, grace_period=grace)
    threads.start("flow-coordinator", lambda: coordinator.run(threads.stop))
    threads.start("flow-worker", lambda: worker.run(threads.stop))




def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT (Ctrl-C) set ``stop``: the loops finish their batch and exit."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("received %s; stopping gracefully", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


# -- commands -----------------------------------------------------------------------------------


@click.group("db")
def db_group() -> None:
    """Manage the database schema."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations shipped with this version of Flow (safe to run again).

    The database is DATABASE_URL, else the one the DB_* variables name, else the embedded SQLite
    file in FLOW_DATA_DIR (default .flow).
    """
    from engine import db

    settings = _settings()
    try:
        db.upgrade(settings.database_url)
    except Exception as exc:  # SQLAlchemy/Alembic raise many types; the message is what matters
        raise click.ClickException(
            f"cannot upgrade the database at {_redact(settings.database_url)}: {exc}"
        ) from None
    click.echo(f"database {_redact(settings.database_url)} is at revision {db.head_revision()}")


@click.command("deploy")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def deploy(files: tuple[str, ...]) -> None:
    """Compile FILES and store each workflow as a new version (an unchanged source is a no-op).

    Prints one line per workflow: name, version, and whether it was created or unchanged.
    Compile errors are printed like `flow check` prints them, and the exit status is 1.
    """
    store = _open_store(_settings())
    failed = False
    for path in files:
        try:
            deployed = _deploy_file(store, path)
        except SystemExit:
            failed = True
            continue
        for item in deployed:
            state = "created" if item.created else "unchanged"
            click.echo(f"{item.name}  v{item.version}  {state}")
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
def run(file: str, workflow: str | None, params: tuple[str, ...], params_json: str | None,
        as_json: bool, local: bool, timeout: float | None, concurrency: int) -> None:
    """Deploy FILE, start a run of its workflow, and follow it step by step.

    Exits 0 only if the run completed; 1 if it failed, was compensated, cancelled or timed out.

    \b
    Examples:
      flow run workflows/hello.flow --local
      flow run order.flow -w order_saga -p order_id=42 -p 'items=[{"sku": "A", "qty": 1}]'
    """
    from engine.errors import InvalidParams

    settings = _settings()
    local = local or settings.embedded
    _setup_logging(settings, logging.WARNING)
    _parse_params(params, params_json)  # a typo in -p fails before anything is deployed
    store = _open_store(settings)
    deployed = _deploy_file(store, file)
    name = _pick_workflow(deployed, workflow, file)
    version = next(d.version for d in deployed if d.name == name)
    run_params = _parse_params(params, params_json, _text_params(store, name, version))

    threads = _Threads()
    if local:
        _start_engine(threads, settings, store, concurrency=concurrency)
    try:
        try:
            run_id = store.start_run(name, run_params, version=version)
        except InvalidParams as exc:
            problems = getattr(exc, "problems", None) or [str(exc)]
            raise click.ClickException(
                "invalid parameters:\n  " + "\n  ".join(str(p) for p in problems)
            ) from None
        _publish_now(store, settings)
        echo = _Progress(err=as_json)
        echo.line(f"run {run_id} of {name} v{version} started"
                  + (" (in this process)" if local else f" (broker {_redact(settings.broker_url)})"))
        document = _follow(store, run_id, echo, timeout, hint=not local)
    finally:
        threads.join()
    if as_json:
        click.echo(json.dumps(_public_document(document), indent=2, default=str))
    else:
        _print_summary(document, echo)
    raise SystemExit(0 if document.get("status") == "completed" else 1)


def _publish_now(store: Any, settings: Settings) -> None:
    """Relay the outbox once, so the first step starts now rather than at a coordinator's next poll.

    Best effort: if the broker is unreachable the rows stay and a coordinator relays them.
    """
    from engine.messaging import Broker

    broker = Broker(settings)
    try:
        store.relay_outbox(broker.publisher().publish_batch, limit=100)
    except Exception as exc:  # the coordinators relay the same rows; nothing is lost
        log.debug("immediate relay skipped: %s", exc)
    finally:
        broker.close()


def _text_params(store: Any, name: str, version: int) -> frozenset[str]:
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


class _Progress:
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


def _follow(store: Any, run_id: Any, echo: _Progress, timeout: float | None, *, hint: bool) -> dict[str, Any]:
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


def _public_document(document: dict[str, Any]) -> dict[str, Any]:
    """The run document with its documented keys first (extra keys the store adds are kept)."""
    keys = ("id", "workflow", "version", "status", "params", "output", "error", "steps")
    ordered = {key: document.get(key) for key in keys}
    ordered.update({k: v for k, v in document.items() if k not in ordered})
    return ordered


def _print_summary(document: dict[str, Any], echo: _Progress) -> None:
    status = document.get("status")
    echo.line(f"run {document.get('id')} {status}", status)
    if document.get("output") is not None:
        click.echo(json.dumps(document["output"], indent=2, default=str))
    if document.get("error"):
        click.echo(f"error: {json.dumps(document['error'], default=str)}", err=True)


@click.command("coordinator")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(min=1),
              help="Most results applied in one database transaction. Bigger batches mean fewer "
                   "commits under load; the prefetch of the results queue is the same number.")
@click.option("--batch-wait-ms", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="How long a batch waits for more results after the first one arrived. Raising it "
                   "trades step-to-step latency for fewer commits.")
def coordinator(batch_size: int, batch_wait_ms: float) -> None:
    """Run a coordinator: apply worker results, fire retry and lease timers, publish the outbox.

    Run as many as you like (they coordinate through row locks). Stops gracefully on SIGTERM or
    Ctrl-C: the batch in hand is applied and its messages published before exiting.
    """
    from engine.coordinator import Coordinator
    from engine.messaging import Broker

    settings = _settings()
    _setup_logging(settings)
    if settings.broker_url.startswith("memory"):
        raise click.ClickException(
            "the in-memory broker only reaches threads of one process, so a separate coordinator "
            "would never see a worker; set BROKER_URL (or RABBITMQ_HOST), or use `flow up`"
        )
    store = _open_store(settings, pre_ping=False)
    _metrics_server(settings, "coordinator")
    stop = threading.Event()
    _stop_on_signals(stop)
    broker = Broker(settings)
    try:
        Coordinator(store, broker, settings, batch_size=batch_size, batch_wait=batch_wait_ms / 1000,
                    task_types=BUILTIN_TASK_TYPES).run(stop)
    finally:
        broker.close()


@click.command("up")
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1),
              help="Handler threads of the worker.")
@click.option("--no-web", is_flag=True, help="Do not serve the web app.")
def up(concurrency: int, no_web: bool) -> None:
    """Run everything in one process: migrations, a coordinator, workers, the scheduler, the web app.

    For a laptop: with nothing configured it uses SQLite in FLOW_DATA_DIR and the in-memory broker.
    The web app listens on PORT (default 3030). Ctrl-C or SIGTERM stops it gracefully.
    """
    settings = _settings()
    _setup_logging(settings)
    store = _open_store(settings, upgrade=True)
    threads = _Threads()
    _stop_on_signals(threads.stop)
    _metrics_server(settings, "up")
    _start_engine(threads, settings, store, concurrency=concurrency, grace=30.0)
    _start_scheduler(threads, settings, store)
    server = None if no_web else _start_web(threads, settings, store)
    click.echo(f"flow up: database {_redact(settings.database_url)}, broker {_redact(settings.broker_url)}; "
               "Ctrl-C to stop", err=True)
    try:
        while not threads.stop.wait(0.5):
            pass
    finally:
        if server is not None:
            server.shutdown()
        threads.join(timeout=40.0)
    click.echo("flow up: stopped", err=True)


def _start_scheduler(threads: _Threads, settings: Settings, store: Any) -> None:
    try:
        from engine.scheduler import Scheduler
    except ImportError:
        click.echo("flow up: the scheduler is not available in this build; running without it", err=True)
        return
    scheduler = Scheduler.from_store(store, settings)
    threads.start("flow-scheduler", lambda: scheduler.run(threads.stop))


def _start_web(threads: _Threads, settings: Settings, store: Any) -> Any:
    try:
        from web import create_app  # type: ignore[attr-defined]
    except ImportError:
        click.echo("flow up: the web app is not available in this build (web.create_app); "
                   "running without it", err=True)
        return None
    from werkzeug.serving import make_server

    app = create_app(settings=settings, store=store)
    # werkzeug's threaded server, not waitress (``flow serve``): it can be shut down from here.
    # Like `flow serve`: the embedded default takes requests without a token, so loopback only.
    host = "127.0.0.1" if settings.embedded else "0.0.0.0"
    server = make_server(host, settings.port, app, threaded=True)
    threads.start("flow-web", server.serve_forever)
    click.echo(f"flow up: web app on http://127.0.0.1:{settings.port}/", err=True)
    return server


def register(main: click.Group) -> None:
    """Add the runtime commands to the ``flow`` group."""
    for command in (db_group, deploy, run, coordinator, up):
        main.add_command(command)
    try:
        from workers.cli import add_worker_command
    except ImportError:  # the worker CLI is optional in a build without workers
        return
    add_worker_command(main)
