"""a slot's lease: a claimed slot is held until lease_until, renewed while its call runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('worker_outcome', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('worker_outcome', schema=None) as batch_op:
        batch_op.drop_column('lease_until')
