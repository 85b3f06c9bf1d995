"""The learner: join decisions whose reward window has closed to their rewards, teach VW,
and save the new policy together with the log cursor in one transaction."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from bandit.features import Candidate
from bandit.models import Decision, Reward, utcnow
from bandit.snapshots import load_latest, save_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RewardConfig:
    """What each event type is worth. A decision's reward is the sum of its events' values,
    clipped to [0, 1], so a click followed by a play is not worth more than a sure thing."""

    values: Mapping[str, float] = field(
        default_factory=lambda: {"click": 1.0, "play": 1.0, "impression": 0.0}
    )
    wait_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.wait_seconds < 0:
            raise ValueError("reward wait must be zero or more seconds")
        if "impression" not in self.values:
            raise ValueError("reward values must include 'impression'")

    def reward(self, events: list[tuple[str, float]]) -> float:
        total = sum(self.values.get(kind, 0.0) * value for kind, value in events)
        return min(1.0, max(0.0, total))


@dataclass(frozen=True)
class LearnReport:
    learned: int
    skipped: int
    cursor: int
    version: int | None  # the snapshot saved, or None when there was nothing to learn


def learn_once(
    session: Session,
    vw_args: str,
    rewards: RewardConfig,
    *,
    now: datetime | None = None,
    batch_size: int = 5000,
) -> LearnReport:
    """Learn every decision whose window has closed and that is past the cursor, in batches.

    Each batch commits the new snapshot and the cursor together, so a learner killed at any
    point restarts exactly where its last commit left it.
    """
    now = now or utcnow()
    horizon = now - timedelta(seconds=rewards.wait_seconds)
    policy, snapshot = load_latest(session, vw_args)
    cursor = snapshot.cursor if snapshot else 0
    examples = snapshot.examples_learned if snapshot else 0
    learned = skipped = 0
    version = None
    while True:
        batch = session.scalars(
            select(Decision)
            .where(Decision.id > cursor, Decision.created_at <= horizon)
            .order_by(Decision.id)
            .limit(batch_size)
        ).all()
        if not batch:
            break
        events: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for event_id, kind, value in session.execute(
            select(Reward.event_id, Reward.type, Reward.value).where(
                Reward.event_id.in_([d.event_id for d in batch]), Reward.late.is_(False)
            )
        ):
            events[event_id].append((kind, value))
        for decision in batch:
            joined = events.get(decision.event_id, [])
            # A deferred decision counts only if the UI said the image was shown.
            shown = not decision.deferred or any(kind == "impression" for kind, _ in joined)
            if not shown or len(decision.candidates) < 2:
                skipped += 1
                continue
            policy.learn(
                decision.context,
                decision.slot_features,
                [Candidate(c["id"], c["features"]) for c in decision.candidates],
                decision.chosen_index,
                -rewards.reward(joined),
                decision.probability,
            )
            learned += 1
        cursor = batch[-1].id
        saved = save_snapshot(session, policy, examples_learned=examples + learned, cursor=cursor)
        policy.version = saved.version
        session.commit()
        version = saved.version
        log.info("learned up to decision %d: policy version %d", cursor, version)
    return LearnReport(learned=learned, skipped=skipped, cursor=cursor, version=version)


def learn_forever(
    session_factory: Callable[[], Session],
    vw_args: str,
    rewards: RewardConfig,
    interval_seconds: float,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Run `learn_once` every `interval_seconds` until `should_stop()`."""
    while not should_stop():
        try:
            with session_factory() as session:
                learn_once(session, vw_args, rewards)
        except Exception:  # keep learning after a database blip; the cursor makes it safe
            log.exception("learning pass failed")
        time.sleep(interval_seconds)
