"""``flow serve``: the web app (JSON API and dashboard) on ``PORT`` (default 3030), served by waitress.

``flow/cli/main.py`` owns the ``flow`` group and registers this command with ``serve.register(main)``.
"""

from __future__ import annotations

import logging
import signal
import threading

import click

from engine.settings import Settings, SettingsError

log = logging.getLogger("flow.serve")


def _default_host(settings: Settings) -> str:
    # The embedded default takes mutations without a token (see docs/api.md), so it listens on
    # loopback only; a configured deployment listens on every interface.
    return "127.0.0.1" if settings.embedded else "0.0.0.0"


@click.command("serve")
@click.option("--host", default=None, help="Interface to listen on. Default: 127.0.0.1 on the embedded "
              "default (no token needed there), else 0.0.0.0.")
@click.option("--port", type=int, default=None, help="Port. Default: PORT, else 3030.")
@click.option("--threads", type=click.IntRange(1, 256), default=8, show_default=True,
              help="Request threads. Each holds at most one database connection at a time.")
@click.option("--dev", is_flag=True, help="Flask's development server with the reloader (never in production).")
def serve(host: str | None, port: int | None, threads: int, dev: bool) -> None:
    """Serve the JSON API (and the dashboard) over HTTP."""
    from web import create_app

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    if not logging.getLogger().handlers:
        from engine.observability.logs import setup_logging

        setup_logging(settings)
    if not settings.embedded:
        _check_database(settings)
    if not settings.api_token and not settings.embedded:
        click.echo("warning: FLOW_API_TOKEN is not set: every mutation will be refused with 401", err=True)
    app = create_app(settings=settings)
    host = host or _default_host(settings)
    port = port or settings.port
    if dev:
        app.run(host=host, port=port, debug=True)
        return
    from web.wire_errors import waitress_server

    # waitress's own refusals (a body past max_request_body_size) come in the API's JSON envelope.
    server = waitress_server(app, host=host, port=port, threads=threads,
                             max_request_body_size=2 * 1024 * 1024, ident="flow")
    click.echo(f"flow serve: listening on http://{host}:{port} (API under /api)", err=True)
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


def register(group: click.Group) -> None:
    """Register ``serve`` on the ``flow`` group."""
    group.add_command(serve)
