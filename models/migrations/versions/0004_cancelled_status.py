"""cancelled: a terminal status of runs and documents, and the status of a slot never called

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-09 09:00:00

Statuses are stored as plain strings (VARCHAR(16), `native_enum=False`, no CHECK constraint: see
`models.tables._enum`), so the new value "cancelled" (9 characters) needs no DDL on SQLite or
PostgreSQL. The revision exists so that a database stamped 0004 is known to be read by code that
understands the value: an older chorus would fail on `RunStatus("cancelled")` when it loads such a row.
"""
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    # An older schema's code cannot read the value: cancelled runs become failed, with their reason kept.
    for table in ('run', 'document'):
        op.execute(f"UPDATE {table} SET status = 'failed' WHERE status = 'cancelled'")
    op.execute("UPDATE worker_outcome SET status = 'failed' WHERE status = 'cancelled'")
