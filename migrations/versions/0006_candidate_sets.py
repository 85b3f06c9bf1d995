"""candidate sets: a decision's candidates are stored once per distinct set

A title's candidates (its active variants and their features) were written into every
decision about it: four fifths of each row, and of the WAL each commit writes. They now live
in `candidate_sets`, keyed by the SHA-256 of their logged JSON text, and a decision names its
set. Existing decisions are moved over, in id order, a chunk at a time. No foreign key
(see bandit/models.py): the log's writer stores each set before decisions name it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 07:00:00
"""

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHUNK = 5000

decisions = sa.table(
    "decisions",
    sa.column("id", sa.BigInteger()),
    sa.column("candidates", sa.JSON()),
    sa.column("candidate_set_id", sa.String(64)),
)
candidate_sets = sa.table(
    "candidate_sets",
    sa.column("id", sa.String(64)),
    sa.column("candidates", sa.JSON()),
    sa.column("created_at", sa.DateTime()),
)


def _move_candidates_to_sets() -> None:
    """Give every existing decision the id of its candidates' set, storing each set once.
    The id is the digest of the stored text, which is the text keyart wrote (SQLite keeps
    it, and so does PostgreSQL's `json`), so later decisions with equal candidates find it."""
    bind = op.get_bind()
    now = datetime.now(UTC).replace(tzinfo=None)
    stored: set[str] = set()
    cursor = -1
    while True:
        rows = bind.execute(
            sa.select(decisions.c.id, sa.cast(decisions.c.candidates, sa.Text))
            .where(decisions.c.id > cursor)
            .order_by(decisions.c.id)
            .limit(CHUNK)
        ).all()
        if not rows:
            return
        cursor = rows[-1][0]
        ids = {}
        for decision_id, text in rows:
            ids[decision_id] = hashlib.sha256(text.encode()).hexdigest()
            if ids[decision_id] not in stored:
                stored.add(ids[decision_id])
                bind.execute(
                    sa.insert(candidate_sets).values(
                        id=ids[decision_id], candidates=json.loads(text), created_at=now
                    )
                )
        bind.execute(
            sa.update(decisions)
            .where(decisions.c.id == sa.bindparam("decision"))
            .values(candidate_set_id=sa.bindparam("candidate_set")),
            [{"decision": key, "candidate_set": value} for key, value in ids.items()],
        )


def upgrade() -> None:
    op.create_table(
        "candidate_sets",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("candidates", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidate_sets")),
    )
    with op.batch_alter_table("decisions") as batch_op:
        batch_op.add_column(sa.Column("candidate_set_id", sa.String(length=64), nullable=True))
    _move_candidates_to_sets()
    with op.batch_alter_table("decisions") as batch_op:
        batch_op.alter_column("candidate_set_id", existing_type=sa.String(64), nullable=False)
        batch_op.drop_column("candidates")


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch_op:
        batch_op.add_column(sa.Column("candidates", sa.JSON(), nullable=True))
    op.execute(
        "UPDATE decisions SET candidates = (SELECT candidate_sets.candidates FROM candidate_sets"
        " WHERE candidate_sets.id = decisions.candidate_set_id)"
    )
    with op.batch_alter_table("decisions") as batch_op:
        batch_op.alter_column("candidates", existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column("candidate_set_id")
    op.drop_table("candidate_sets")
