"""How a slot is being served: apprentice (the default, until enough is learned) or the
policy, with the counts behind the switch, for editors' reports."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bandit.config import ExplorationConfig
from bandit.models import Decision
from bandit.policy import Policy


def serving_mode(
    session: Session, slot: str, policy: Policy, exploration: ExplorationConfig
) -> dict[str, Any]:
    """The slot's current mode under `policy`, its learned examples against the apprentice
    threshold, and how many of its logged decisions each mode made."""
    learned = policy.slot_examples.get(slot, 0)
    by_mode = dict(
        session.execute(
            select(Decision.mode, func.count()).where(Decision.slot == slot).group_by(Decision.mode)
        ).all()
    )
    return {
        "mode": "apprentice" if learned < exploration.apprentice_examples else "policy",
        "examples_learned": learned,
        "apprentice_examples": exploration.apprentice_examples,
        "probability_floor": exploration.floor,
        "policy_version": policy.version,
        "decisions_by_mode": {mode: int(count) for mode, count in sorted(by_mode.items())},
    }
