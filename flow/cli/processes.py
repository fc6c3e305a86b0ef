"""The long-running commands of ``flow``: ``coordinator`` and ``up``, and the threads and signal
handling that ``up`` and ``run --local`` share."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any, Callable

import click

from engine.settings import Settings, redact_url
from flow.cli.common import (
    BUILTIN_TASK_TYPES,
    make_db_engine,
    metrics_server,
    open_store,
    schema_ready,
    settings_from_env,
    setup_logging,
    wait_for_database,
)
from flow.cli.python_steps import import_option, import_step_types, module_names

log = logging.getLogger("flow.cli")


class Threads:
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


def start_engine(threads: Threads, settings: Settings, store: Any, *, concurrency: int, grace: float = 5.0,
                 step_types: Sequence[Any] = ()) -> tuple[str, ...]:
    """A coordinator and a worker for every built-in task type and for the Python ``step_types``,
    in threads of this process; returns the task types the worker consumes."""
    from engine.runtime.coordinator import Coordinator
    from engine.runtime.messaging import Broker
    from workers import python_steps
    from workers.consumer import Worker
    from workers.registry import Registry

    registry = Registry.with_builtins(load_plugins=True)
    try:
        task_types = (*BUILTIN_TASK_TYPES, *python_steps.register(registry, step_types))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    broker = Broker(settings)
    coordinator = Coordinator(store, broker, settings, task_types=task_types)
    worker = Worker(settings, task_types, concurrency=concurrency, grace_period=grace, registry=registry)
    threads.start("flow-coordinator", lambda: coordinator.run(threads.stop))
    threads.start("flow-worker", lambda: worker.run(threads.stop))
    return task_types


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT (Ctrl-C) set ``stop``: the loops finish their batch and exit."""

    def handler(signum: int, _frame: Any) -> None:
        log.info("received %s; stopping gracefully", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


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
    from engine.runtime.coordinator import Coordinator
    from engine.runtime.messaging import Broker

    settings = settings_from_env()
    setup_logging(settings)
    if settings.broker_url.startswith("memory"):
        raise click.ClickException(
            "the in-memory broker only reaches threads of one process, so a separate coordinator "
            "would never see a worker; set BROKER_URL (or RABBITMQ_HOST), or use `flow up`"
        )
    stop = threading.Event()
    stop_on_signals(stop)
    metrics_server(settings, "coordinator")
    # A database that is not up yet (a restart, compose ordering) is waited for, with a log line.
    store = open_store(settings, pre_ping=False, wait="coordinator", stop=stop)
    if store is None:
        return  # stopped while waiting
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
@import_option
def up(concurrency: int, no_web: bool, imports: tuple[str, ...]) -> None:
    """Run everything in one process: migrations, a coordinator, workers, the scheduler, the web app.

    For a laptop: with nothing configured it uses SQLite in FLOW_DATA_DIR and the in-memory broker.
    The web app listens on PORT (default 3030). Ctrl-C or SIGTERM stops it gracefully.
    """
    from engine.store import Store

    settings = settings_from_env()
    setup_logging(settings)
    step_types = import_step_types(module_names(imports))
    threads = Threads()
    stop_on_signals(threads.stop)
    metrics_server(settings, "up")
    engine = make_db_engine(settings)
    store = Store(engine, lease_seconds=settings.lease_seconds, max_deliveries=settings.max_deliveries)
    # What the in-process worker will consume, known before it starts (the web app shows it).
    served = (*BUILTIN_TASK_TYPES, *(step.task_type for step in step_types))
    # The web app first: while the database is unreachable, /api/ready answers 503 (not ready).
    server = None if no_web else _start_web(threads, settings, store, served)
    try:
        if wait_for_database(settings, lambda: schema_ready(settings, engine, upgrade=True),
                             role="flow up", stop=threads.stop) is not None:
            start_engine(threads, settings, store, concurrency=concurrency, grace=30.0, step_types=step_types)
            _start_scheduler(threads, settings, store)
            click.echo(f"flow up: database {redact_url(settings.database_url)}, broker "
                       f"{redact_url(settings.broker_url)}; Ctrl-C to stop", err=True)
        while not threads.stop.wait(0.5):
            pass
    finally:
        if server is not None:
            server.shutdown()
        threads.join(timeout=40.0)
    click.echo("flow up: stopped", err=True)


def _start_scheduler(threads: Threads, settings: Settings, store: Any) -> None:
    from engine.runtime.scheduler import Scheduler

    scheduler = Scheduler.from_store(store, settings)
    threads.start("flow-scheduler", lambda: scheduler.run(threads.stop))


def _start_web(threads: Threads, settings: Settings, store: Any, served: Sequence[str] = ()) -> Any:
    from werkzeug.serving import make_server

    from web import create_app
    from web.wire_errors import JsonErrorRequestHandler

    app = create_app(settings=settings, store=store, served_task_types=served)
    # werkzeug's threaded server, not waitress (``flow serve``): it can be shut down from here.
    # Like `flow serve`: the embedded default takes requests without a token, so loopback only.
    host = "127.0.0.1" if settings.embedded else "0.0.0.0"
    # JsonErrorRequestHandler: the server's own 414 and 431 in the API's JSON envelope, not HTML.
    server = make_server(host, settings.port, app, threaded=True, request_handler=JsonErrorRequestHandler)
    threads.start("flow-web", server.serve_forever)
    click.echo(f"flow up: web app on http://127.0.0.1:{settings.port}/", err=True)
    return server


def register(main: click.Group) -> None:
    """Add ``coordinator`` and ``up`` to the ``flow`` group."""
    for command in (coordinator, up):
        main.add_command(command)
