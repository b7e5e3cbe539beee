"""skipped slots (adaptive voting), a follower's cache miss, and the batch lane's provider batches

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 18:00:00

The status "skipped" needs no DDL (statuses are plain strings, see 0004).
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('worker_outcome', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cache_miss', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('provider_batch', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_worker_outcome_provider_batch', ['provider_batch'], unique=False)
    op.create_table(
        'provider_batch',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('model', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('requests', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'),
                  nullable=False),
        sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('collected_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('polled_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_provider_batch_open', 'provider_batch', ['collected_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_provider_batch_open', table_name='provider_batch')
    op.drop_table('provider_batch')
    with op.batch_alter_table('worker_outcome', schema=None) as batch_op:
        batch_op.drop_index('ix_worker_outcome_provider_batch')
        batch_op.drop_column('provider_batch')
        batch_op.drop_column('cache_miss')
    op.execute("UPDATE worker_outcome SET status = 'failed' WHERE status = 'skipped'")
