"""The services a request works with, kept on ``app.extensions["flow"]`` by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine

from engine.settings import Settings
from engine.store import Store
from engine.store.schedules import ScheduleStore


@dataclass(frozen=True)
class Services:
    """What the views need: the settings, the engine's store and the SQLAlchemy engine it uses."""

    settings: Settings
    store: Store
    db: Engine  # for the health check
    schedules: ScheduleStore
    read_auth: bool = False
    # The task types the workers of this process consume (`flow up`), None when they are elsewhere.
    served_task_types: frozenset[str] | None = None


def services() -> Services:
    """The services of the current app."""
    found: Services = current_app.extensions["flow"]
    return found


def store() -> Store:
    """The engine store of the current app."""
    return services().store
