"""Initial schema: the tables of docs/internals.md.

Written to match engine/store/models.py exactly (tests/integration/test_migrations.py checks it).

Revision ID: 0001
Revises: 
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateSequence, DropSequence

# The column types of engine/store/models.py, spelled out here so that later model changes never rewrite
# history.
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
FINISHED_SEQ = sa.Sequence("tasks_finished_seq")

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute(CreateSequence(FINISHED_SEQ))
    op.create_table('counters',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_counters'))
    )
    # SQLite takes finished_seq from here (PostgreSQL uses the sequence); the row exists everywhere
    # so that the store never has to create it.
    op.execute(sa.text("INSERT INTO counters (name, value) VALUES ('tasks_finished_seq', 0)"))
    op.create_table('outbox',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('exchange', sa.String(length=200), nullable=False),
    sa.Column('routing_key', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('headers', JSON_TYPE, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    op.create_table('schedules',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('workflow_name', sa.String(length=200), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('expression', sa.String(length=200), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('params', JSON_TYPE, nullable=False),
    sa.Column('task', JSON_TYPE, nullable=True),
    sa.Column('catchup', sa.Boolean(), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('next_fire_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_fire_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedules')),
    sa.UniqueConstraint('name', name=op.f('uq_schedules_name'))
    )
    op.create_index(op.f('ix_schedules_enabled_next_fire_at'), 'schedules', ['enabled', 'next_fire_at'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('username', sa.String(length=150), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('workflow_versions',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('filename', sa.String(length=500), nullable=True),
    sa.Column('source_hash', sa.String(length=64), nullable=False),
    sa.Column('spec', JSON_TYPE, nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workflow_versions')),
    sa.UniqueConstraint('name', 'source_hash', name=op.f('uq_workflow_versions_name_source_hash')),
    sa.UniqueConstraint('name', 'version', name=op.f('uq_workflow_versions_name_version'))
    )
    op.create_table('api_tokens',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_api_tokens_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    op.create_index(op.f('ix_api_tokens_user_id'), 'api_tokens', ['user_id'], unique=False)

    op.create_table('runs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('workflow_version_id', sa.String(length=36), nullable=False),
    sa.Column('workflow_name', sa.String(length=200), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('params', JSON_TYPE, nullable=False),
    sa.Column('values', JSON_TYPE, nullable=False),
    sa.Column('output', JSON_TYPE, nullable=True),
    sa.Column('error', JSON_TYPE, nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('parent_run_id', sa.String(length=36), nullable=True),
    sa.Column('scheduled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('deadline', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_run_id'], ['runs.id'], name=op.f('fk_runs_parent_run_id_runs')),
    sa.ForeignKeyConstraint(['workflow_version_id'], ['workflow_versions.id'], name=op.f('fk_runs_workflow_version_id_workflow_versions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_runs_idempotency_key'))
    )
    op.create_index(op.f('ix_runs_created_at_id'), 'runs', ['created_at', 'id'], unique=False)
    op.create_index('ix_runs_deadline_running', 'runs', ['deadline'], unique=False, postgresql_where=sa.text("status = 'running'"), sqlite_where=sa.text("status = 'running'"))
    op.create_index(op.f('ix_runs_parent_run_id'), 'runs', ['parent_run_id'], unique=False)
    op.create_index(op.f('ix_runs_status_created_at'), 'runs', ['status', 'created_at'], unique=False)
    op.create_index(op.f('ix_runs_workflow_name_created_at'), 'runs', ['workflow_name', 'created_at'], unique=False)

    op.create_table('schedule_fires',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('schedule_id', sa.String(length=36), nullable=False),
    sa.Column('fire_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=True),
    sa.Column('task_id', sa.String(length=36), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['schedule_id'], ['schedules.id'], name=op.f('fk_schedule_fires_schedule_id_schedules')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_schedule_fires')),
    sa.UniqueConstraint('schedule_id', 'fire_time', name=op.f('uq_schedule_fires_schedule_id_fire_time'))
    )
    op.create_table('tasks',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('step', sa.String(length=200), nullable=True),
    sa.Column('item', sa.Integer(), nullable=True),
    sa.Column('task_type', sa.String(length=200), nullable=False),
    sa.Column('payload', JSON_TYPE, nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('max_attempts', sa.Integer(), nullable=False),
    sa.Column('retry', JSON_TYPE, nullable=True),
    sa.Column('timeout', sa.Float(), nullable=True),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('fencing_token', sa.Integer(), nullable=False),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('output', JSON_TYPE, nullable=True),
    sa.Column('error', JSON_TYPE, nullable=True),
    sa.Column('finished_seq', sa.BigInteger(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_tasks_run_id_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_tasks_idempotency_key'))
    )
    op.create_index(op.f('ix_tasks_created_at'), 'tasks', ['created_at'], unique=False)
    op.create_index('ix_tasks_lease_processing', 'tasks', ['lease_expires_at'], unique=False, postgresql_where=sa.text("status = 'processing'"), sqlite_where=sa.text("status = 'processing'"))
    op.create_index('ix_tasks_next_attempt_retrying', 'tasks', ['next_attempt_at'], unique=False, postgresql_where=sa.text("status = 'retrying'"), sqlite_where=sa.text("status = 'retrying'"))
    op.create_index(op.f('ix_tasks_run_id'), 'tasks', ['run_id'], unique=False)
    op.create_index(op.f('ix_tasks_status'), 'tasks', ['status'], unique=False)
    op.create_index(op.f('ix_tasks_task_type_status'), 'tasks', ['task_type', 'status'], unique=False)

    op.create_table('dead_letters',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('task_id', sa.String(length=36), nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=True),
    sa.Column('task_type', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('error', JSON_TYPE, nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('requeued_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('discarded_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_dead_letters_task_id_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dead_letters'))
    )
    op.create_index(op.f('ix_dead_letters_created_at'), 'dead_letters', ['created_at'], unique=False)
    op.create_index(op.f('ix_dead_letters_task_id'), 'dead_letters', ['task_id'], unique=False)

    op.create_table('task_logs',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('task_id', sa.String(length=36), nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', JSON_TYPE, nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_task_logs_task_id_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_logs'))
    )
    op.create_index(op.f('ix_task_logs_run_id_id'), 'task_logs', ['run_id', 'id'], unique=False)
    op.create_index(op.f('ix_task_logs_task_id_id'), 'task_logs', ['task_id', 'id'], unique=False)



def downgrade() -> None:
    op.drop_index(op.f('ix_task_logs_task_id_id'), table_name='task_logs')
    op.drop_index(op.f('ix_task_logs_run_id_id'), table_name='task_logs')

    op.drop_table('task_logs')
    op.drop_index(op.f('ix_dead_letters_task_id'), table_name='dead_letters')
    op.drop_index(op.f('ix_dead_letters_created_at'), table_name='dead_letters')

    op.drop_table('dead_letters')
    op.drop_index(op.f('ix_tasks_task_type_status'), table_name='tasks')
    op.drop_index(op.f('ix_tasks_status'), table_name='tasks')
    op.drop_index(op.f('ix_tasks_run_id'), table_name='tasks')
    op.drop_index('ix_tasks_next_attempt_retrying', table_name='tasks', postgresql_where=sa.text("status = 'retrying'"), sqlite_where=sa.text("status = 'retrying'"))
    op.drop_index('ix_tasks_lease_processing', table_name='tasks', postgresql_where=sa.text("status = 'processing'"), sqlite_where=sa.text("status = 'processing'"))
    op.drop_index(op.f('ix_tasks_created_at'), table_name='tasks')

    op.drop_table('tasks')
    op.drop_table('schedule_fires')
    op.drop_index(op.f('ix_runs_workflow_name_created_at'), table_name='runs')
    op.drop_index(op.f('ix_runs_status_created_at'), table_name='runs')
    op.drop_index(op.f('ix_runs_parent_run_id'), table_name='runs')
    op.drop_index('ix_runs_deadline_running', table_name='runs', postgresql_where=sa.text("status = 'running'"), sqlite_where=sa.text("status = 'running'"))
    op.drop_index(op.f('ix_runs_created_at_id'), table_name='runs')

    op.drop_table('runs')
    op.drop_index(op.f('ix_api_tokens_user_id'), table_name='api_tokens')

    op.drop_table('api_tokens')
    op.drop_table('workflow_versions')
    op.drop_table('users')
    op.drop_index(op.f('ix_schedules_enabled_next_fire_at'), table_name='schedules')

    op.drop_table('schedules')
    op.drop_table('outbox')
    op.drop_table('counters')
    if op.get_bind().dialect.name == "postgresql":
        op.execute(DropSequence(FINISHED_SEQ))
