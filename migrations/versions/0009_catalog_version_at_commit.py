"""catalog version: on PostgreSQL, bumped as a change commits rather than as it is made

The decision log's writer locks the version's row FOR SHARE as it inserts a batch
(`bandit.decision_log`), so it waits for any transaction that has bumped the version to end.
Bumped by each statement, an editor's transaction held every serving process's writes up
from its first change to its commit: through a reprocess's rendition uploads, say. Bumped
by a deferred constraint trigger, it holds them only for its commit. (SQLite has one writer
at a time, so there an editor's transaction holds the log's writer up from its first write
whatever the trigger does.)

Constraint triggers are row-level only, so a change to n rows bumps the version n times; it
only ever has to move. TRUNCATE, which fires no row trigger, keeps its statement trigger.
So 0005's `create_triggers` (for SQLite's batch mode, which drops triggers) is not what
PostgreSQL's tables carry any more: a later migration must not call it there.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 06:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("titles", "artworks")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_catalog_changed ON {table}")
        op.execute(
            f"CREATE CONSTRAINT TRIGGER {table}_catalog_changed"
            f" AFTER INSERT OR UPDATE OR DELETE ON {table}"
            " DEFERRABLE INITIALLY DEFERRED"
            " FOR EACH ROW EXECUTE FUNCTION keyart_catalog_changed()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_catalog_truncated AFTER TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION keyart_catalog_changed()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_catalog_truncated ON {table}")
        op.execute(f"DROP TRIGGER {table}_catalog_changed ON {table}")
        op.execute(
            f"CREATE TRIGGER {table}_catalog_changed"
            f" AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION keyart_catalog_changed()"
        )
