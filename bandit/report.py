"""What editors watch: per action and audience segment, how often it was shown, clicked and
played, with 95% intervals, and what share the current policy gives it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from bandit.config import ExplorationConfig
from bandit.decisions import DecisionRequest, shaped_distribution
from bandit.features import Candidate
from bandit.models import Decision, Reward
from bandit.policy import Policy

# Contexts replayed per segment to estimate the current policy's share.
SHARE_SAMPLE = 200


@dataclass(frozen=True)
class Rate:
    count: int
    rate: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, successes: int, trials: int) -> Rate:
        """The share with its Wilson score 95% interval (sound for small counts and rates
        near zero, where the normal approximation is not)."""
        if trials == 0:
            return cls(successes, None, None, None)
        # Imported here: scipy.stats is 80 MB of a serving worker's memory and a second of its
        # start, for a report editors ask for now and then.
        from scipy.stats import binomtest

        interval = binomtest(successes, trials).proportion_ci(0.95, method="wilson")
        return cls(successes, successes / trials, float(interval.low), float(interval.high))

    def as_json(self) -> dict[str, Any]:
        return {"count": self.count, "rate": self.rate, "ci95": [self.low, self.high]}


def _counts(
    session: Session, slot: str, segment_key: str, since: datetime | None
) -> dict[tuple[str, str], dict[str, int]]:
    segment = func.coalesce(Decision.context[segment_key].as_string(), "")
    where = [Decision.slot == slot, Decision.activated.is_(True)]
    if since is not None:
        where.append(Decision.created_at >= since)
    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: {"impressions": 0, "click": 0, "play": 0}
    )
    for action, seg, shown in session.execute(
        select(Decision.chosen_id, segment, func.count())
        .where(*where)
        .group_by(Decision.chosen_id, segment)
    ):
        counts[(action, seg)]["impressions"] = shown
    for action, seg, kind, decided in session.execute(
        select(Decision.chosen_id, segment, Reward.type, func.count(distinct(Decision.id)))
        .join(Reward, Reward.event_id == Decision.event_id)
        .where(*where, Reward.type.in_(("click", "play")), Reward.late.is_(False))
        .group_by(Decision.chosen_id, segment, Reward.type)
    ):
        counts[(action, seg)][kind] = decided
    return counts


def _current_share(
    session: Session,
    slot: str,
    segment_key: str,
    segment: str,
    policy: Policy,
    candidates: Sequence[Candidate],
    exploration: ExplorationConfig,
    default_id: str | None,
) -> dict[str, float]:
    """Average distribution the current policy gives today's candidates over the segment's
    recent contexts, shaped as serving shapes it (floor, apprentice mode): what the segment
    would see now."""
    seg = func.coalesce(Decision.context[segment_key].as_string(), "")
    rows = session.execute(
        select(Decision.context, Decision.slot_features)
        .where(Decision.slot == slot, seg == segment)
        .order_by(Decision.id.desc())
        .limit(SHARE_SAMPLE)
    ).all()
    totals = dict.fromkeys((c.id for c in candidates), 0.0)
    for context, slot_features in rows:
        request = DecisionRequest(slot, candidates, context, slot_features, default_id=default_id)
        shares, _ = shaped_distribution(policy, request, exploration)
        for candidate, p in zip(candidates, shares, strict=True):
            totals[candidate.id] += p
    return {k: v / len(rows) for k, v in totals.items()} if rows else {}


def action_report(
    session: Session,
    slot: str,
    policy: Policy,
    candidates: Sequence[Candidate],
    *,
    exploration: ExplorationConfig | None = None,
    default_id: str | None = None,
    segment_key: str = "segment",
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """One row per (action, segment) seen in the log or among the current candidates."""
    exploration = exploration or ExplorationConfig()
    counts = _counts(session, slot, segment_key, since)
    segments = sorted({seg for _, seg in counts})
    shares = {
        seg: _current_share(
            session, slot, segment_key, seg, policy, candidates, exploration, default_id
        )
        for seg in segments
    }
    actions = [c.id for c in candidates] + sorted(
        {a for a, _ in counts} - {c.id for c in candidates}
    )
    rows = []
    for segment in segments:
        for action in actions:
            c = counts.get((action, segment), {"impressions": 0, "click": 0, "play": 0})
            rows.append(
                {
                    "action": action,
                    "segment": segment or None,
                    "impressions": c["impressions"],
                    "clicks": Rate.of(c["click"], c["impressions"]).as_json(),
                    "plays": Rate.of(c["play"], c["impressions"]).as_json(),
                    "policy_share": shares[segment].get(action),
                }
            )
    return rows
