"""The API's other answers as small frozen records: deployed versions and dead letters."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Generic, Mapping, TypeVar

from flow._api import parse_time

__all__ = ["DeployedVersion", "DeadLetter", "Page"]

T = TypeVar("T")


@dataclass(frozen=True)
class DeployedVersion:
    """A workflow version that ``deploy`` stored, or found unchanged (``created`` False)."""

    name: str
    version: int
    created: bool

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DeployedVersion":
        return cls(name=str(data["name"]), version=int(data["version"]), created=bool(data.get("created", True)))


@dataclass(frozen=True)
class DeadLetter:
    """A task that ran out of attempts: its ``reason``, its last ``error`` and, in ``document``, the
    whole answer (the message it was sent with ...)."""

    id: str
    task_id: str | None
    run_id: str | None
    task_type: str | None
    reason: str | None
    error: dict[str, Any] | None
    created_at: dt.datetime | None
    requeued_at: dt.datetime | None
    discarded_at: dt.datetime | None
    document: dict[str, Any] = field(repr=False, compare=False)

    @property
    def open(self) -> bool:
        """Neither requeued nor discarded yet."""
        return self.requeued_at is None and self.discarded_at is None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DeadLetter":
        def text(key: str) -> str | None:
            value = data.get(key)
            return None if value is None else str(value)

        return cls(
            id=str(data["id"]), task_id=text("task_id"), run_id=text("run_id"), task_type=text("task_type"),
            reason=text("reason"), error=data.get("error"), created_at=parse_time(data.get("created_at")),
            requeued_at=parse_time(data.get("requeued_at")), discarded_at=parse_time(data.get("discarded_at")),
            document=dict(data),
        )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``next_cursor`` is None on the last one."""

    items: list[T]
    next_cursor: str | None

    def __iter__(self) -> Any:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)
