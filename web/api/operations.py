"""``@operation``: what a view promises, in one place, read by auth and by ``/api/openapi.json``.

Each API view is decorated once with its summary, body schema, query schema, answers and the role it
needs; the OpenAPI document is generated from these records and the app's URL map, so a route
without a record is caught by the documentation test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, TypeVar

Role = Literal["public", "viewer", "operator", "admin"]
View = TypeVar("View", bound=Callable[..., Any])

ATTRIBUTE = "_flow_operation"


@dataclass(frozen=True)
class Operation:
    """The documented contract of one view."""

    summary: str
    tag: str
    role: Role
    responses: Mapping[int, tuple[str, str | None]]
    body: str | None = None
    body_required: bool = True
    text_body: bool = False
    query: Mapping[str, Any] | None = None
    description: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def operation(
    summary: str,
    *,
    tag: str,
    role: Role,
    responses: Mapping[int, tuple[str, str | None]],
    body: str | None = None,
    body_required: bool = True,
    text_body: bool = False,
    query: Mapping[str, Any] | None = None,
    description: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Callable[[View], View]:
    """Attach an :class:`Operation` to a view.

    ``responses`` maps a status to ``(description, component schema name or None)``; ``body`` names
    the component schema of the request body; ``role`` is the least role that may call the view
    (``public`` needs no token even when reads are protected).
    """

    record = Operation(summary, tag, role, dict(responses), body, body_required, text_body, query,
                       description, dict(headers or {}))

    def decorate(view: View) -> View:
        setattr(view, ATTRIBUTE, record)
        return view

    return decorate


def operation_of(view: Callable[..., Any] | None) -> Operation | None:
    """The record attached to ``view``, if any."""
    return getattr(view, ATTRIBUTE, None) if view is not None else None
