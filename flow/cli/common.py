"""What the commands of ``flow`` share: the settings, logging, the metrics server, the store,
deploying a file, and parsing ``-p key=value`` params."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

import click

from engine.core.errors import CompileFailed
from engine.settings import Settings, SettingsError, redact_url

log = logging.getLogger("flow.cli")

# The task types of the built-in handlers: what `flow up` and `flow run --local` consume.
BUILTIN_TASK_TYPES = ("http_request", "data_processing", "compensation", "noop")


def settings_from_env() -> Settings:
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def setup_logging(settings: Settings, level: int = logging.INFO) -> None:
    if logging.getLogger().handlers:
        return
    from engine.observability.logs import setup_logging as setup  # JSON lines, secrets masked

    setup(settings, level)


def metrics_server(settings: Settings, role: str) -> None:
    from engine.observability.metrics import start_metrics_server  # FLOW_METRICS_PORT (0 = off)

    start_metrics_server(settings, role)


# A long-running process that starts while its database is unreachable waits for it: first retry
# after STARTUP_BACKOFF seconds, doubling up to STARTUP_BACKOFF_MAX.
STARTUP_BACKOFF, STARTUP_BACKOFF_MAX = 0.5, 30.0

T = TypeVar("T")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` means "the database cannot be reached (yet)", worth waiting for: a refused
    or cut connection, a server starting up. Not a bad URL, a missing driver or a schema error."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def wait_for_database(settings: Settings, attempt: Callable[[], T], *, role: str,
                      stop: threading.Event | None = None, sleep: Callable[[float], bool] | None = None) -> T | None:
    """``attempt()`` until the database answers: each failure for want of the database is logged
    (``role``, the redacted URL, the next delay) and retried with capped exponential backoff.
    Returns ``attempt()``'s value, or None if ``stop`` was set while waiting."""
    stop = stop or threading.Event()
    sleep = sleep or stop.wait
    delay, tries = STARTUP_BACKOFF, 0
    while True:
        try:
            value = attempt()
        except Exception as exc:
            if not unreachable(exc):
                raise
            tries += 1
            from sqlalchemy.exc import DBAPIError  # loaded only once a database was needed

            cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
            reason = (str(cause).strip().splitlines() or [type(exc).__name__])[0]
            log.warning("%s: the database at %s is unreachable (%s); retrying in %.1fs (try %d)",
                        role, redact_url(settings.database_url), reason, delay, tries)
            if sleep(delay):
                return None
            delay = min(delay * 2, STARTUP_BACKOFF_MAX)
            continue
        if tries:
            log.info("%s: the database at %s answers; starting", role, redact_url(settings.database_url))
        return value


def make_db_engine(settings: Settings, **options: Any) -> Any:
    """``db.make_engine`` for the configured database; a missing driver is a usage error."""
    from engine.store import db

    try:
        return db.make_engine(settings.database_url, **options)
    except db.DriverMissing as exc:
        raise click.ClickException(str(exc)) from None


def schema_ready(settings: Settings, engine: Any, *, upgrade: bool | None = None) -> bool:
    """``check_schema``, then True: an attempt for ``wait_for_database`` (None means stopped)."""
    check_schema(settings, engine, upgrade=upgrade)
    return True


def check_schema(settings: Settings, engine: Any, *, upgrade: bool | None = None) -> None:
    """Migrate the embedded database (or when ``upgrade``), else insist on the newest schema."""
    from engine.store import db

    if upgrade if upgrade is not None else settings.embedded:
        db.upgrade(engine)
    elif not db.is_up_to_date(engine):
        raise click.ClickException(
            f"the database at {redact_url(settings.database_url)} is not at the newest schema; "
            "run `flow db upgrade` first"
        )


def open_store(settings: Settings, *, upgrade: bool | None = None, pre_ping: bool = True,
               wait: str | None = None, stop: threading.Event | None = None) -> Any:
    """A ``Store`` on the configured database; the embedded database is migrated on the fly.

    ``pre_ping=False`` (the coordinator): no ``SELECT 1`` round trip (an autocommit statement,
    which PostgreSQL also counts as a commit) before every transaction; the coordinator's loop
    retries a pass that a broken connection failed, and the pool then reconnects.

    ``wait="coordinator"`` (the long-running processes): an unreachable database is waited for
    (``wait_for_database``) instead of failing; None if ``stop`` was set meanwhile."""
    from engine.store import Store

    engine = make_db_engine(settings, **({} if pre_ping else {"pool_pre_ping": False}))
    if wait is None:
        check_schema(settings, engine, upgrade=upgrade)
    elif wait_for_database(settings, lambda: schema_ready(settings, engine, upgrade=upgrade), role=wait,
                           stop=stop) is None:
        return None
    return Store(engine, lease_seconds=settings.lease_seconds, max_deliveries=settings.max_deliveries)


def render_compile_failure(exc: CompileFailed, source: str) -> str:
    from dsl.errors import render_diagnostic

    if not exc.diagnostics:
        return str(exc)
    return "\n".join(render_diagnostic(d, source) for d in exc.diagnostics)


def deploy_file(store: Any, path: str, step_types: Mapping[str, Any] | None = None) -> list[Any]:
    """Deploy one file; prints its compile errors and raises ``SystemExit(1)`` when it has some.

    ``step_types``: the dotted step types its steps are checked against (``--steps``/``--import``).
    """
    from engine.core.errors import CompileFailed
    from engine.store.schedule_deploys import deploy_with_schedules

    source = Path(path).read_text(encoding="utf-8")
    try:
        # Schedules are registered on deploy, replaced on redeploy, removed when they disappear.
        return deploy_with_schedules(store, source, path, step_types=step_types)
    except CompileFailed as exc:
        click.echo(render_compile_failure(exc, source), err=True)
        raise SystemExit(1) from None


def parse_params(pairs: Sequence[str], params_json: str | None,
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
