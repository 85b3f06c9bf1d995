"""Sampling: the logged distribution is VW's (in candidate order), the floor and apprentice
mode shape it, and the draw picks each candidate with exactly its logged probability."""

from __future__ import annotations

import hashlib
import hmac
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from bandit.config import ExplorationConfig
from bandit.decisions import DecisionRequest, choose, event_ids, shaped_distribution, sticky_period
from bandit.features import Candidate, example_lines
from bandit.models import utcnow
from bandit.policy import Policy, apprentice, draw, normalise, sticky_seed, with_floor
from web.config import DEFAULT_VW_ARGS

SOFTMAX = "--cb_explore_adf --softmax --lambda 4 --quiet -q ua -q ta -b 18"
EPSILON = "--cb_explore_adf --epsilon 0.1 --quiet -q ua -q ta -b 18"
GREEDY = "--cb_explore_adf --epsilon 0 --quiet -q ua -q ta -b 18"
CANDIDATES = [Candidate(f"v{i}", {"tag": [f"look{i}"]}) for i in range(4)]
CONTEXT = {"segment": "night-owls"}
SLOT = {"title": "show"}


def _trained(vw_args: str) -> Policy:
    """A policy whose scores rank the candidates v3 > v2 > v1 > v0 (the reverse of their
    order), so VW's score-sorted answer is not in index order."""
    policy = Policy(vw_args)
    for _ in range(30):
        for index in range(4):
            policy.learn(CONTEXT, SLOT, CANDIDATES, index, -index / 3, 0.25)
    return policy


def test_distribution_is_vws_in_candidate_order() -> None:
    policy = _trained(SOFTMAX)
    with policy._lock:
        parser = policy._parser
        example = [parser.parse_line(line) for line in example_lines(CONTEXT, SLOT, CANDIDATES)]
        pairs = policy.workspace.predict_one(example)
    assert [index for index, _ in pairs] != sorted(index for index, _ in pairs)
    distribution = policy.distribution(CONTEXT, SLOT, CANDIDATES)
    vw_total = sum(p for _, p in pairs)
    for index, probability in pairs:
        assert distribution[index] == pytest.approx(probability / vw_total, abs=1e-12)
    assert sum(distribution) == pytest.approx(1.0, abs=1e-15)
    assert distribution[3] > distribution[2] > distribution[1] > distribution[0] > 0


def test_logged_probability_is_the_chosen_candidates_share() -> None:
    policy = _trained(SOFTMAX)
    exploration = ExplorationConfig(floor=0.0, apprentice_examples=0)
    request = DecisionRequest("show", CANDIDATES, CONTEXT, SLOT)
    decisions = choose(policy, [request] * 200, random.Random(3), exploration=exploration)
    expected = policy.distribution(CONTEXT, SLOT, CANDIDATES)
    for decision in decisions:
        assert decision.distribution == expected
        assert decision.probability == expected[decision.chosen_index]
        assert decision.chosen_id == CANDIDATES[decision.chosen_index].id
        assert decision.mode == "policy"


def test_draw_frequencies_match_probabilities_over_100000_seeded_draws() -> None:
    probabilities = _trained(SOFTMAX).distribution(CONTEXT, SLOT, CANDIDATES)
    rng = random.Random(20261128)
    draws = 100_000
    counts = Counter(draw(probabilities, rng.getrandbits(63)) for _ in range(draws))
    for index, probability in enumerate(probabilities):
        assert counts[index] / draws == pytest.approx(probability, abs=0.01)
        # Tighter than 1 point: about four standard errors.
        assert abs(counts[index] / draws - probability) < 4 * (probability / draws) ** 0.5 + 1e-3


def test_draw_never_picks_a_zero_probability_candidate() -> None:
    for seed in (0, 1, (1 << 63) - 1, 1 << 62):
        assert draw([0.0, 1.0, 0.0], seed) == 1
    assert draw([0.5, 0.5, 0.0], (1 << 63) - 1) == 1


@pytest.mark.parametrize("floor", [0.01, 0.05, 0.2])
def test_floor_gives_every_candidate_a_share(floor: float) -> None:
    policy = _trained(GREEDY)
    raw = policy.distribution(CONTEXT, SLOT, CANDIDATES)
    assert min(raw) == 0.0  # greedy VW alone would starve three candidates
    request = DecisionRequest("show", CANDIDATES, CONTEXT, SLOT)
    shaped, mode = shaped_distribution(
        policy, request, ExplorationConfig(floor=floor, apprentice_examples=0)
    )
    assert mode == "policy"
    assert min(shaped) >= floor - 1e-12
    assert sum(shaped) == pytest.approx(1.0, abs=1e-15)
    assert shaped == with_floor(raw, floor)
    # The mixture: floor + (1 - K·floor)·p.
    for p, q in zip(raw, shaped, strict=True):
        assert q == pytest.approx(floor + (1 - 4 * floor) * p, abs=1e-12)


def test_floor_composes_with_epsilon() -> None:
    policy = _trained(EPSILON)  # --epsilon 0.1: each non-greedy gets 0.025
    raw = policy.distribution(CONTEXT, SLOT, CANDIDATES)
    shaped = with_floor(raw, 0.05)
    assert min(shaped) == pytest.approx(0.05 + (1 - 0.2) * 0.1 / 4)


def test_floor_too_large_for_all_is_uniform() -> None:
    assert with_floor([1.0, 0.0, 0.0], 0.4) == [1 / 3] * 3
    assert with_floor([0.7, 0.3], 0.0) == [0.7, 0.3]


def test_apprentice_serves_the_default_below_the_threshold() -> None:
    exploration = ExplorationConfig(floor=0.05, apprentice_examples=100)
    policy = _trained(SOFTMAX)
    request = DecisionRequest("show", CANDIDATES, CONTEXT, SLOT, default_id="v1")

    policy.slot_examples = {"show": 99}
    shaped, mode = shaped_distribution(policy, request, exploration)
    assert mode == "apprentice"
    assert shaped == pytest.approx([0.05, 0.85, 0.05, 0.05])
    decisions = choose(policy, [request] * 3000, random.Random(9), exploration=exploration)
    chosen = Counter(d.chosen_id for d in decisions)
    assert 0.82 < chosen["v1"] / 3000 < 0.88
    for decision in decisions:
        assert decision.mode == "apprentice"
        assert decision.probability == decision.distribution[decision.chosen_index]

    # At the threshold the policy takes over; another slot's examples do not count.
    policy.slot_examples = {"show": 100}
    assert shaped_distribution(policy, request, exploration)[1] == "policy"
    policy.slot_examples = {"other": 10_000}
    assert shaped_distribution(policy, request, exploration)[1] == "apprentice"
    # No default among the candidates (say it was paused): no apprentice mode.
    paused = DecisionRequest("show", CANDIDATES[2:], CONTEXT, SLOT, default_id="v1")
    assert shaped_distribution(policy, paused, exploration)[1] == "policy"


def test_apprentice_with_two_variants_serves_default_with_one_minus_floor() -> None:
    assert apprentice(2, 0, 0.1) == [0.9, 0.1]
    assert apprentice(1, 0, 0.1) == [1.0]
    assert apprentice(3, 2, 0.4) == [1 / 3] * 3


def test_single_candidate_is_certain_and_logged() -> None:
    (decision,) = choose(
        Policy(DEFAULT_VW_ARGS),
        [DecisionRequest("show", CANDIDATES[:1], CONTEXT, SLOT, default_id="v0")],
        random.Random(1),
    )
    assert (decision.probability, decision.distribution, decision.mode) == (1.0, [1.0], "single")
    with pytest.raises(ValueError, match="no candidates"):
        choose(Policy(DEFAULT_VW_ARGS), [DecisionRequest("show", [])], random.Random(1))


def test_sticky_viewer_keeps_the_same_choice_within_a_period() -> None:
    policy = _trained(SOFTMAX)
    exploration = ExplorationConfig(floor=0.02, apprentice_examples=0, sticky_period_seconds=3600)
    now = utcnow()
    per_user = {}
    for user in (f"viewer-{n}" for n in range(200)):
        request = DecisionRequest("show", CANDIDATES, CONTEXT, SLOT, user=user)
        first, again = (
            choose(policy, [request], random.Random(seed), exploration=exploration, now=now)[0]
            for seed in (1, 2)
        )
        assert (first.chosen_id, first.seed) == (again.chosen_id, again.seed)
        assert first.probability == first.distribution[first.chosen_index]
        per_user[user] = first.chosen_id
    # Different viewers still get different draws, in the distribution's proportions.
    assert len(set(per_user.values())) == 4

    # A small change in the distribution moves few viewers; the logged probability follows it.
    moved = 0
    nudged = Policy(SOFTMAX, policy.serialize())
    nudged.learn(CONTEXT, SLOT, CANDIDATES, 0, -0.1, 0.25)
    for user, before in per_user.items():
        request = DecisionRequest("show", CANDIDATES, CONTEXT, SLOT, user=user)
        (after,) = choose(nudged, [request], random.Random(), exploration=exploration, now=now)
        assert after.distribution == normalise(after.distribution)
        moved += after.chosen_id != before
    assert moved < 20

    # The next period is a fresh draw for the same viewer.
    later = now + timedelta(hours=1)
    assert sticky_period(later, exploration) == sticky_period(now, exploration) + 1
    seeds = set()
    for hours in range(5):
        moment = now + timedelta(hours=hours)
        request = DecisionRequest("show", CANDIDATES, CONTEXT, SLOT, user="viewer-1")
        seeds.add(
            choose(policy, [request], random.Random(), exploration=exploration, now=moment)[0].seed
        )
    assert len(seeds) == 5


def test_viewer_keys_are_hashed_with_a_secret() -> None:
    # The log's user hash and the sticky draw's (logged) seed are keyed: a plain SHA-256 of
    # "viewer-4242" is found again by hashing guesses.
    policy = _trained(SOFTMAX)
    now = utcnow()
    request = DecisionRequest("show", CANDIDATES, CONTEXT, SLOT, user="viewer-4242")

    def decided(key: bytes):  # type: ignore[no-untyped-def]
        exploration = ExplorationConfig(apprentice_examples=0, viewer_key=key)
        return choose(policy, [request], random.Random(), exploration=exploration, now=now)[0]

    first, again, other = decided(b"secret one"), decided(b"secret one"), decided(b"secret two")
    assert (first.user_hash, first.seed) == (again.user_hash, again.seed)
    assert first.user_hash != other.user_hash and first.seed != other.seed
    assert first.user_hash == hmac.new(b"secret one", b"viewer-4242", "sha256").hexdigest()
    assert first.user_hash != hashlib.sha256(b"viewer-4242").hexdigest()
    assert "secret" not in repr(ExplorationConfig(viewer_key=b"secret one"))


def test_a_pages_seeds_are_the_sticky_seeds_of_its_viewers_and_slots() -> None:
    """`choose` keys the HMAC once per page; the seeds are still exactly `sticky_seed`'s,
    whatever the viewers and slots (two viewers on a page, non-ASCII, a key longer than
    SHA-256's block)."""
    policy = _trained(SOFTMAX)
    now = utcnow()
    for key in (b"", b"k", b"long key " * 20):
        exploration = ExplorationConfig(apprentice_examples=0, viewer_key=key)
        requests = [
            DecisionRequest(slot, CANDIDATES, CONTEXT, SLOT, user=user)
            for user in ("viewer-1", "zoë\x1f", "viewer-1")
            for slot in ("show", "série-ü", "show\x1f2")
        ]
        period = sticky_period(now, exploration)
        decided = choose(policy, requests, random.Random(), exploration=exploration, now=now)
        assert [d.seed for d in decided] == [
            sticky_seed(r.user, r.slot, period, key)  # type: ignore[arg-type]
            for r in requests
        ]


def test_without_a_user_draws_are_independent() -> None:
    policy = _trained(SOFTMAX)
    request = DecisionRequest("show", CANDIDATES, CONTEXT, SLOT)
    decisions = choose(policy, [request] * 400, random.Random(4))
    assert len({d.seed for d in decisions}) == 400
    assert len({d.chosen_id for d in decisions}) == 4
    assert all(d.user_hash is None for d in decisions)


def test_event_ids_are_unique_uuid7_in_time_order() -> None:
    moment = datetime(2026, 11, 28, 5, 30)
    first, later = event_ids(500, moment), event_ids(500, moment + timedelta(milliseconds=1))
    assert len(set(first + later)) == 1000
    for event_id in first + later:
        parsed = UUID(hex=event_id)
        assert (parsed.version, parsed.hex) == (7, event_id)
        assert parsed.variant == "specified in RFC 4122"
    # The leading 48 bits are the decision's millisecond: a later decision sorts after.
    assert int(first[0][:12], 16) == int(moment.replace(tzinfo=UTC).timestamp() * 1000)
    assert max(first) < min(later)
