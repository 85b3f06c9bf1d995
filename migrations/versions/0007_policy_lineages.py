"""policy lineages: a change of learning settings trains a new model from the log

`policy_lineages` holds each lineage's settings and status, `policy_settings` the settings
set through the API, and every snapshot names its lineage. Snapshots from before lineages
become lineage 1, serving, with the newest snapshot's VW arguments; its reward settings are
unknown, so the learner takes the current ones for it (`bandit.lineages`) rather than
retraining on upgrade.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 01:30:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "policy_lineages",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_cursor", sa.BigInteger(), nullable=False),
        sa.Column("serving_since", sa.DateTime(), nullable=True),
        sa.Column("retired_at", sa.DateTime(), nullable=True),
        sa.Column("note", sa.String(200), nullable=False),
    )
    op.create_index("ix_policy_lineages_status", "policy_lineages", ["status"])
    op.create_table(
        "policy_settings",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )
    with op.batch_alter_table("policy_snapshots") as batch:
        batch.add_column(sa.Column("lineage_id", sa.Integer(), nullable=True))
        batch.create_index("ix_policy_snapshots_lineage_id", ["lineage_id"])
    connection = op.get_bind()
    newest = connection.execute(
        sa.text("SELECT vw_args FROM policy_snapshots ORDER BY version DESC LIMIT 1")
    ).scalar()
    if newest is not None:
        now = datetime.now(UTC).replace(tzinfo=None)
        lineages = sa.table(
            "policy_lineages",
            sa.column("id", sa.Integer()),
            sa.column("created_at", sa.DateTime()),
            sa.column("settings", sa.JSON()),
            sa.column("status", sa.String()),
            sa.column("start_cursor", sa.BigInteger()),
            sa.column("serving_since", sa.DateTime()),
            sa.column("note", sa.String()),
        )
        op.bulk_insert(
            lineages,
            [
                {
                    "id": 1,
                    "created_at": now,
                    "settings": {"vw_args": newest, "reward_values": None},
                    "status": "serving",
                    "start_cursor": 0,
                    "serving_since": now,
                    "note": "snapshots from before lineages",
                }
            ],
        )
        connection.execute(sa.text("UPDATE policy_snapshots SET lineage_id = 1"))
        if connection.dialect.name == "postgresql":
            connection.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('policy_lineages', 'id'), 1)")
            )


def downgrade() -> None:
    with op.batch_alter_table("policy_snapshots") as batch:
        batch.drop_index("ix_policy_snapshots_lineage_id")
        batch.drop_column("lineage_id")
    op.drop_table("policy_settings")
    op.drop_index("ix_policy_lineages_status", "policy_lineages")
    op.drop_table("policy_lineages")
