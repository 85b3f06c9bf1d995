"""Rewards: what each outcome event is worth, how events are stored as they come back, and
the one join of a decision to its events that the learner and offline evaluation share (the
same horizon, the same rule for deferred decisions, the same aggregation)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bandit.models import Decision, Reward, utcnow

AGGREGATIONS = ("sum", "max")

# Event types of the Personalizer-compatible API (web/personalizer.py). A `reward` event's
# value is the decision's reward (the client's reward calls, aggregated as they are stored by
# `record_reward`); an `activation` shows the decision was used, like an impression, and its
# value is the reward the decision earns when no reward call comes (the default reward).
REWARD = "reward"
LATE_REWARD = "late_reward"
ACTIVATION = "activation"
# Events that activate a deferred decision.
ACTIVATING = ("impression", ACTIVATION)
# Personalizer's reward range.
REWARD_RANGE = (-1.0, 1.0)


@dataclass(frozen=True)
class RewardConfig:
    """What each event type is worth and how a decision's events add up.

    `values` maps an event type to its worth per unit of the event's value. With
    `aggregation="sum"` a decision's reward is the sum of its events' worths clipped to
    [0, 1], so a click followed by a play is not worth more than a sure thing; with "max" it
    is the largest single worth (clipped likewise). Events count only if they arrive within
    `wait_seconds` of the decision; a decision with none by then has reward 0.
    """

    values: Mapping[str, float] = field(
        default_factory=lambda: {"click": 1.0, "play": 1.0, "impression": 0.0}
    )
    wait_seconds: float = 600.0
    aggregation: str = "sum"
    # Extra seconds the learner waits past the window, so an event accepted at the window's
    # last instant (and a decision written just before) has committed before it is joined.
    settle_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.wait_seconds) or self.wait_seconds < 0:
            raise ValueError("reward wait must be zero or more seconds")
        if "impression" not in self.values:
            raise ValueError("reward values must include 'impression'")
        for kind, value in self.values.items():
            if not kind or not math.isfinite(value):
                raise ValueError(f"reward value of {kind!r} must be a finite number")
        if not math.isfinite(self.settle_seconds) or self.settle_seconds < 0:
            raise ValueError("reward settle time must be zero or more seconds")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"reward aggregation must be one of {', '.join(AGGREGATIONS)}")

    def reward(self, events: list[tuple[str, float]]) -> float:
        """A decision's reward from its events. Personalizer's events (`REWARD`,
        `ACTIVATION`) are worth their own values, clipped to [-1, 1]: the reward call's,
        else the activation's default reward."""
        given = [value for kind, value in events if kind == REWARD]
        defaults = [value for kind, value in events if kind == ACTIVATION]
        if given or defaults:
            low, high = REWARD_RANGE
            return min(high, max(low, given[0] if given else defaults[0]))
        worths = [self.values.get(kind, 0.0) * value for kind, value in events]
        if not worths:
            return 0.0
        total = sum(worths) if self.aggregation == "sum" else max(worths)
        return min(1.0, max(0.0, total))


def horizon(rewards: RewardConfig, now: datetime) -> datetime:
    """The newest decision time whose reward window has closed at `now`: only decisions
    made at or before it are joined (by the learner and by offline evaluation alike)."""
    return now - timedelta(seconds=rewards.wait_seconds + rewards.settle_seconds)


def joined_reward(
    rewards: RewardConfig, deferred: bool, events: Iterable[tuple[str, float]] | None
) -> float | None:
    """A closed decision's reward from its on-time `events` (type, value), or None when it
    does not count: a deferred decision whose image was never shown (no impression or
    activation) is no evidence about its choice."""
    if not events:
        return None if deferred else 0.0
    events = list(events)
    if deferred and not any(kind in ACTIVATING for kind, _ in events):
        return None
    return rewards.reward(events)


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
            if event.type in ACTIVATING:
                session.execute(
                    update(Decision)
                    .where(Decision.event_id == event.event_id)
                    .values(activated=True)
                )
    return statuses


REWARD_AGGREGATIONS = ("earliest", "sum")


def record_reward(
    session: Session,
    event_id: str,
    value: float,
    *,
    aggregation: str,
    reward_wait: float,
    now: datetime | None = None,
) -> str:
    """Store a reward call's `value` for a decision (Personalizer's reward; the caller
    commits), answering `accepted`, `too_late`, `duplicate` or `unknown_event`.

    A decision keeps one `REWARD` event: with `aggregation="earliest"` the first value
    stands and later ones are `duplicate`; with `"sum"` each adds to it, in the database, so
    concurrent calls add up. Calls after `reward_wait` seconds go, aggregated the same way,
    to a `LATE_REWARD` event kept for the record and never learned.
    """
    if aggregation not in REWARD_AGGREGATIONS:
        raise ValueError(f"reward aggregation must be one of {', '.join(REWARD_AGGREGATIONS)}")
    now = now or utcnow()
    created_at = session.scalar(select(Decision.created_at).where(Decision.event_id == event_id))
    if created_at is None:
        return "unknown_event"
    late = now > created_at + timedelta(seconds=reward_wait)
    insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    statement = insert(Reward).values(
        event_id=event_id,
        type=LATE_REWARD if late else REWARD,
        value=value,
        created_at=now,
        late=late,
    )
    if aggregation == "sum":
        statement = statement.on_conflict_do_update(
            index_elements=["event_id", "type"],
            set_={"value": Reward.__table__.c.value + statement.excluded.value},
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=["event_id", "type"])
    stored = session.execute(statement.returning(Reward.id)).scalar_one_or_none()
    if late:
        return "too_late"
    return "accepted" if stored is not None else "duplicate"
