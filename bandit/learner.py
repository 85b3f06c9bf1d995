"""The learner: join decisions whose reward window has closed to their rewards, teach VW,
and save the new policy together with the log cursor in one transaction."""

from __future__ import annotations

import itertools
import logging
import math
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


AGGREGATIONS = ("sum", "max")


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

    def __post_init__(self) -> None:
        if not math.isfinite(self.wait_seconds) or self.wait_seconds < 0:
            raise ValueError("reward wait must be zero or more seconds")
        if "impression" not in self.values:
            raise ValueError("reward values must include 'impression'")
        for kind, value in self.values.items():
            if not kind or not math.isfinite(value):
                raise ValueError(f"reward value of {kind!r} must be a finite number")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"reward aggregation must be one of {', '.join(AGGREGATIONS)}")

    def reward(self, events: list[tuple[str, float]]) -> float:
        worths = [self.values.get(kind, 0.0) * value for kind, value in events]
        if not worths:
            return 0.0
        total = sum(worths) if self.aggregation == "sum" else max(worths)
        return min(1.0, max(0.0, total))


@dataclass(frozen=True)
class LearnReport:
    learned: int
    skipped: int
    cursor: int
    version: int | None  # the snapshot saved, or None when there was nothing to learn


def _closed_batch(session: Session, cursor: int, horizon: datetime, size: int) -> list[Decision]:
    """The next decisions after `cursor`, in log order, up to the first whose window is still
    open: stopping there (rather than filtering it out) means the cursor never passes a
    decision that has not been scored yet, whatever the clocks of the processes that wrote
    the log."""
    rows = session.scalars(
        select(Decision).where(Decision.id > cursor).order_by(Decision.id).limit(size)
    ).all()
    closed = list(itertools.takewhile(lambda d: d.created_at <= horizon, rows))
    return closed


def learn_once(
    session: Session,
    vw_args: str,
    rewards: RewardConfig,
    *,
    now: datetime | None = None,
    batch_size: int = 5000,
    on_learned: Callable[[int], None] | None = None,
    on_commit: Callable[[LearnReport], None] | None = None,
) -> LearnReport:
    """Learn every decision whose window has closed and that is past the cursor, in batches.

    Each batch commits the new snapshot, its per-slot counts and the cursor together, so a
    learner killed at any point restarts exactly where its last commit left it and learns
    every joined decision exactly once. `on_learned(n)` is called after the n-th example of
    this pass, `on_commit(report)` after each batch's commit (progress reporting).
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    now = now or utcnow()
    horizon = now - timedelta(seconds=rewards.wait_seconds)
    policy, snapshot = load_latest(session, vw_args)
    cursor = snapshot.cursor if snapshot else 0
    examples = snapshot.examples_learned if snapshot else 0
    learned = skipped = 0
    version = None
    while True:
        batch = _closed_batch(session, cursor, horizon, batch_size)
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
            policy.slot_examples[decision.slot] = policy.slot_examples.get(decision.slot, 0) + 1
            learned += 1
            if on_learned is not None:
                on_learned(learned)
        cursor = batch[-1].id
        saved = save_snapshot(session, policy, examples_learned=examples + learned, cursor=cursor)
        policy.version = saved.version
        session.commit()
        version = saved.version
        log.info("learned up to decision %d: policy version %d", cursor, version)
        if on_commit is not None:
            on_commit(LearnReport(learned=learned, skipped=skipped, cursor=cursor, version=version))
        if len(batch) < batch_size:
            break
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
