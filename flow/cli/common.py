"""What the commands of ``flow`` share: the settings, logging, the metrics server, the store,
deploying a file, and parsing ``-p key=value`` params."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import click

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


def open_store(settings: Settings, *, upgrade: bool | None = None, pre_ping: bool = True) -> Any:
    """A ``Store`` on the configured database; the embedded database is migrated on the fly.

    ``pre_ping=False`` (the coordinator): no ``SELECT 1`` round trip (an autocommit statement,
    which PostgreSQL also counts as a commit) before every transaction; the coordinator's loop
    retries a pass that a broken connection failed, and the pool then reconnects."""
    from engine.store import Store, db

    engine = db.make_engine(settings.database_url, **({} if pre_ping else {"pool_pre_ping": False}))
    if upgrade if upgrade is not None else settings.embedded:
        db.upgrade(engine)
    elif not db.is_up_to_date(engine):
        raise click.ClickException(
            f"the database at {redact_url(settings.database_url)} is not at the newest schema; "
            "run `flow db upgrade` first"
        )
    return Store(engine, lease_seconds=settings.lease_seconds, max_deliveries=settings.max_deliveries)


def render_compile_failure(exc: Any, source: str) -> str:
    from dsl.errors import render_diagnostic

    diagnostics = getattr(exc, "diagnostics", None) or []
    if not diagnostics:
        return str(exc)
    return "\n".join(render_diagnostic(d, source) for d in diagnostics)


def deploy_file(store: Any, path: str) -> list[Any]:
    """Deploy one file; prints its compile errors and raises ``SystemExit(1)`` when it has some."""
    from engine.core.errors import CompileFailed
    from engine.store.schedule_deploys import deploy_with_schedules

    source = Path(path).read_text(encoding="utf-8")
    try:
        # Schedules are registered on deploy, replaced on redeploy, removed when they disappear.
        return deploy_with_schedules(store, source, path)
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
