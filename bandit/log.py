"""The decision log and the reward log: what was chosen, with what probability, and what
came back for it."""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bandit.features import Candidate
from bandit.models import Decision, Reward, utcnow
from bandit.policy import Policy, draw, sticky_seed


@dataclass(frozen=True)
class DecisionRequest:
    """Choose one of `candidates` for `slot`, for a viewer described by `context`."""

    slot: str
    candidates: Sequence[Candidate]
    context: Mapping[str, Any] = field(default_factory=dict)
    slot_features: Mapping[str, Any] = field(default_factory=dict)
    user: str | None = None
    deferred: bool = False


@dataclass(frozen=True)
class StickyConfig:
    """How long a viewer keeps the same draw for a slot."""

    period_seconds: float = 7 * 24 * 3600.0

    def __post_init__(self) -> None:
        if self.period_seconds <= 0:
            raise ValueError("sticky period must be positive")

    def period(self, now: datetime) -> int:
        return int(now.timestamp() // self.period_seconds)


def user_hash(user: str) -> str:
    """Viewer keys are stored hashed: the log never holds a client's raw viewer id."""
    return hashlib.sha256(user.encode()).hexdigest()


def decide(
    session: Session,
    policy: Policy,
    requests: Sequence[DecisionRequest],
    rng: random.Random,
    *,
    sticky: StickyConfig | None = None,
    now: datetime | None = None,
) -> list[Decision]:
    """Choose for every request and add the decisions to `session` (the caller commits).

    Each logged probability is the share the policy gave the chosen candidate, and the
    draw is made from exactly that distribution.
    """
    now = now or utcnow()
    sticky = sticky or StickyConfig()
    decisions = []
    for request in requests:
        if not request.candidates:
            raise ValueError(f"no candidates for slot {request.slot!r}")
        probabilities = policy.distribution(
            request.context, request.slot_features, request.candidates
        )
        if request.user is not None:
            seed = sticky_seed(request.user, request.slot, sticky.period(now))
        else:
            seed = rng.getrandbits(63)
        index = draw(probabilities, seed)
        decision = Decision(
            event_id=uuid.uuid4().hex,
            created_at=now,
            slot=request.slot,
            user_hash=user_hash(request.user) if request.user is not None else None,
            context=dict(request.context),
            slot_features=dict(request.slot_features),
            candidates=[{"id": c.id, "features": dict(c.features)} for c in request.candidates],
            chosen_id=request.candidates[index].id,
            chosen_index=index,
            probability=probabilities[index],
            distribution=probabilities,
            policy_version=policy.version,
            seed=seed,
            activated=not request.deferred,
            deferred=request.deferred,
        )
        decisions.append(decision)
    session.add_all(decisions)
    return decisions


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    value: float = 1.0


EVENT_STATUSES = ("accepted", "duplicate", "unknown_event", "too_late", "invalid")


def record_events(
    session: Session,
    events: Sequence[Event],
    *,
    reward_wait: float,
    known_types: Sequence[str],
    now: datetime | None = None,
) -> list[str]:
    """Store outcome events; answer one status per event, in order (the caller commits).

    Events are idempotent per (event_id, type). An event for an unknown decision is never
    stored. One that arrives after the reward window is stored apart (`late`) and never
    learned, so a slow client cannot rewrite history the learner already scored.
    """
    now = now or utcnow()
    ids = {event.event_id for event in events}
    decisions = {
        d.event_id: d.created_at
        for d in session.execute(
            select(Decision.event_id, Decision.created_at).where(Decision.event_id.in_(ids))
        )
    }
    window = timedelta(seconds=reward_wait)
    insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    statuses: list[str] = []
    seen: set[tuple[str, str]] = set()
    for event in events:
        created_at = decisions.get(event.event_id)
        if event.type not in known_types:
            statuses.append("invalid")
            continue
        if created_at is None:
            statuses.append("unknown_event")
            continue
        key = (event.event_id, event.type)
        if key in seen:
            statuses.append("duplicate")
            continue
        seen.add(key)
        late = now > created_at + window
        # ON CONFLICT keeps concurrent duplicates out without failing the batch; RETURNING
        # says whether this request was the one that stored it.
        inserted = session.execute(
            insert(Reward)
            .values(
                event_id=event.event_id,
                type=event.type,
                value=event.value,
                created_at=now,
                late=late,
            )
            .on_conflict_do_nothing(index_elements=["event_id", "type"])
            .returning(Reward.id)
        ).scalar_one_or_none()
        if inserted is None:
            statuses.append("duplicate")
        elif late:
            statuses.append("too_late")
        else:
            statuses.append("accepted")
            if event.type == "impression":
                session.execute(
                    update(Decision)
                    .where(Decision.event_id == event.event_id)
                    .values(activated=True)
                )
    return statuses
