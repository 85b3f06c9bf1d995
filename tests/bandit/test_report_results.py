"""The results page's arithmetic: weighted rates, the lift over the default, the difference
of two rates, the traffic a verdict asks for, verdicts and the timeline."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pytest

from bandit.report import (
    LoggedOutcome,
    Rate,
    impressions_to_tell,
    lift_over_default,
    rate_difference,
    segment_verdict,
    timeline,
    weighted_rate,
)

T0 = datetime(2026, 11, 30, 12, 0, 0)


def _outcome(action: str, p: float, clicked: bool, seconds: float = 0) -> LoggedOutcome:
    return LoggedOutcome(T0 + timedelta(seconds=seconds), action, p, "", clicked)


def test_newcombe_difference_matches_the_published_example() -> None:
    # Newcombe (1998), Statistics in Medicine 17, table II: 56/70 - 48/80, method 10.
    d = rate_difference(Rate.of(56, 70), Rate.of(48, 80))
    assert d is not None
    assert (round(d.value, 4), round(d.low, 4), round(d.high, 4)) == (0.2, 0.0524, 0.3339)
    assert rate_difference(Rate.of(0, 0), Rate.of(1, 2)) is None


def test_weighted_rate_undoes_the_policys_choice_of_whom_to_show() -> None:
    """A policy shows variant b mostly to viewers who click anyway: b's raw rate flatters it,
    the inverse-propensity rate recovers what b would earn shown to everyone."""
    rng = random.Random(3)
    outcomes = []
    for _ in range(40_000):
        keen = rng.random() < 0.5
        p_b = 0.9 if keen else 0.1
        shows_b = rng.random() < p_b
        click_rate = (0.6 if keen else 0.1) if shows_b else 0.3
        action, p = ("b", p_b) if shows_b else ("a", 1 - p_b)
        outcomes.append(_outcome(action, p, rng.random() < click_rate))
    raw = sum(o.clicked for o in outcomes if o.action == "b") / sum(
        o.action == "b" for o in outcomes
    )
    weighted = weighted_rate(outcomes, "b")
    assert weighted is not None and weighted.low is not None and weighted.high is not None
    assert raw == pytest.approx(0.55, abs=0.02)  # biased towards the keen viewers
    assert weighted.low < 0.35 < weighted.high  # the truth: (0.6 + 0.1) / 2
    assert weighted_rate([], "b") is None


def test_lift_over_default_is_zero_when_the_default_is_all_that_is_served() -> None:
    outcomes = [_outcome("d", 1.0, i % 3 == 0) for i in range(30)]
    lift = lift_over_default(outcomes, "d")
    assert lift is not None and lift.value == 0 and lift.low == lift.high == 0
    single = lift_over_default([_outcome("d", 1.0, True)], "d")
    assert single is not None and single.low is None  # one event gives no interval


def test_impressions_to_tell_a_gap() -> None:
    # (1.96 + 0.84)² · (0.11·0.89 + 0.09·0.91) / 0.02² ≈ 3,529 per variant.
    assert impressions_to_tell(0.1, 0.1) == 3529
    assert impressions_to_tell(0.5, 0.5) > impressions_to_tell(0.1, 0.1)


def _row(action: str, shown: int, clicks: int) -> dict:
    rate = Rate.of(clicks, shown)
    return {"action": action, "impressions": shown, "clicks": rate.as_json()}


def test_verdicts_say_who_wins_by_how_much_or_what_more_is_needed() -> None:
    labels = {"a": "A", "b": "B"}
    clear = segment_verdict("teen-scifi", [_row("a", 1000, 100), _row("b", 1000, 160)], labels, "a")
    assert clear.startswith("B beats A for teen-scifi: +6.0 points (95% interval +")
    unclear = segment_verdict("kids", [_row("a", 200, 20), _row("b", 200, 22)], labels, "a")
    assert unclear.startswith("No difference yet between B and A for kids (+1.0 points")
    assert "more impressions needed to tell a 2-point gap" in unclear
    alone = segment_verdict("", [_row("a", 10, 1), _row("b", 0, 0)], labels, "a")
    assert alone.startswith("Not enough traffic for viewers without a segment")


def test_timeline_buckets_share_and_rate() -> None:
    outcomes = [
        _outcome("a", 0.5, True, 1),
        _outcome("b", 0.5, False, 2),
        _outcome("a", 0.5, False, 3),
        _outcome("a", 0.5, True, 25),
    ]
    line = timeline(outcomes)
    assert line["bucket_seconds"] == 10
    assert len(line["starts"]) == 3
    assert line["actions"]["a"]["share"] == [2 / 3, None, 1.0]
    assert line["actions"]["a"]["rate"] == [0.5, None, 1.0]
    assert line["actions"]["b"]["share"] == [1 / 3, None, 0.0]
    assert line["actions"]["b"]["rate"] == [0.0, None, None]
    assert timeline([]) == {"bucket_seconds": None, "starts": [], "actions": {}}
    week = timeline([_outcome("a", 1, False, 0), _outcome("a", 1, False, 7 * 86400)])
    assert week["bucket_seconds"] == 6 * 3600
