"""Backfills of schedules over a past range, and runs found by their business keys.

- ``backfills``: one row per ``flow schedules backfill`` (range, ``max_parallel``);
  ``schedule_fires.backfill_id`` ties its fires to it (status ``queued`` until a slot is free),
  ``runs.backfill_id`` marks the runs it started.
- ``runs.search`` holds the values of the workflow's ``search { ... }`` clause as text, and
  ``run_search_keys`` indexes them by ``(key, value, created_at)`` so that
  ``GET /api/runs?search.order=4711`` reads the index, not the runs (``bench/search_bench.py``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

JsonType = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'backfills',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('schedule_id', sa.String(length=36), nullable=False),
        sa.Column('range_start', sa.DateTime(timezone=True), nullable=False),
        sa.Column('range_end', sa.DateTime(timezone=True), nullable=False),
        sa.Column('max_parallel', sa.Integer(), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['schedule_id'], ['schedules.id'], name=op.f('fk_backfills_schedule_id_schedules')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_backfills')),
    )
    op.create_index(op.f('ix_backfills_schedule_id'), 'backfills', ['schedule_id'], unique=False)
    op.create_table(
        'run_search_keys',
        sa.Column('run_id', sa.String(length=36), nullable=False),
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('value', sa.String(length=255), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_run_search_keys_run_id_runs')),
        sa.PrimaryKeyConstraint('run_id', 'key', name=op.f('pk_run_search_keys')),
    )
    op.create_index(op.f('ix_run_search_keys_key_value_created_at'), 'run_search_keys',
                    ['key', 'value', 'created_at'], unique=False)
    with op.batch_alter_table('runs') as batch:
        batch.add_column(sa.Column('search', JsonType, nullable=True))
        batch.add_column(sa.Column('backfill_id', sa.String(length=36), nullable=True))
    with op.batch_alter_table('schedule_fires') as batch:
        batch.add_column(sa.Column('backfill_id', sa.String(length=36), nullable=True))
        batch.create_foreign_key(op.f('fk_schedule_fires_backfill_id_backfills'), 'backfills', ['backfill_id'], ['id'])
    op.create_index('ix_schedule_fires_backfill_queued', 'schedule_fires', ['backfill_id', 'fire_time'], unique=False,
                    postgresql_where=sa.text("status = 'queued'"), sqlite_where=sa.text("status = 'queued'"))


def downgrade() -> None:
    op.drop_index('ix_schedule_fires_backfill_queued', table_name='schedule_fires')
    with op.batch_alter_table('schedule_fires') as batch:
        batch.drop_constraint(op.f('fk_schedule_fires_backfill_id_backfills'), type_='foreignkey')
        batch.drop_column('backfill_id')
    with op.batch_alter_table('runs') as batch:
        batch.drop_column('backfill_id')
        batch.drop_column('search')
    op.drop_index(op.f('ix_run_search_keys_key_value_created_at'), table_name='run_search_keys')
    op.drop_table('run_search_keys')
    op.drop_index(op.f('ix_backfills_schedule_id'), table_name='backfills')
    op.drop_table('backfills')
