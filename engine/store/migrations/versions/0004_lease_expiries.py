"""Tasks count the lease expiries of their current attempt.

A lease expiry re-dispatches the same attempt (same idempotency key, next fencing token); only after
``FLOW_MAX_DELIVERIES`` of them does the attempt fail with class ``timeout``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks') as batch:
        batch.add_column(sa.Column('lease_expiries', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('tasks') as batch:
        batch.drop_column('lease_expiries')
