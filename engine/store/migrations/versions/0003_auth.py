"""Auth: API tokens and dashboard users get a role; tokens keep a display prefix; users can be disabled.

Rows written before this migration (there is no way to create them before it) read as viewers.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Batch mode: SQLite rebuilds the tables; PostgreSQL gets plain ALTER TABLE ... ADD COLUMN.
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('role', sa.String(length=16), server_default='viewer', nullable=False))
        batch.add_column(sa.Column('disabled', sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table('api_tokens') as batch:
        batch.add_column(sa.Column('prefix', sa.String(length=16), server_default='', nullable=False))
        batch.add_column(sa.Column('role', sa.String(length=16), server_default='viewer', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('api_tokens') as batch:
        batch.drop_column('role')
        batch.drop_column('prefix')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('disabled')
        batch.drop_column('role')
