"""Decision mode (policy, apprentice, single) and per-slot learned-example counts.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("mode", sa.String(length=16), nullable=False, server_default="policy")
        )
    with op.batch_alter_table("policy_snapshots", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slot_examples", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("policy_snapshots", schema=None) as batch_op:
        batch_op.drop_column("slot_examples")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("mode")
