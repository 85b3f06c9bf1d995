"""catalog version: a counter every change to titles or artworks bumps

Decision serving caches the catalog and checks this one number, with each group commit,
instead of reading titles and variants on every request (see web/serving_catalog.py).
Triggers keep it honest whichever code path changes the catalog.

Note for later migrations: SQLite's batch mode rebuilds a table by copying it, which drops
its triggers; a batch migration of `titles` or `artworks` must create them again
(`create_triggers` below).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("titles", "artworks")
EVENTS = ("INSERT", "UPDATE", "DELETE")
BUMP = "UPDATE catalog_version SET version = version + 1 WHERE id = 1"


def create_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION keyart_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS"
            f" $$ BEGIN {BUMP}; RETURN NULL; END $$"
        )
        for table in TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_catalog_changed"
                f" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION keyart_catalog_changed()"
            )
        return
    for table in TABLES:
        for event in EVENTS:
            op.execute(
                f"CREATE TRIGGER {table}_{event.lower()}_catalog_changed AFTER {event}"
                f" ON {table} BEGIN {BUMP}; END"
            )


def upgrade() -> None:
    op.create_table(
        "catalog_version",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_version")),
    )
    op.execute("INSERT INTO catalog_version (id, version) VALUES (1, 0)")
    create_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER {table}_catalog_changed ON {table}")
        op.execute("DROP FUNCTION keyart_catalog_changed()")
    else:
        for table in TABLES:
            for event in EVENTS:
                op.execute(f"DROP TRIGGER {table}_{event.lower()}_catalog_changed")
    op.drop_table("catalog_version")
