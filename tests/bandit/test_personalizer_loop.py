"""The decision engine's parts the Personalizer-compatible API needs: caller event ids,
slots that share no candidate, logging-only decisions, and reward/activation events."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bandit.config import DEFAULT_VW_ARGS, ExplorationConfig
from bandit.decision_log import GroupCommitLog
from bandit.decisions import DecisionService, ListedCandidates, Slot
from bandit.features import Candidate
from bandit.models import Decision, Reward, utcnow
from bandit.personalizer import decision_event_id, delete_log, event_decisions, optimiser_candidates
from bandit.policy import Policy
from bandit.rewards import (
    ACTIVATION,
    REWARD,
    Event,
    RewardConfig,
    joined_reward,
    record_events,
    record_reward,
)


class _Fixed:
    def __init__(self, policy: Policy) -> None:
        self.current = policy


CANDIDATES = [Candidate(c, {"kind": c}) for c in ("a", "b", "c")]


def _service(
    session: Session, slots: list[Slot], seed: int = 1
) -> tuple[DecisionService, GroupCommitLog]:
    session.commit()
    log = GroupCommitLog(session.get_bind())
    service = DecisionService(
        ListedCandidates(slots),
        _Fixed(Policy(DEFAULT_VW_ARGS)),
        log,
        ExplorationConfig(apprentice_examples=0),
        random.Random(seed),
    )
    return service, log


def test_exclusive_slots_never_share_a_candidate_and_keep_the_callers_ids(
    session: Session,
) -> None:
    slots = [Slot(f"personalizer/s{n}", CANDIDATES) for n in range(3)]
    for seed in range(10):
        service, log = _service(session, slots, seed)
        ids = {s.id: decision_event_id(f"page-{seed}", s.id[-2:]) for s in slots}
        try:
            decided = service.decide([s.id for s in slots], {}, event_ids=ids, exclusive=True)
        finally:
            log.stop(timeout=30)
        chosen = [d.chosen_id for d in decided.decisions]
        assert sorted(chosen) == ["a", "b", "c"]
        # Each later slot chose among what the earlier left, with probabilities over those.
        assert [len(d.candidates) for d in decided.decisions] == [3, 2, 1]
        assert decided.decisions[2].probability == 1.0
        assert {d.slot: d.event_id for d in decided.decisions} == ids
    rows = event_decisions(session, "page-3")
    assert [r.event_id for r in rows] == [decision_event_id("page-3", f"s{n}") for n in range(3)]


def test_a_slot_left_without_candidates_is_not_decided(session: Session) -> None:
    slots = [Slot("x/1", CANDIDATES[:1]), Slot("x/2", CANDIDATES[:1])]
    service, log = _service(session, slots)
    try:
        decided = service.decide(["x/1", "x/2"], {}, exclusive=True)
    finally:
        log.stop(timeout=30)
    assert [d.slot for d in decided.decisions] == ["x/1"]


def test_logging_only_decisions_are_deferred_and_never_learned(session: Session) -> None:
    service, log = _service(session, [Slot("personalizer", CANDIDATES, default_id="b")])
    try:
        (record,) = service.decide(["personalizer"], {}, learn=False).decisions
    finally:
        log.stop(timeout=30)
    row = session.scalar(select(Decision).where(Decision.event_id == record.event_id))
    assert row is not None
    assert (row.mode, row.deferred, row.activated) == ("logging", True, False)
    rewards = RewardConfig()
    # A reward without an activation is no evidence, as for any deferred decision.
    assert joined_reward(rewards, row.deferred, [(REWARD, 1.0)]) is None


def test_rewards_and_activations_are_worth_their_own_values() -> None:
    rewards = RewardConfig()
    assert rewards.reward([(ACTIVATION, 0.3)]) == 0.3  # the default reward
    assert rewards.reward([(ACTIVATION, 0.3), (REWARD, -0.5)]) == -0.5  # a reward overrides it
    assert rewards.reward([(REWARD, 4.0)]) == 1.0  # Personalizer's range is [-1, 1]
    assert joined_reward(rewards, True, [(ACTIVATION, 0.0)]) == 0.0
    assert joined_reward(rewards, True, [(REWARD, 1.0), (ACTIVATION, 0.0)]) == 1.0
    assert rewards.reward([("click", 1.0), ("impression", 1.0)]) == 1.0  # artwork's unchanged


def _decision(session: Session, event_id: str, minutes_ago: float = 0.0) -> None:
    service, log = _service(session, [Slot("personalizer", CANDIDATES)])
    now = utcnow() - timedelta(minutes=minutes_ago)
    try:
        service.decide(["personalizer"], {}, event_ids={"personalizer": event_id}, now=now)
    finally:
        log.stop(timeout=30)


def _rewards(session: Session, event_id: str) -> dict[str, tuple[float, bool]]:
    rows = session.scalars(select(Reward).where(Reward.event_id == event_id))
    return {r.type: (r.value, r.late) for r in rows}


@pytest.mark.parametrize("aggregation", ["earliest", "sum"])
def test_record_reward_aggregates_within_the_window_and_keeps_late_ones(
    session: Session, aggregation: str
) -> None:
    _decision(session, "e1")
    statuses = [
        record_reward(session, "e1", value, aggregation=aggregation, reward_wait=60)
        for value in (0.5, 0.25)
    ]
    session.commit()
    if aggregation == "earliest":
        assert statuses == ["accepted", "duplicate"]
        assert _rewards(session, "e1") == {REWARD: (0.5, False)}
    else:
        assert statuses == ["accepted", "accepted"]
        assert _rewards(session, "e1") == {REWARD: (0.75, False)}
    assert record_reward(session, "none", 1.0, aggregation=aggregation, reward_wait=60) == (
        "unknown_event"
    )

    _decision(session, "old", minutes_ago=5)
    assert record_reward(session, "old", 1.0, aggregation=aggregation, reward_wait=60) == "too_late"
    session.commit()
    assert _rewards(session, "old") == {"late_reward": (1.0, True)}
    with pytest.raises(ValueError):
        record_reward(session, "e1", 1.0, aggregation="max", reward_wait=60)


def test_an_activation_activates_a_deferred_decision(session: Session) -> None:
    service, log = _service(session, [Slot("personalizer", CANDIDATES)])
    try:
        (record,) = service.decide(["personalizer"], {}, deferred=True).decisions
    finally:
        log.stop(timeout=30)
    statuses = record_events(
        session, [Event(record.event_id, ACTIVATION, 0.2)], reward_wait=60, known_types=[ACTIVATION]
    )
    session.commit()
    assert statuses == ["accepted"]
    row = session.scalar(select(Decision).where(Decision.event_id == record.event_id))
    assert row is not None and row.activated


def test_deleting_the_log_keeps_other_slots(session: Session) -> None:
    _decision(session, "mine")
    service, log = _service(session, [Slot("a-title", CANDIDATES)])
    try:
        (other,) = service.decide(["a-title"], {}).decisions
    finally:
        log.stop(timeout=30)
    record_reward(session, "mine", 1.0, aggregation="sum", reward_wait=60)
    assert delete_log(session) == 1
    session.commit()
    left = session.scalars(select(Decision.event_id)).all()
    assert left == [other.event_id]
    assert _rewards(session, "mine") == {}


def test_the_optimiser_swaps_exploration_and_keeps_features() -> None:
    candidates = optimiser_candidates("--cb_explore_adf --epsilon=0.1 --quiet -q ua -b 18")
    assert [args for _, args in candidates] == [
        "--cb_explore_adf -q ua -b 18 --squarecb",
        "--cb_explore_adf -q ua -b 18 --epsilon 0.05",
        "--cb_explore_adf -q ua -b 18 --epsilon 0.2",
    ]
