"""Rendering helpers: page-or-fragment, masked JSON for display, times, and the template globals."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, make_response, render_template, request
from markupsafe import Markup

from web.api.render import safe
from web.dashboard.security import can_act, csrf_token, current_user, is_admin

LIVE_RUN = frozenset({"pending", "running", "compensating"})
LIVE_TASK = frozenset({"pending", "processing", "retrying"})
_STYLE = re.compile(r"<style>.*?</style>", re.S)
_STATUS_CLASS = re.compile(r"[^a-z_]")


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def page(template: str, fragment: str, status: int = 200, **context: Any) -> Response:
    """Render the full ``template`` for a browser, or only ``fragment`` for an htmx request (the
    page ``{% include %}``s the fragment, so both show the same thing)."""
    html = render_template(fragment if is_htmx() else template, **context)
    response = make_response(html, status)
    response.vary.add("HX-Request")
    return response


def shown(value: Any) -> str:
    """``value`` as indented JSON for a ``<pre>``, with secrets masked (never evaluated)."""
    if value is None:
        return "null"
    return json.dumps(safe(value), indent=2, sort_keys=False, ensure_ascii=False, default=str)


def inline_svg(svg: str) -> Markup:
    """An SVG made by our own code (``dsl.graph``, ``charts``; every text in it XML-escaped) to inline
    in the page. Its ``<style>`` element is dropped, since the CSP forbids inline styles; the same
    rules live in ``static/dashboard.css``."""
    return Markup(_STYLE.sub("", svg))  # noqa: S704 - our own escaped SVG


def when(value: Any) -> str:
    """An ISO time as ``2030-01-31 09:00:05 UTC`` (the dashboard shows UTC everywhere)."""
    if not value:
        return "—"
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def ago(value: Any) -> str:
    """How long ago an ISO time was: ``12 s``, ``4 min``, ``3 h``, ``2 d``."""
    if not value:
        return ""
    try:
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0.0, (datetime.now(UTC) - moment).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def duration(start: Any, end: Any) -> str:
    if not start or not end:
        return ""
    try:
        seconds = (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except ValueError:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def status_class(status: Any) -> str:
    """``status-<name>`` for a CSS class (only ``a-z_`` kept, so a value can't add a class)."""
    return "status-" + _STATUS_CLASS.sub("", str(status or "unknown").lower())


def error_text(error: Any) -> str:
    """The one-line message of an error record (``{message, type, ...}``) or of a plain value."""
    if error is None:
        return ""
    if isinstance(error, dict):
        cleaned = safe(error)
        message = cleaned.get("message") or cleaned.get("error") or ""
        kind = cleaned.get("type") or cleaned.get("class") or ""
        return f"{kind}: {message}" if kind and message else str(message or kind or json.dumps(cleaned))
    return str(safe(error))


def register_template_helpers(app: Flask) -> None:
    app.jinja_env.globals.update(
        csrf_token=csrf_token, current_user=current_user, can_act=can_act, is_admin=is_admin, is_htmx=is_htmx,
        LIVE_RUN=LIVE_RUN, LIVE_TASK=LIVE_TASK,
    )
    app.jinja_env.filters.update(
        shown=shown, when=when, ago=ago, status_class=status_class, error_text=error_text,
        duration=duration,
    )
