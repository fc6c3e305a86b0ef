"""The dashboard's index: tasks by status and finish time, with the task type (PostgreSQL: INCLUDE).

It serves the overview's "last hour" chart (``status IN ('completed', 'failed') AND finished_at >= ...``)
and its latest failures (``status = 'failed' ORDER BY finished_at DESC LIMIT 10``) without a scan of the
table: see ``engine/store/dashboard.py`` and ``bench/dashboard_bench.py``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f('ix_tasks_status_finished_at'), 'tasks', ['status', 'finished_at'], unique=False,
                    postgresql_include=['task_type'])


def downgrade() -> None:
    op.drop_index(op.f('ix_tasks_status_finished_at'), table_name='tasks')
