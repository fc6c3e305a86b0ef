"""One frozen settings object built from the environment (see the README's configuration table).

``DATABASE_URL`` and ``BROKER_URL`` win; else the task API's variables (``DB_HOST`` ..., ``RABBITMQ_HOST``
...) build the URLs; with neither, the embedded default: SQLite in a local file and kombu's in-memory
transport, so that ``flow run`` works on a machine with nothing installed.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Mapping
from urllib.parse import quote

from dsl.errors import FlowError


class SettingsError(FlowError, ValueError):
    """A setting has a value that Flow cannot use; the message names the variable and the fix."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer; set it to a whole number like {default}") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is too small; it must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set it to a number like {default}") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} is too small; it must be at least {minimum}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} is not a boolean; use true or false")


def _duration(env: Mapping[str, str], name: str, default: float) -> float:
    from engine.core.durations import parse_duration

    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse_duration(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={exc}") from None


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = env.get(name) or ""
    return tuple(part.strip() for part in raw.split(",") if part.strip())


# The PostgreSQL driver Flow installs (psycopg2-binary). SQLAlchemy 2.1 picks psycopg 3 for a bare
# ``postgresql://``, which Flow does not install; so a URL without a driver gets this one.
POSTGRES_DRIVER = "psycopg2"


def normalize_database_url(url: str) -> str:
    """``url`` with the driver Flow ships: ``postgresql://`` and ``postgres://`` (what hosting
    providers hand out) become ``postgresql+psycopg2://``; ``postgres+DRIVER://`` becomes
    ``postgresql+DRIVER://`` (SQLAlchemy knows no ``postgres`` dialect). Other URLs are unchanged,
    including an explicit driver such as ``postgresql+psycopg://`` (then that driver must be
    installed)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    dialect, plus, driver = scheme.partition("+")
    if dialect.lower() not in ("postgres", "postgresql"):
        return url
    return f"postgresql+{driver if plus and driver else POSTGRES_DRIVER}://{rest}"


def _database_url(env: Mapping[str, str], data_dir: str) -> str:
    if env.get("DATABASE_URL"):
        return normalize_database_url(env["DATABASE_URL"])
    if env.get("DB_HOST"):
        user = quote(env.get("DB_USERNAME", "postgres"), safe="")
        password = quote(env.get("DB_PASSWORD", "postgres"), safe="")
        port = _int(env, "DB_PORT", 5432, 1)
        name = env.get("DB_NAME", "queue_worker")
        return f"postgresql+psycopg2://{user}:{password}@{env['DB_HOST']}:{port}/{name}"
    return f"sqlite:///{os.path.join(data_dir, 'flow.db')}"


def _broker_url(env: Mapping[str, str]) -> str:
    if env.get("BROKER_URL"):
        return env["BROKER_URL"]
    if env.get("RABBITMQ_HOST"):
        user = quote(env.get("RABBITMQ_USER", "guest"), safe="")
        password = quote(env.get("RABBITMQ_PASSWORD", "guest"), safe="")
        port = _int(env, "RABBITMQ_PORT", 5672, 1)
        return f"amqp://{user}:{password}@{env['RABBITMQ_HOST']}:{port}//"
    return "memory://"


@dataclass(frozen=True)
class Settings:
    database_url: str
    broker_url: str
    port: int = 3030
    data_dir: str = ".flow"
    http_allowlist: tuple[str, ...] = ()
    http_max_response_bytes: int = 10 * 1024 * 1024
    quorum_queues: bool = False
    prefetch: int = 32
    lease_seconds: float = 60.0
    # FLOW_MAX_DELIVERIES: lease expiries of one attempt before it fails with class ``timeout``
    # (each expiry re-dispatches the same attempt with the same idempotency key).
    max_deliveries: int = 5
    catchup_window_seconds: float = 3600.0
    overload_pending_threshold: int = 10_000
    overload_failed_ratio: float = 0.5
    api_token: str | None = None
    # FLOW_API_OPEN_READS: API reads (GET) need no token. Off by default: reads show payloads and
    # outputs. The embedded default is open anyway unless FLOW_API_TOKEN is set.
    api_open_reads: bool = False
    secret_key: str | None = None
    log_format: str = "auto"
    secrets: Mapping[str, str] = field(default_factory=dict)
    metrics_port: int = 0  # FLOW_METRICS_PORT: /metrics of coordinator, worker, scheduler (0 = off)
    metrics_host: str = "127.0.0.1"
    retention_days: float = 0.0  # FLOW_RETENTION_DAYS: the scheduler prunes older finished work (0 = off)
    # FLOW_SESSION_IDLE / FLOW_SESSION_LIFETIME: a dashboard session ends after this long without a
    # request, and this long after its login whatever happens.
    session_idle_seconds: float = 8 * 3600.0
    session_lifetime_seconds: float = 7 * 86400.0
    # FLOW_COOKIE_SECURE: mark the session cookie Secure even when the request came over plain HTTP
    # (it is Secure anyway whenever the request came over HTTPS).
    cookie_secure: bool = False
    # FLOW_TRUSTED_PROXIES: how many reverse proxies sit in front of `flow serve`. With 1 or more,
    # X-Forwarded-For/-Proto/-Host from that many hops are believed (werkzeug's ProxyFix); with 0
    # (the default) they are ignored, since any client could send them.
    trusted_proxies: int = 0

    @property
    def embedded(self) -> bool:
        """True when running on the embedded default (SQLite and the in-memory broker)."""
        return self.database_url.startswith("sqlite") and self.broker_url.startswith("memory")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        data_dir = env.get("FLOW_DATA_DIR") or ".flow"
        log_format = env.get("FLOW_LOG_FORMAT", "auto")
        if log_format not in ("auto", "json", "text"):
            raise SettingsError(f"FLOW_LOG_FORMAT={log_format!r}: use auto, json or text")
        return cls(
            database_url=_database_url(env, data_dir),
            broker_url=_broker_url(env),
            port=_int(env, "PORT", 3030, 1),
            data_dir=data_dir,
            http_allowlist=_list(env, "FLOW_HTTP_ALLOWLIST"),
            http_max_response_bytes=_int(env, "FLOW_HTTP_MAX_RESPONSE_BYTES", 10 * 1024 * 1024, 1),
            quorum_queues=_bool(env, "FLOW_QUORUM_QUEUES", False),
            prefetch=_int(env, "FLOW_PREFETCH", 32, 1),
            lease_seconds=_float(env, "FLOW_LEASE_SECONDS", 60.0, 1.0),
            max_deliveries=_int(env, "FLOW_MAX_DELIVERIES", 5, 1),
            catchup_window_seconds=_float(env, "FLOW_CATCHUP_WINDOW_SECONDS", 3600.0, 0.0),
            overload_pending_threshold=_int(env, "FLOW_OVERLOAD_PENDING", 10_000, 1),
            overload_failed_ratio=_float(env, "FLOW_OVERLOAD_FAILED_RATIO", 0.5, 0.0),
            api_token=env.get("FLOW_API_TOKEN") or None,
            # FLOW_API_READ_AUTH=false (the older spelling) also opens reads.
            api_open_reads=_bool(env, "FLOW_API_OPEN_READS", not _bool(env, "FLOW_API_READ_AUTH", True)),
            secret_key=env.get("FLOW_SECRET_KEY") or None,
            log_format=log_format,
            metrics_port=_int(env, "FLOW_METRICS_PORT", 0, 0),
            metrics_host=env.get("FLOW_METRICS_HOST") or "127.0.0.1",
            retention_days=_float(env, "FLOW_RETENTION_DAYS", 0.0, 0.0),
            session_idle_seconds=_duration(env, "FLOW_SESSION_IDLE", 8 * 3600.0),
            session_lifetime_seconds=_duration(env, "FLOW_SESSION_LIFETIME", 7 * 86400.0),
            cookie_secure=_bool(env, "FLOW_COOKIE_SECURE", False),
            trusted_proxies=_int(env, "FLOW_TRUSTED_PROXIES", 0, 0),
            secrets=step_secrets(env),
        )


STEP_SECRET_PREFIX = "FLOW_STEP_SECRET_"
# The older prefix, which collided with FLOW_SECRET_KEY (a setting, not a secret of the steps):
# still read, with a warning, for one release.
OLD_STEP_SECRET_PREFIX = "FLOW_SECRET_"
NOT_STEP_SECRETS = frozenset({"FLOW_SECRET_KEY"})


def step_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """``secrets.NAME`` for the workflows: ``FLOW_STEP_SECRET_NAME``, and the deprecated
    ``FLOW_SECRET_NAME`` (a warning names each; the new spelling wins when both are set)."""
    found: dict[str, str] = {}
    old = sorted(key for key in env if key.startswith(OLD_STEP_SECRET_PREFIX) and key not in NOT_STEP_SECRETS)
    for key in old:
        found[key[len(OLD_STEP_SECRET_PREFIX):]] = env[key]
    if old:
        renamed = ", ".join(f"{key} -> {STEP_SECRET_PREFIX}{key[len(OLD_STEP_SECRET_PREFIX):]}" for key in old)
        warnings.warn(f"the FLOW_SECRET_ prefix for step secrets is deprecated and will be removed in the "
                      f"next release; rename {renamed}", FutureWarning, stacklevel=3)
    for key, value in env.items():
        if key.startswith(STEP_SECRET_PREFIX):
            found[key[len(STEP_SECRET_PREFIX):]] = value
    return found


def redact_url(url: str) -> str:
    """``url`` without its password, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" not in creds:
        return url  # no password to hide
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
