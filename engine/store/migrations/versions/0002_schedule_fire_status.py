"""Schedule fires record their outcome: fired, missed or failed (and why it failed).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite rebuilds the table; PostgreSQL gets plain ALTER TABLE ... ADD COLUMN.
    with op.batch_alter_table('schedule_fires') as batch:
        batch.add_column(sa.Column('status', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('error', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('schedule_fires') as batch:
        batch.drop_column('error')
        batch.drop_column('status')
