"""Server-side dashboard sessions, login throttling, the audit trail, and API tokens that expire.

- ``sessions``: one row per dashboard login; the cookie carries only the signed key (its SHA-256 is
  the row's id), so logging out, disabling a user or changing their role or password ends it.
- ``login_failures``: failed password and token checks, counted per user and per client address.
- ``audit_events``: who did what, to what, when, from where, with what outcome.
- ``api_tokens.expires_at``: ``flow token create --expires 30d``; null never expires.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    with op.batch_alter_table('api_tokens') as batch:
        batch.add_column(sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('sessions',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('client_address', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sessions_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sessions'))
    )
    op.create_index(op.f('ix_sessions_user_id'), 'sessions', ['user_id'], unique=False)
    op.create_table('login_failures',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('username', sa.String(length=150), nullable=True),
    sa.Column('client_address', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_login_failures'))
    )
    op.create_index(op.f('ix_login_failures_username_created_at'), 'login_failures', ['username', 'created_at'],
                    unique=False)
    op.create_index(op.f('ix_login_failures_client_address_created_at'), 'login_failures',
                    ['client_address', 'created_at'], unique=False)
    op.create_table('audit_events',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=200), nullable=True),
    sa.Column('run_id', sa.String(length=36), nullable=True),
    sa.Column('client_address', sa.String(length=64), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('status', sa.Integer(), nullable=True),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    op.create_index(op.f('ix_audit_events_at'), 'audit_events', ['at'], unique=False)
    op.create_index(op.f('ix_audit_events_run_id'), 'audit_events', ['run_id'], unique=False)
    op.create_index(op.f('ix_audit_events_actor_at'), 'audit_events', ['actor', 'at'], unique=False)
    op.create_index(op.f('ix_audit_events_action_at'), 'audit_events', ['action', 'at'], unique=False)


def downgrade() -> None:
    op.drop_table('audit_events')
    op.drop_table('login_failures')
    op.drop_table('sessions')
    with op.batch_alter_table('api_tokens') as batch:
        batch.drop_column('expires_at')
