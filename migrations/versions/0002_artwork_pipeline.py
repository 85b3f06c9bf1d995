"""artwork pipeline: placeholders, embeddings, crop centres and the pipeline fingerprint

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("artworks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("placeholder", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("embedding", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("crop", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("processed_with", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("artworks", schema=None) as batch_op:
        batch_op.drop_column("processed_with")
        batch_op.drop_column("crop")
        batch_op.drop_column("embedding")
        batch_op.drop_column("placeholder")
