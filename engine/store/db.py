"""Database engines and schema migrations.

``make_engine`` gives each backend the settings it needs; ``upgrade`` applies the Alembic migrations
shipped inside the package, so ``flow db upgrade`` works from any directory, without an
``alembic.ini`` next to it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from dsl.errors import FlowError
from engine.settings import POSTGRES_DRIVER, normalize_database_url


class DriverMissing(FlowError, RuntimeError):
    """The database URL names a driver (a Python module) that is not installed; the message names
    the fix."""


def _create_engine(url: str, **kwargs: Any) -> Engine:
    try:
        return create_engine(url, **kwargs)
    except ModuleNotFoundError as exc:
        raise DriverMissing(_driver_hint(url, exc)) from exc


def _driver_hint(url: str, exc: ModuleNotFoundError) -> str:
    parsed = make_url(url)
    module = exc.name or str(exc)
    shipped = f"postgresql+{POSTGRES_DRIVER}://"
    if parsed.get_backend_name() == "postgresql":
        return (
            f"No module named {module!r}: the database URL asks for the PostgreSQL driver "
            f"{parsed.get_driver_name()!r}, which is not installed. Fix: write the URL as "
            f"{shipped}... (or plain postgresql://, which Flow maps to the psycopg2 driver it "
            f"installs), or install that driver into Flow's environment (for psycopg 3: "
            f"pip install 'psycopg[binary]')"
        )
    return (
        f"No module named {module!r}: the database URL {parsed.drivername}:// needs a driver that is "
        f"not installed. Fix: install it into Flow's environment, or use a database Flow ships a "
        f"driver for: {shipped}... (PostgreSQL) or sqlite:///PATH"
    )


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``, configured for the backend.

    ``url`` is normalised first (``postgresql://`` and ``postgres://`` get the psycopg2 driver Flow
    installs, see ``engine.settings.normalize_database_url``); a URL whose driver is not installed
    raises ``DriverMissing`` with the fix in its message.

    SQLite (the embedded default): creates the data directory, turns on WAL (readers don't block the
    writer) and foreign keys, and waits up to 30 s for the write lock instead of failing at once.
    PostgreSQL: checks pooled connections before use, so a restarted server costs one reconnect,
    not a failed transaction.
    """
    url = normalize_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            directory = os.path.dirname(os.path.abspath(database))
            os.makedirs(directory, exist_ok=True)
        engine = _create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)
        _configure_sqlite(engine)
        install_after_commit(engine)
        return engine
    options: dict[str, Any] = {
        # Not SQLAlchemy's pre-ping (a round trip before every transaction): ``_ping_when_idle``
        # pings only a connection that sat in the pool, which is where a restarted server leaves
        # broken ones; a busy process reuses its connections within milliseconds and never pings.
        "pool_pre_ping": False,
        "pool_size": 10,
        "max_overflow": 20,
        "pool_recycle": 1800,
    }
    ping_idle = kwargs.pop("ping_idle_after", IDLE_PING_AFTER)
    explicit_pre_ping = "pool_pre_ping" in kwargs
    options.update(kwargs)
    engine = _create_engine(url, **options)
    if not explicit_pre_ping and ping_idle is not None:
        _ping_when_idle(engine, float(ping_idle))
    install_after_commit(engine)
    return engine


# -- after commit ---------------------------------------------------------------------------------
# Side effects of a transaction that must happen once, only if it committed: metrics counters (a
# transaction that fails at COMMIT, e.g. a cut connection, is retried by the coordinator and would
# count twice). They wait on the pooled connection and run right after the driver's COMMIT
# returned; any rollback (explicit, on error, or the pool's reset) drops them.

_AFTER_COMMIT = "flow_after_commit"


def after_commit(conn: Connection, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the transaction ``conn`` is in commits; never if it rolls back."""
    install_after_commit(conn.engine)
    conn.info.setdefault(_AFTER_COMMIT, []).append(callback)


def install_after_commit(engine: Engine) -> None:
    """Wrap the engine dialect's ``do_commit``/``do_rollback`` (once per engine) so that the
    callbacks of ``after_commit`` run after a successful COMMIT and are dropped on a rollback."""
    dialect = engine.dialect
    if getattr(dialect, "_flow_after_commit", False):
        return
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def _pending(dbapi_connection: Any) -> list[Callable[[], None]]:
        try:
            info = dbapi_connection.info  # the pool's proxy: its record's info
        except (AttributeError, NotImplementedError):  # a raw or ad-hoc DBAPI connection
            return []
        if not isinstance(info, dict):
            return []
        return info.pop(_AFTER_COMMIT, None) or []

    def do_commit(dbapi_connection: Any) -> None:
        try:
            commit(dbapi_connection)
        except BaseException:
            _pending(dbapi_connection)  # the outcome is unknown: count nothing
            raise
        for callback in _pending(dbapi_connection):
            try:
                callback()
            except Exception:  # a metric must never fail a committed transaction
                logging.getLogger("flow.store").exception("after-commit callback failed")

    def do_rollback(dbapi_connection: Any) -> None:
        _pending(dbapi_connection)
        rollback(dbapi_connection)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        connection.info.pop(_AFTER_COMMIT, None)  # nothing left over from an earlier transaction

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]
    dialect._flow_after_commit = True  # type: ignore[attr-defined]


# Seconds a pooled PostgreSQL connection may sit unused before its next checkout pings it.
IDLE_PING_AFTER = 1.0


def _ping_when_idle(engine: Engine, after: float) -> None:
    """Ping a connection at checkout only if it was idle in the pool for ``after`` seconds; a dead
    one is replaced by a fresh connection (the pool retries the checkout), so a database restart
    costs a reconnect, not a failed request."""
    import time

    from sqlalchemy import exc

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["flow_checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("flow_checked_in")
        if since is None or time.monotonic() - since < after:
            return
        try:
            ok = engine.dialect.do_ping(dbapi_connection)
        except Exception:
            ok = False
        if not ok:
            raise exc.DisconnectionError("the pooled connection is gone")


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # pysqlite's own transaction handling issues BEGIN lazily (and not before SELECT); take it
        # over so that a transaction starts at the first statement, like on PostgreSQL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: two transactions that read then write can never
        # both read the same state (SQLite's answer to SELECT ... FOR UPDATE). Reads marked
        # ``read_only`` (see ``read_only``) start a plain deferred transaction and, under WAL,
        # never wait for the writer.
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


READ_ONLY = "flow_read_only"


def read_only(engine: Engine) -> Connection:
    """A connection for reads only (queries): on SQLite it does not take the write lock."""
    return engine.connect().execution_options(**{READ_ONLY: True})


def _as_engine(engine_or_url: Engine | str) -> tuple[Engine, bool]:
    if isinstance(engine_or_url, Engine):
        return engine_or_url, False
    return make_engine(engine_or_url), True


def alembic_config() -> Config:
    """The Alembic configuration of the migrations packaged in ``engine/migrations``."""
    config = Config()
    location = resources.files("engine.store") / "migrations"
    config.set_main_option("script_location", str(location))
    return config


def head_revision() -> str | None:
    """The newest migration shipped with this version of Flow."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(engine_or_url: Engine | str, revision: str = "head") -> None:
    """Apply the migrations up to ``revision`` (default: the newest). Safe to run again."""
    engine, owned = _as_engine(engine_or_url)
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        if owned:
            engine.dispose()


def current_revision(engine_or_url: Engine | str) -> str | None:
    """The migration the database is at, or None for an empty database."""
    engine, owned = _as_engine(engine_or_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if owned:
            engine.dispose()


def is_up_to_date(engine_or_url: Engine | str) -> bool:
    """True when the database has every migration of this version of Flow (else: flow db upgrade)."""
    return current_revision(engine_or_url) == head_revision()
