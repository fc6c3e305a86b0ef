"""The services a request works with, kept on ``app.extensions["flow"]`` by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from engine.settings import Settings


@dataclass(frozen=True)
class Services:
    """What the views need: the settings, the engine's store and the SQLAlchemy engine it uses."""

    settings: Settings
    store: Any  # engine.store.Store; typed loosely so the app builds while the store lands
    db: Any  # sqlalchemy.Engine, for the health check
    schedules: Any  # engine.store.schedules.ScheduleStore
    read_auth: bool = False


def services() -> Services:
    """The services of the current app."""
    return current_app.extensions["flow"]  # type: ignore[no-any-return]


def store() -> Any:
    """The engine store of the current app."""
    return services().store
