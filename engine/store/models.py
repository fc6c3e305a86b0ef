"""SQLAlchemy 2 models of the engine's tables (see docs/internals.md, "Tables").

Plain declarations only: no behaviour, no queries (all SQL lives in ``engine/store*.py``). The same
metadata runs on PostgreSQL (production) and SQLite (the embedded default), so:

- ids are UUID strings (36 characters), except the append-only logs (``task_logs``, ``outbox``,
  ``schedule_fires``), whose integer ids give their order;
- JSON columns are JSONB on PostgreSQL and JSON (text) on SQLite;
- timestamps are timezone-aware and always written in UTC (SQLite stores them without an offset).

``engine/store/migrations/versions`` must match this file exactly; ``tests/integration/test_migrations.py``
checks that with Alembic's ``compare_metadata`` on both databases.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Sequence,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Explicit constraint names, so that migrations and models agree on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an ``INTEGER PRIMARY KEY``; PostgreSQL gets 64-bit ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Timestamp = DateTime(timezone=True)

ID_LENGTH = 36
NAME_LENGTH = 200
STATUS_LENGTH = 32
SEARCH_KEY_LENGTH = 64
SEARCH_VALUE_LENGTH = 255

# ``tasks.finished_seq`` on PostgreSQL: a sequence never blocks concurrent coordinators. SQLite has
# no sequences; there the store takes the value from the ``counters`` row of the same name (SQLite
# has one writer at a time anyway).
FINISHED_SEQ_NAME = "tasks_finished_seq"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


finished_seq = Sequence(FINISHED_SEQ_NAME, metadata=Base.metadata)


class WorkflowVersion(Base):
    __tablename__ = "workflow_versions"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        UniqueConstraint("name", "source_hash"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    filename: Mapped[str | None] = mapped_column(String(500))
    source_hash: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = (
        Index(None, "status", "created_at"),
        Index(None, "workflow_name", "created_at"),
        # Keyset pagination of the run list: ORDER BY created_at DESC, id DESC.
        Index(None, "created_at", "id"),
        Index(None, "parent_run_id"),
        # The timer pass looks only at running runs with a deadline.
        Index(
            "ix_runs_deadline_running",
            "deadline",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    workflow_version_id: Mapped[str] = mapped_column(ForeignKey("workflow_versions.id"))
    workflow_name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    params: Mapped[dict[str, Any]] = mapped_column(JsonType)
    values: Mapped[dict[str, Any]] = mapped_column(JsonType)
    output: Mapped[Any | None] = mapped_column(JsonType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    parent_run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    scheduled_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # The business keys of the workflow's `search { ... }` clause, as text (0006); looked up
    # through ``run_search_keys``, shown with the run.
    search: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    # The backfill that started this run (``flow schedules backfill``), else null (0006).
    backfill_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    deadline: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class RunSearchKey(Base):
    """One business key of a run: ``GET /api/runs?search.KEY=VALUE`` reads this index (0006).

    ``created_at`` repeats the run's so that a key shared by many runs gives its newest runs
    from the index alone, in the run list's order.
    """

    __tablename__ = "run_search_keys"
    __table_args__ = (Index(None, "key", "value", "created_at"),)

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(SEARCH_KEY_LENGTH), primary_key=True)
    value: Mapped[str] = mapped_column(String(SEARCH_VALUE_LENGTH))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (
        Index(None, "status"),
        Index(None, "task_type", "status"),
        Index(None, "run_id"),
        Index(None, "created_at"),
        # The dashboard: tasks finished in the last hour, and the latest failures (0005).
        Index(None, "status", "finished_at", postgresql_include=["task_type"]),
        Index(
            "ix_tasks_next_attempt_retrying",
            "next_attempt_at",
            postgresql_where=text("status = 'retrying'"),
            sqlite_where=text("status = 'retrying'"),
        ),
        Index(
            "ix_tasks_lease_processing",
            "lease_expires_at",
            postgresql_where=text("status = 'processing'"),
            sqlite_where=text("status = 'processing'"),
        ),
        # Delivery leases of tasks held unstarted by a worker (0008; engine/store/timers.py).
        Index(
            "ix_tasks_lease_pending",
            "lease_expires_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(ForeignKey("runs.id"))
    kind: Mapped[str] = mapped_column(String(16))
    step: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    item: Mapped[int | None] = mapped_column(Integer)
    task_type: Mapped[str] = mapped_column(String(NAME_LENGTH))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    status: Mapped[str] = mapped_column(String(STATUS_LENGTH))
    attempt: Mapped[int] = mapped_column(Integer)
    max_attempts: Mapped[int] = mapped_column(Integer)
    retry: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    timeout: Mapped[float | None] = mapped_column(Float)
    next_attempt_at: Mapped[datetime | None] = mapped_column(Timestamp)
    fencing_token: Mapped[int] = mapped_column(Integer)
    lease_expires_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Lease expiries of the current attempt: each one re-dispatches the same attempt (same
    # idempotency key); FLOW_MAX_DELIVERIES of them fail the attempt (class ``timeout``).
    lease_expiries: Mapped[int] = mapped_column(Integer, server_default="0")
    dispatched_at: Mapped[datetime | None] = mapped_column(Timestamp)
    output: Mapped[Any | None] = mapped_column(JsonType)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    finished_seq: Mapped[int | None] = mapped_column(BigInteger)
    # A client's idempotency key for a standalone task (the task API's POST /api/task); the key of an
    # attempt sent to workers is derived, f"{id}:{attempt}", and never stored.
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    finished_at: Mapped[datetime | None] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class TaskLog(Base):
    __tablename__ = "task_logs"
    __table_args__ = (
        Index(None, "task_id", "id"),
        Index(None, "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"))
    run_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    attempt: Mapped[int | None] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class Outbox(Base):
    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    exchange: Mapped[str] = mapped_column(String(NAME_LENGTH))
    routing_key: Mapped[str] = mapped_column(String(NAME_LENGTH))
    body: Mapped[str] = mapped_column(Text)
    headers: Mapped[dict[str, Any]] = mapped_column(JsonType)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class DeadLetter(Base):
    __tablename__ = "dead_letters"
    __table_args__ = (
        Index(None, "task_id"),
        Index(None, "created_at"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id"))
    run_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    task_type: Mapped[str] = mapped_column(String(NAME_LENGTH))
    reason: Mapped[str] = mapped_column(Text)
    error: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    requeued_at: Mapped[datetime | None] = mapped_column(Timestamp)
    discarded_at: Mapped[datetime | None] = mapped_column(Timestamp)


class Schedule(Base):
    __tablename__ = "schedules"
    __table_args__ = (Index(None, "enabled", "next_fire_at"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    workflow_name: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    # "cron" | "every" | "at"; ``expression`` holds the cron line, the seconds, or the ISO time.
    kind: Mapped[str] = mapped_column(String(16))
    expression: Mapped[str] = mapped_column(String(NAME_LENGTH))
    timezone: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JsonType)
    # What a fire starts when it is not a workflow run (the task API's scheduled standalone tasks).
    task: Mapped[dict[str, Any] | None] = mapped_column(JsonType)
    catchup: Mapped[bool] = mapped_column(Boolean)
    enabled: Mapped[bool] = mapped_column(Boolean)
    # "flow": declared in a deployed .flow file; "api": created through the API.
    origin: Mapped[str] = mapped_column(String(16))
    next_fire_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_fire_at: Mapped[datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    updated_at: Mapped[datetime] = mapped_column(Timestamp)


class ScheduleFire(Base):
    __tablename__ = "schedule_fires"
    __table_args__ = (
        UniqueConstraint("schedule_id", "fire_time"),
        # The queued fires of backfills, for the scheduler's pass that starts them (0006).
        Index(
            "ix_schedule_fires_backfill_queued",
            "backfill_id",
            "fire_time",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id"))
    fire_time: Mapped[datetime] = mapped_column(Timestamp)
    run_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    task_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    # "fired" (started its run or task), "missed" (older than the catch-up window, or skipped by
    # ``catchup: false``), "failed" (the run could not start, e.g. the workflow was removed) or
    # "queued" (a backfill's fire waiting for a free slot under its ``max_parallel``).
    # Nullable so that rows written before migration 0002 stay valid; null reads as "fired".
    status: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    # The backfill that recorded this fire, else null (0006).
    backfill_id: Mapped[str | None] = mapped_column(ForeignKey("backfills.id"))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class Backfill(Base):
    """A request to run a schedule for a past range (``flow schedules backfill``, 0006)."""

    __tablename__ = "backfills"
    __table_args__ = (Index(None, "schedule_id"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id"))
    range_start: Mapped[datetime] = mapped_column(Timestamp)
    range_end: Mapped[datetime] = mapped_column(Timestamp)
    # At most this many of its runs in flight at once; null: all start at once.
    max_parallel: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    # "viewer" | "operator" | "admin" (see engine/store/auth.py); rows older than migration 0003
    # read as viewers.
    role: Mapped[str] = mapped_column(String(16), server_default="viewer")
    disabled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (Index(None, "user_id"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    # Only a hash of the token is stored; the token itself is shown once, when it is created.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # The first characters of the token, shown by `flow token list` so that people can tell tokens
    # apart; too short to guess the rest from.
    prefix: Mapped[str] = mapped_column(String(16), server_default="")
    role: Mapped[str] = mapped_column(String(16), server_default="viewer")
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    last_used_at: Mapped[datetime | None] = mapped_column(Timestamp)
    revoked_at: Mapped[datetime | None] = mapped_column(Timestamp)
    # Null: the token never expires (`flow token create --expires 30d` sets it; migration 0007).
    expires_at: Mapped[datetime | None] = mapped_column(Timestamp)


class DashboardSession(Base):
    """A dashboard login. The cookie carries the signed session key; only its SHA-256 is stored here,
    so that a copy of the table does not let anyone in. Ending a session sets ``ended_at``."""

    __tablename__ = "sessions"
    __table_args__ = (Index(None, "user_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    # The role at login: a role change refuses the session (the user logs in again with the new role).
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(Timestamp)
    # Written at most once a minute (SESSION_TOUCH_RESOLUTION), so a page view is not a write.
    last_seen_at: Mapped[datetime] = mapped_column(Timestamp)
    ended_at: Mapped[datetime | None] = mapped_column(Timestamp)
    client_address: Mapped[str | None] = mapped_column(String(64))


class LoginFailure(Base):
    """A failed password or token check, for throttling (``engine/store/throttle.py``). Kept in the
    database, not in memory, so that the limit holds across ``flow serve`` processes and restarts."""

    __tablename__ = "login_failures"
    __table_args__ = (Index(None, "username", "created_at"), Index(None, "client_address", "created_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # "password" (the dashboard's login form) or "token" (a bearer token of the API).
    kind: Mapped[str] = mapped_column(String(16))
    username: Mapped[str | None] = mapped_column(String(150))
    client_address: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(Timestamp)


class AuditEvent(Base):
    """One operator action (``engine/store/audit.py``): who, what, on what, when, from where, outcome."""

    __tablename__ = "audit_events"
    __table_args__ = (Index(None, "at"), Index(None, "run_id"), Index(None, "actor", "at"),
                      Index(None, "action", "at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(Timestamp)
    # The user's name, the token's name, "admin" (FLOW_API_TOKEN), "local" (the open embedded
    # default) or, for `flow token` and `flow user`, "cli:<OS user>".
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    # "dashboard", "api" or "cli".
    via: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    run_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    client_address: Mapped[str | None] = mapped_column(String(64))
    # "ok", "refused" (auth, throttle, CSRF) or "failed" (the action was not possible).
    outcome: Mapped[str] = mapped_column(String(16))
    status: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str | None] = mapped_column(Text)


class Counter(Base):
    """Named counters for SQLite, which has no sequences (see ``FINISHED_SEQ_NAME``)."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
