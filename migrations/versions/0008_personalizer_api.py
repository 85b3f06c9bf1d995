"""Personalizer-compatible API: its settings and evaluations, and longer ids in the log

Personalizer clients choose their own event ids (up to 256 characters; a multi-slot rank's
decisions add the slot id) and action ids (up to 256), which the log's 64-character columns
could not hold. SQLite does not enforce a VARCHAR's length, so only PostgreSQL's columns
change (rebuilding SQLite's decision table for nothing would take as long as the log is big).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 02:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WIDENED = (
    ("decisions", "event_id", 400),
    ("decisions", "chosen_id", 256),
    ("rewards", "event_id", 400),
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column, length in WIDENED:
            op.alter_column(
                table,
                column,
                type_=sa.String(length),
                existing_type=sa.String(64),
                existing_nullable=False,
            )
    op.create_table(
        "personalizer_settings",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_personalizer_settings")),
    )
    op.create_table(
        "personalizer_evaluations",
        sa.Column("id", sa.String(length=256), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        sa.Column("end_time", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("optimize", sa.Boolean(), nullable=False),
        sa.Column("policies", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_personalizer_evaluations")),
    )


def downgrade() -> None:
    op.drop_table("personalizer_evaluations")
    op.drop_table("personalizer_settings")
    if op.get_bind().dialect.name == "postgresql":
        for table, column, _ in WIDENED:
            op.alter_column(table, column, type_=sa.String(64), existing_nullable=False)
