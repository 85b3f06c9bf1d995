"""What editors watch: per action and audience segment, how often it was shown, clicked and
played, with 95% intervals, and what share the current policy gives it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
    if not candidates:
        return {}  # nothing is served now (every variant paused or archived): no share
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


# --- What the studio's results page says: weighted rates, differences, verdicts, a timeline.

Z95 = 1.959963984540054
# Power of "impressions needed to tell a gap": 80%, the usual planning figure.
Z_POWER = 0.8416212335729143
# The gap a verdict says how much more traffic is needed to tell.
DETECTABLE_GAP = 0.02


@dataclass(frozen=True)
class LoggedOutcome:
    """One activated decision of a slot: when, which action with what probability, for which
    segment, and whether it was clicked within the reward window."""

    at: datetime
    action: str
    probability: float
    segment: str
    clicked: bool


def outcomes_by_slot(
    session: Session,
    slots: Sequence[str],
    segment_key: str = "segment",
    since: datetime | None = None,
) -> dict[str, list[LoggedOutcome]]:
    """Each slot's activated decisions (deferred ones count once their impression arrived),
    oldest first, each with whether a click (not a late one) came back.

    One query for all of them, so that a page listing titles reads the log once rather than
    once per title."""
    segment = func.coalesce(Decision.context[segment_key].as_string(), "")
    clicked = (
        select(Reward.id)
        .where(Reward.event_id == Decision.event_id, Reward.type == "click", Reward.late.is_(False))
        .exists()
    )
    found: dict[str, list[LoggedOutcome]] = {slot: [] for slot in slots}
    if not found:
        return found
    where = [Decision.slot.in_(sorted(found)), Decision.activated.is_(True)]
    if since is not None:
        where.append(Decision.created_at >= since)
    rows = session.execute(
        select(
            Decision.slot,
            Decision.created_at,
            Decision.chosen_id,
            Decision.probability,
            segment,
            clicked,
        )
        .where(*where)
        .order_by(Decision.id)
    )
    for slot, at, action, p, seg, c in rows:
        found[slot].append(LoggedOutcome(at, action, p, seg, bool(c)))
    return found


def logged_outcomes(
    session: Session, slot: str, segment_key: str = "segment", since: datetime | None = None
) -> list[LoggedOutcome]:
    """One slot's `outcomes_by_slot`."""
    return outcomes_by_slot(session, [slot], segment_key, since)[slot]


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval; the bounds are None when one event cannot give one."""

    value: float
    low: float | None
    high: float | None

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "ci95": [self.low, self.high]}


def _normal_mean(terms: Sequence[float]) -> Interval | None:
    n = len(terms)
    if n == 0:
        return None
    mean = sum(terms) / n
    if n == 1:
        return Interval(mean, None, None)
    variance = sum((t - mean) ** 2 for t in terms) / (n - 1)
    half = Z95 * (variance / n) ** 0.5
    return Interval(mean, mean - half, mean + half)


def weighted_rate(outcomes: Sequence[LoggedOutcome], action: str) -> Interval | None:
    """The click rate `action` would have if shown to everyone in `outcomes`, by inverse
    propensity: (1/n) Σ 1[a_i = action]·click_i / p_i, with a normal 95% interval.

    Unlike the raw rate of the decisions that showed it, this is not biased by whom the
    policy chose to show it to (exploration shows weak variants to few, at random).

    >>> o = [LoggedOutcome(datetime(2026, 1, 1), "a", 0.5, "", True),
    ...      LoggedOutcome(datetime(2026, 1, 1), "b", 0.5, "", False)]
    >>> weighted_rate(o, "a").value
    1.0
    """
    return _normal_mean([(o.action == action) * o.clicked / o.probability for o in outcomes])


def lift_over_default(outcomes: Sequence[LoggedOutcome], default_id: str) -> Interval | None:
    """How much the served policy's click rate beats always showing the default, per event:
    (1/n) Σ click_i·(1 − 1[a_i = default]/p_i), with a normal 95% interval (the two terms
    come from the same events, so their difference is estimated pairwise)."""
    return _normal_mean(
        [o.clicked * (1 - (o.action == default_id) / o.probability) for o in outcomes]
    )


def rate_difference(a: Rate, b: Rate) -> Interval | None:
    """rate(a) − rate(b) with Newcombe's hybrid score 95% interval, built from the two Wilson
    intervals (sound for small counts, unlike the Wald difference). Newcombe (1998)'s own
    example, 56/70 against 48/80:

    >>> d = rate_difference(Rate.of(56, 70), Rate.of(48, 80))
    >>> round(d.value, 4), round(d.low, 4), round(d.high, 4)
    (0.2, 0.0524, 0.3339)
    """
    if a.rate is None or b.rate is None:
        return None
    assert a.low is not None and a.high is not None and b.low is not None and b.high is not None
    diff = a.rate - b.rate
    low = diff - ((a.rate - a.low) ** 2 + (b.high - b.rate) ** 2) ** 0.5
    high = diff + ((a.high - a.rate) ** 2 + (b.rate - b.low) ** 2) ** 0.5
    return Interval(diff, low, high)


def impressions_to_tell(rate_a: float, rate_b: float, gap: float = DETECTABLE_GAP) -> int:
    """Impressions per variant for a two-sided 5% test to tell a `gap` between rates like
    these with 80% power: (z₀.₉₇₅ + z₀.₈)² · (p_a(1−p_a) + p_b(1−p_b)) / gap²."""
    base = max((rate_a + rate_b) / 2, gap / 2)
    p_a, p_b = min(base + gap / 2, 1.0), max(base - gap / 2, 0.0)
    variance = p_a * (1 - p_a) + p_b * (1 - p_b)
    return int(-(-((Z95 + Z_POWER) ** 2) * variance // gap**2))


def _points(value: float) -> str:
    return f"{value * 100:+.1f}"


def segment_verdict(
    segment: str, rows: Sequence[dict[str, Any]], labels: dict[str, str], default_id: str | None
) -> str:
    """A plain-words verdict for one segment from its rows (`action_report`'s): does the best
    variant beat the default (else the runner-up), by how much, with what certainty; or how
    much more traffic would tell a 2-point gap."""
    who = f"for {segment}" if segment else "for viewers without a segment"
    shown = [r for r in rows if r["impressions"] > 0]
    if len(shown) < 2:
        return f"Not enough traffic {who} yet: fewer than two variants have been shown."
    ranked = sorted(shown, key=lambda r: r["clicks"]["rate"], reverse=True)
    best = ranked[0]
    others = [r for r in ranked[1:] if r["action"] == default_id] or ranked[1:2]
    rival = others[0]

    def rate(row: dict[str, Any]) -> Rate:
        c = row["clicks"]
        return Rate(c["count"], c["rate"], c["ci95"][0], c["ci95"][1])

    diff = rate_difference(rate(best), rate(rival))
    name_best = labels.get(best["action"]) or best["action"][:8]
    name_rival = labels.get(rival["action"]) or rival["action"][:8]
    assert diff is not None and diff.low is not None and diff.high is not None
    if diff.low > 0:
        return (
            f"{name_best} beats {name_rival} {who}: {_points(diff.value)} points "
            f"(95% interval {_points(diff.low)} to {_points(diff.high)})."
        )
    needed = impressions_to_tell(best["clicks"]["rate"], rival["clicks"]["rate"])
    more = max(0, 2 * needed - best["impressions"] - rival["impressions"])
    return (
        f"No difference yet between {name_best} and {name_rival} {who} "
        f"({_points(diff.value)} points, 95% interval {_points(diff.low)} to "
        f"{_points(diff.high)}): about {more:,} more impressions needed to tell a "
        f"{DETECTABLE_GAP * 100:.0f}-point gap."
    )


# Bucket widths a timeline chooses from, smallest first.
_BUCKETS = (10, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400)


def timeline(outcomes: Sequence[LoggedOutcome], max_points: int = 48) -> dict[str, Any]:
    """Traffic share and click rate per action over time, in the smallest of a few bucket
    widths that gives at most `max_points` buckets: {"bucket_seconds", "starts" (Unix
    seconds), "actions": {id: {"share": [...], "rate": [...]}}}; a rate is None in a
    bucket where the action was not shown."""
    if not outcomes:
        return {"bucket_seconds": None, "starts": [], "actions": {}}
    first = outcomes[0].at.replace(tzinfo=UTC).timestamp()
    last = outcomes[-1].at.replace(tzinfo=UTC).timestamp()
    width = next((w for w in _BUCKETS if (last - first) / w < max_points), _BUCKETS[-1])
    origin = first - first % width
    count = int((last - origin) // width) + 1
    shown: dict[str, list[int]] = defaultdict(lambda: [0] * count)
    clicks: dict[str, list[int]] = defaultdict(lambda: [0] * count)
    totals = [0] * count
    for o in outcomes:
        index = int((o.at.replace(tzinfo=UTC).timestamp() - origin) // width)
        shown[o.action][index] += 1
        clicks[o.action][index] += o.clicked
        totals[index] += 1
    return {
        "bucket_seconds": width,
        "starts": [origin + i * width for i in range(count)],
        "actions": {
            action: {
                "share": [s / t if t else None for s, t in zip(counts, totals, strict=True)],
                "rate": [c / s if s else None for c, s in zip(clicks[action], counts, strict=True)],
            }
            for action, counts in shown.items()
        },
    }
