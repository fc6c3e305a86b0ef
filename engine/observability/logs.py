"""Process logging: JSON lines for machines, readable lines on a terminal, and no secrets in either.

``setup_logging(settings)`` is called once by each process entry point (``flow up``, ``serve``,
``coordinator``, ``worker``, ``scheduler``). The format follows ``FLOW_LOG_FORMAT``: ``json``, ``text``,
or ``auto`` (JSON unless stderr is a terminal). A JSON line has ``time`` (UTC, ISO 8601), ``level``,
``logger``, ``message`` and, when known, ``run_id``, ``task_id``, ``step`` (and ``attempt``), taken from
``extra=`` or from ``log_context`` (a contextvar the worker sets around each task); other ``extra=``
fields are kept too.

Every line goes through ``SecretMasker`` first: the values of ``FLOW_STEP_SECRET_*`` (and of the
deprecated ``FLOW_SECRET_*``), the API token, the session key, the passwords of the database and
broker URLs, and any ``Bearer`` token become ``***``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from engine.settings import Settings

MASK = "***"
CONTEXT_FIELDS = ("run_id", "task_id", "step", "attempt")

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("flow_log_context", default={})

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]+")
_URL_PASSWORD = re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.IGNORECASE)
# Shorter values would mask ordinary words ("on", "yes"); a secret that short is no secret anyway.
MIN_SECRET_LENGTH = 4


@contextlib.contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Add ``fields`` (run_id, task_id, step ...) to every log line of this thread/context."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def secret_values(settings: Settings) -> list[str]:
    """The strings that must never appear in a log line, longest first."""
    values = [*settings.secrets.values(), settings.api_token or "", settings.secret_key or ""]
    for url in (settings.database_url, settings.broker_url):
        try:
            password = urlsplit(url).password
        except ValueError:  # not a URL we can parse: the URL pattern still masks it
            password = None
        if password:
            values += [password, unquote(password)]
    unique = {v for v in values if v and len(v) >= MIN_SECRET_LENGTH}
    return sorted(unique, key=len, reverse=True)


class SecretMasker(logging.Filter):
    """Rewrites each record so that secrets, URL passwords and bearer tokens read ``***``.

    Attached to the handler (not a logger), so it sees the records of every library that
    propagates to the root logger. ``mask`` is also applied to the formatted line, which catches
    tracebacks and ``extra=`` values.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        text = _URL_PASSWORD.sub(rf"\1{MASK}@", text)
        return _BEARER.sub(rf"\1{MASK}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as logging does
            return True
        masked = self.mask(message)
        if masked != message or record.args:
            record.msg, record.args = masked, ()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; see the module docstring for the keys."""

    def __init__(self, masker: SecretMasker | None = None) -> None:
        super().__init__()
        self.masker = masker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_context.get())
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        line = json.dumps(entry, default=str, ensure_ascii=False)
        return self.masker.mask(line) if self.masker else line


class TextFormatter(logging.Formatter):
    """``time level logger: message [run_id=… task_id=… step=…]`` for people at a terminal."""

    def __init__(self, masker: SecretMasker | None = None) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        self.masker = masker

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = {**_context.get(), **{k: getattr(record, k) for k in CONTEXT_FIELDS if hasattr(record, k)}}
        if fields:
            extra = " ".join(f"{k}={fields[k]}" for k in CONTEXT_FIELDS if fields.get(k) is not None)
            first, sep, rest = line.partition("\n")  # keep a traceback below the message line
            line = f"{first} [{extra}]{sep}{rest}" if extra else line
        return self.masker.mask(line) if self.masker else line


def use_json(settings: Settings, stream: IO[str]) -> bool:
    if settings.log_format == "json":
        return True
    if settings.log_format == "text":
        return False
    isatty = getattr(stream, "isatty", None)
    return not (callable(isatty) and isatty())


def setup_logging(settings: Settings, level: int = logging.INFO, stream: IO[str] | None = None) -> logging.Handler:
    """Install Flow's handler on the root logger (replacing one installed before); the handler.

    Handlers that others installed (pytest's capture, for one) are left alone.
    """
    stream = stream or sys.stderr
    masker = SecretMasker(secret_values(settings))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(masker) if use_json(settings, stream) else TextFormatter(masker))
    handler.addFilter(masker)
    handler._flow = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_flow", False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Alembic narrates every plugin it loads at INFO; its migrations are what matter.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    # waitress logs a line per queue depth warning; kombu/amqp are chatty at INFO on reconnects.
    logging.getLogger("amqp").setLevel(logging.WARNING)
    return handler
