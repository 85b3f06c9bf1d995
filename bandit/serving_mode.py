"""How a slot is being served: apprentice (the default, until enough is learned) or the
policy, with the counts behind the switch, for editors' reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bandit.config import ExplorationConfig
from bandit.models import Decision
from bandit.policy import Policy


def current_mode(slot: str, policy: Policy, exploration: ExplorationConfig) -> dict[str, Any]:
    """The slot's current mode under `policy` ("apprentice" while it has learned fewer
    examples than the threshold, else "policy") and the figures behind it. Read from the
    policy alone: the policy page calls it for every title, and a count of each title's
    decisions by mode cost it one query over the log per title."""
    learned = policy.slot_examples.get(slot, 0)
    return {
        "mode": "apprentice" if learned < exploration.apprentice_examples else "policy",
        "examples_learned": learned,
        "apprentice_examples": exploration.apprentice_examples,
        "probability_floor": exploration.floor,
        "policy_version": policy.version,
    }


def serving_mode(
    session: Session, slot: str, policy: Policy, exploration: ExplorationConfig
) -> dict[str, Any]:
    """`current_mode`, and how many of the slot's logged decisions each mode made."""
    by_mode = dict(
        session.execute(
            select(Decision.mode, func.count()).where(Decision.slot == slot).group_by(Decision.mode)
        ).all()
    )
    return {
        **current_mode(slot, policy, exploration),
        "decisions_by_mode": {mode: int(count) for mode, count in sorted(by_mode.items())},
    }
