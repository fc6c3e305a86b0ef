"""Delivery leases: an index for ``pending`` tasks with a lease (issues 16, 19).

A worker that holds a delivery without starting it reports ``received``; the task stays
``pending`` with ``lease_expires_at`` set, and the coordinator's timer pass (every 100 ms) looks
for expired ones. The existing partial index covers ``processing`` only; without this one the pass
would read every ``pending`` task of a backlog. See ``engine/store/timers.py``.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_tasks_lease_pending', 'tasks', ['lease_expires_at'], unique=False,
                    postgresql_where=sa.text("status = 'pending'"),
                    sqlite_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    op.drop_index('ix_tasks_lease_pending', table_name='tasks')
