"""documents of every kind: a document's kind, its blob and pages; blobs; Files API uploads

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 22:00:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('document', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=16), server_default='text', nullable=False))
        batch_op.add_column(sa.Column('blob_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('pages', sa.Integer(), nullable=True))
    op.create_table(
        'blob',
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('media_type', sa.String(length=64), nullable=False),
        sa.Column('size_bytes', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'),
                  nullable=False),
        sa.PrimaryKeyConstraint('sha256'),
    )
    op.create_table(
        'uploaded_file',
        sa.Column('file_id', sa.String(length=128), nullable=False),
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('blob_sha256', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('(CURRENT_TIMESTAMP)'),
                  nullable=False),
        sa.Column('deleted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('file_id'),
    )
    op.create_index('ix_uploaded_file_open', 'uploaded_file', ['deleted_at'], unique=False)
    op.create_index('ix_uploaded_file_run_id', 'uploaded_file', ['run_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_uploaded_file_run_id', table_name='uploaded_file')
    op.drop_index('ix_uploaded_file_open', table_name='uploaded_file')
    op.drop_table('uploaded_file')
    op.drop_table('blob')
    with op.batch_alter_table('document', schema=None) as batch_op:
        batch_op.drop_column('pages')
        batch_op.drop_column('blob_sha256')
        batch_op.drop_column('kind')
