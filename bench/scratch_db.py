"""A scratch PostgreSQL database for a benchmark: made fresh, dropped at the end."""

from __future__ import annotations

import uuid
from typing import Any


def fresh_database(admin_url: str, prefix: str = "flow_bench") -> tuple[str, Any]:
    """Create ``PREFIX_<random>`` on the server of ``admin_url``; its SQLAlchemy URL and a handle
    for ``drop``."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(admin_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    return f"{base}/{name}", (admin, name)


def drop(handle: Any) -> None:
    """Drop the database ``fresh_database`` made (connections to it are ended)."""
    admin, name = handle
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()
