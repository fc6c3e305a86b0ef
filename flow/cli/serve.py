"""``flow serve``: the web app (JSON API and dashboard) on ``PORT`` (default 3030).

On PostgreSQL it runs gunicorn: several processes (``--workers``, default the CPU count, 2 to 4), each
with ``--threads`` request threads (``gthread`` workers, keep-alive), so that the API uses every core
(Python runs one thread at a time per process). On the embedded default it runs waitress in one
process (the in-memory broker cannot be shared between processes).

``flow/cli/main.py`` owns the ``flow`` group and registers this command with ``serve.register(main)``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import click

from engine.settings import Settings, SettingsError

log = logging.getLogger("flow.serve")


def _default_host(settings: Settings) -> str:
    # The embedded default takes mutations without a token (see docs/api.md), so it listens on
    # loopback only; a configured deployment listens on every interface.
    return "127.0.0.1" if settings.embedded else "0.0.0.0"


def _workers_default() -> int:
    return max(2, min(4, os.cpu_count() or 1))


@click.command("serve")
@click.option("--host", default=None, help="Interface to listen on. Default: 127.0.0.1 on the embedded "
              "default (no token needed there), else 0.0.0.0.")
@click.option("--port", type=int, default=None, help="Port. Default: PORT, else 3030.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Server processes (gunicorn). Default: the CPU count, at least 2 and at most 4; always "
                   "1 on the embedded default (its in-memory broker lives in one process).")
@click.option("--threads", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Request threads per process. Each holds at most one database connection at a time; "
                   "half of them may hold a `GET /api/runs/ID?wait=` (FLOW_MAX_WAITERS).")
@click.option("--server", "server_kind", type=click.Choice(["gunicorn", "waitress"]), default=None,
              help="The HTTP server. Default: gunicorn on PostgreSQL, waitress (one process) on the "
                   "embedded default.")
@click.option("--dev", is_flag=True, help="Flask's development server with the reloader (never in production).")
def serve(host: str | None, port: int | None, workers: int | None, threads: int, server_kind: str | None,
          dev: bool) -> None:
    """Serve the JSON API (and the dashboard) over HTTP."""
    from web import create_app

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    if not settings.api_token and not settings.embedded:
        click.echo("warning: FLOW_API_TOKEN is not set: every mutation will be refused with 401", err=True)
    if not logging.getLogger().handlers:
        from engine.observability.logs import setup_logging

        setup_logging(settings)
    if not settings.embedded:
        _check_database(settings)
    host = host or _default_host(settings)
    port = port or settings.port
    _check_port_free(host, port)
    kind = server_kind or ("waitress" if settings.embedded else "gunicorn")
    processes = 1 if settings.embedded or kind == "waitress" else (workers or _workers_default())
    config = {"FLOW_MAX_WAITERS": max(1, threads // 2)}
    if dev:
        create_app(config, settings=settings).run(host=host, port=port, debug=True)
        return
    click.echo(f"flow serve: listening on http://{host}:{port} (API under /api; {kind}, {processes} "
               f"process{'es' if processes > 1 else ''} x {threads} threads)", err=True)
    if kind == "gunicorn":
        _gunicorn(lambda: create_app(config, settings=settings), host, port, processes, threads)
        return
    from web.wire_errors import waitress_server

    app = create_app(config, settings=settings)
    # waitress's own refusals (a body past max_request_body_size) come in the API's JSON envelope.
    server = waitress_server(app, host=host, port=port, threads=threads,
                             max_request_body_size=2 * 1024 * 1024, ident="flow")
    _stop_on_sigterm()
    server.run()


def _check_database(settings: Settings) -> None:
    """Refuse to serve a database with an old schema. One that is unreachable is no reason not to
    serve: ``/api/ready`` answers 503 until it is up (``/api/health`` says which part is down), and
    a background thread waits for it with backoff, logging each try, then checks its schema."""
    from engine.store import db
    from flow.cli.common import unreachable, wait_for_database

    try:
        current = db.is_up_to_date(settings.database_url)
    except db.DriverMissing as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        if not unreachable(exc):
            raise
    else:
        if not current:
            raise click.ClickException("the database is not at the newest schema; run `flow db upgrade` first")
        return

    def wait() -> None:
        if wait_for_database(settings, lambda: db.is_up_to_date(settings.database_url), role="flow serve"):
            return
        log.error("flow serve: the database is not at the newest schema; run `flow db upgrade` "
                  "(/api/ready answers 503 until then)")

    log.warning("flow serve: the database is unreachable; serving anyway, /api/ready answers 503 until it is up")
    threading.Thread(target=wait, name="flow-serve-db-wait", daemon=True).start()


def _stop_on_sigterm() -> None:
    """SIGTERM stops waitress like Ctrl-C: its loop catches KeyboardInterrupt, lets the request
    threads finish their request, and ``serve`` returns (exit status 0)."""

    def stop(_signum: int, _frame: object) -> None:
        log.info("received SIGTERM; stopping after the requests in progress")
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _check_port_free(host: str, port: int) -> None:
    """A one-line error naming the port if something listens there already (not a traceback)."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} is already in use on {host}: stop what listens there, or pick another "
                    f"port with --port or PORT") from None
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _gunicorn(factory: Callable[[], Any], host: str, port: int, workers: int, threads: int) -> None:
    """Run gunicorn with ``workers`` processes of ``threads`` threads (the ``gthread`` worker), each
    process building its own app after the fork (its own database pool and listener)."""
    from gunicorn.app.base import BaseApplication

    from web.gunicorn_errors import WORKER_CLASS

    class FlowServer(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                "workers": workers,
                # gthread, with gunicorn's own refusals (414/431 and friends) in JSON
                "worker_class": WORKER_CLASS,
                "threads": threads,
                "keepalive": 30,  # clients keep their connection between calls
                "timeout": 120,  # a worker silent this long is restarted (waits answer within 60 s)
                "graceful_timeout": 30,
                "accesslog": None,
                "errorlog": "-",
                "loglevel": "warning",
                "proc_name": "flow-serve",
                "limit_request_field_size": 16384,
            }
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return factory()

    FlowServer().run()


def register(group: click.Group) -> None:
    """Register ``serve`` on the ``flow`` group."""
    group.add_command(serve)
