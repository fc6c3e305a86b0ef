"""Flow's web app: the JSON API (``web.api``) and, when present, the dashboard.

``create_app`` is the only entry point and does all the work; importing ``web`` does nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from engine.settings import Settings

if TYPE_CHECKING:  # Flask is imported when an app is built, so `flow` commands stay light
    from flask import Flask

MAX_BODY_BYTES = 1024 * 1024


def create_app(
    test_config: Mapping[str, Any] | None = None,
    *,
    settings: Settings | None = None,
    store: Any = None,
    served_task_types: Iterable[str] | None = None,
) -> Flask:
    """Build the app.

    Parameters:
        test_config: Flask config overrides (``API_READ_AUTH`` among them: whether reads need a token;
            default ``not settings.api_open_reads``).
        settings: the settings; default ``Settings.from_env()``.
        store: an ``engine.store.Store``; default one on ``settings.database_url`` (the embedded
            SQLite database is migrated on the fly; PostgreSQL needs ``flow db upgrade``).
        served_task_types: the task types that workers in this process consume (``flow up``), for
            the deploy's warning about step types no worker serves; default: ask the broker.

    Raises:
        engine.settings.SettingsError: an environment variable has a value Flow cannot use.
    """
    from flask import Flask

    from web.api import create_blueprint
    from web.api.context import Services
    from web.api.errors import register_error_handlers

    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        SECRET_KEY=settings.secret_key or secrets.token_hex(32),
        API_READ_AUTH=not settings.api_open_reads,
    )
    from web import cookies  # the session cookie's name and flags; trusted proxies

    cookies.init_app(app, settings)
    if test_config is not None:
        app.config.from_mapping(test_config)
    db_engine, store = _open_store(settings, store)
    app.extensions["flow"] = Services(
        settings=settings, store=store, db=db_engine, schedules=_schedule_store(settings, store, db_engine),
        read_auth=bool(app.config["API_READ_AUTH"]),
        served_task_types=None if served_task_types is None else frozenset(served_task_types),
    )
    register_error_handlers(app)
    app.register_blueprint(create_blueprint())
    from web import metrics  # /metrics (Prometheus), see docs/operations.md

    metrics.init_app(app)
    from web import tracing  # a span per request when OTEL_EXPORTER_OTLP_ENDPOINT is set

    tracing.init_app(app)
    _register_dashboard(app)
    return app


def _open_store(settings: Settings, store: Any) -> tuple[Any, Any]:
    """The SQLAlchemy engine and the store (built from ``settings`` unless given)."""
    from engine.store import db

    if store is not None:
        return store.engine, store
    from engine.store import Store

    engine = db.make_engine(settings.database_url)
    if settings.embedded:
        db.upgrade(engine)
    return engine, Store(engine, lease_seconds=settings.lease_seconds)


def _schedule_store(settings: Settings, store: Any, db_engine: Any) -> Any:
    from engine.store.schedule_deploys import StoreLauncher
    from engine.store.schedules import ScheduleStore

    return ScheduleStore(db_engine, StoreLauncher(store), catchup_window=settings.catchup_window_seconds,
                         clock=store.clock)


def _register_dashboard(app: Flask) -> None:
    """Mount the dashboard (pages, login, static files) beside the API."""
    from web import dashboard

    dashboard.init_app(app)
