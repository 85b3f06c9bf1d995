"""The append-only decision and reward log, and the versioned policy snapshots.

Log rows are keyed by ids, not foreign keys into any catalog, so an action can disappear
and its history still evaluates. Within the log, a decision names the candidate set it chose
among, stored once however many decisions share it; the log's writer stores a set before any
decision naming it. That is not a foreign key: on PostgreSQL the per-row check, and the lock
it takes on the shared set row, cost a third of the throughput of 40-title pages.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY, so the 64-bit id is INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")


# Longest event id and action id the log stores (migration 0007 widened them for the
# Personalizer-compatible API: 256-character event ids plus a slot id, 256-character actions).
EVENT_ID_LENGTH = 400
ACTION_ID_LENGTH = 256


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class LogBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CandidateSet(LogBase):
    """The candidates of some decisions, as they were logged: a title's variants with their
    features, which every decision about the title repeats until the catalog changes. Keyed
    by the SHA-256 of the logged JSON text (`bandit.decisions.candidate_set_id`), written once and
    never changed. Stored in every decision row, they were four fifths of its bytes."""

    __tablename__ = "candidate_sets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # [{"id": ..., "features": {...}}, ...] in the order VW saw them.
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Decision(LogBase):
    """One choice of one action for one request, with exactly the probability it had."""

    __tablename__ = "decisions"

    # The learner's cursor walks this id.
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    # Ours are 32 hex digits; a Personalizer client's own are up to 256 characters, and a
    # multi-slot decision's adds its slot id (`EVENT_ID_LENGTH`).
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    # The decision point: for keyart, a title id.
    slot: Mapped[str] = mapped_column(String(200), index=True)
    user_hash: Mapped[str | None] = mapped_column(String(64))
    context: Mapped[dict[str, Any]] = mapped_column(JSON)
    slot_features: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The candidates it chose among (`candidates`), in the order VW saw them.
    candidate_set_id: Mapped[str] = mapped_column(String(64))
    candidate_set: Mapped[CandidateSet | None] = relationship(
        primaryjoin="foreign(Decision.candidate_set_id) == CandidateSet.id", lazy="joined"
    )
    chosen_id: Mapped[str] = mapped_column(String(ACTION_ID_LENGTH))
    chosen_index: Mapped[int] = mapped_column(Integer)
    probability: Mapped[float] = mapped_column(Float)
    # The probability of every candidate, aligned with `candidates`.
    distribution: Mapped[list[float]] = mapped_column(JSON)
    policy_version: Mapped[int] = mapped_column(Integer)
    # The seed the draw came from (sticky draws derive it from user, slot and period).
    seed: Mapped[int] = mapped_column(BigInteger)
    # False while a deferred decision waits for its impression event.
    activated: Mapped[bool] = mapped_column(Boolean, default=True)
    deferred: Mapped[bool] = mapped_column(Boolean, default=False)
    # How the distribution came about: "policy", "apprentice" (the slot's default, below the
    # learned-examples threshold) or "single" (one candidate, served with probability 1).
    mode: Mapped[str] = mapped_column(String(16), default="policy", server_default="policy")

    @property
    def candidates(self) -> list[dict[str, Any]]:
        """The candidates, or none if the set is missing (then there is nothing to learn)."""
        return self.candidate_set.candidates if self.candidate_set is not None else []


class Reward(LogBase):
    """An outcome event reported for a decision."""

    __tablename__ = "rewards"
    __table_args__ = (UniqueConstraint("event_id", "type"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(EVENT_ID_LENGTH), index=True)
    type: Mapped[str] = mapped_column(String(32))
    value: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Arrived after the reward window closed: kept for the record, never learned.
    late: Mapped[bool] = mapped_column(Boolean, default=False)


class PolicySnapshot(LogBase):
    """A serialized VW model and the log cursor it has learned up to."""

    __tablename__ = "policy_snapshots"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    vw_args: Mapped[str] = mapped_column(String(1000))
    model: Mapped[bytes] = mapped_column(LargeBinary)
    checksum: Mapped[str] = mapped_column(String(64))
    examples_learned: Mapped[int] = mapped_column(BigInteger, default=0)
    # Id of the last decision this model has seen (learned or skipped).
    cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    # Examples learned per slot, for the apprentice threshold.
    slot_examples: Mapped[dict[str, int] | None] = mapped_column(JSON, default=dict)
    # The lineage this model belongs to (`PolicyLineage`); a number, not a foreign key, like
    # the rest of the log.
    lineage_id: Mapped[int | None] = mapped_column(Integer, index=True)


class PolicyLineage(LogBase):
    """One model's history under one set of learning settings (VW arguments with their
    interactions and hash bits, reward values and aggregation): `bandit.lineages`.

    At most one lineage serves at a time; a lineage for changed settings trains from the
    retained log while the serving one goes on, and is switched in once it has caught up.
    """

    __tablename__ = "policy_lineages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), index=True)  # training, serving, retired
    # Decisions after this id are its to learn: where the retained log began when it started.
    start_cursor: Mapped[int] = mapped_column(BigInteger, default=0)
    serving_since: Mapped[datetime | None] = mapped_column(DateTime)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Why it was started or retired, in a few words, for the history.
    note: Mapped[str] = mapped_column(String(200), default="")


class StoredPolicySettings(LogBase):
    """Learning settings set through the API (`PUT /api/v1/policy`): they win over the
    environment's until cleared. One row, id 1."""

    __tablename__ = "policy_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Evaluation(LogBase):
    """One offline evaluation of the log (all of it, or one slot or segment) and its result:
    every compared policy's estimates, as `bandit.evaluation` produced them."""

    __tablename__ = "evaluations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # None: the whole catalog / every segment.
    slot: Mapped[str | None] = mapped_column(String(200), index=True)
    segment: Mapped[str | None] = mapped_column(String(200))
    since: Mapped[datetime | None] = mapped_column(DateTime)
    until: Mapped[datetime | None] = mapped_column(DateTime)
    events: Mapped[int] = mapped_column(Integer)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
