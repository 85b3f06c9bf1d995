"""Policy lineages: a change of learning settings takes effect without a gap in serving.

A lineage is one model's history under one set of learning settings: VW's arguments (with
the interactions and hash bits composed into them) and the reward rules (each event type's
value and how a decision's events add up). The learner keeps the serving lineage learning;
when the settings it is given differ, it starts a lineage for them, trains it from the
retained log in time order (decisions of the last `retrain_days`, or all of them) alongside,
and switches serving to it in one transaction once it has caught up with the serving one.
Every serving process follows the switch on its next poll (`bandit.snapshots`).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bandit.models import Decision, PolicyLineage, PolicySnapshot, StoredPolicySettings
from bandit.rewards import RewardConfig
from bandit.snapshots import serving_lineage

STATUSES = ("training", "serving", "retired")


def settings_of(vw_args: str, rewards: RewardConfig) -> dict[str, Any]:
    """The learning settings a lineage is defined by, as stored with it. The reward window
    is not among them: it says when a decision is scored, not what its score is."""
    return {
        "vw_args": vw_args,
        "reward_values": dict(sorted(rewards.values.items())),
        "reward_aggregation": rewards.aggregation,
    }


def lineage_rewards(lineage: PolicyLineage, rewards: RewardConfig) -> RewardConfig:
    """`rewards` with the lineage's own values and aggregation (its window and settle time
    are the learner's)."""
    values = lineage.settings.get("reward_values")
    if values is None:  # a lineage from before lineages: see `prepare`
        return rewards
    return replace(rewards, values=values, aggregation=lineage.settings["reward_aggregation"])


def _start_cursor(session: Session, now: datetime, retrain_days: float) -> int:
    """The last decision before the retained log: a new lineage learns what comes after."""
    if retrain_days <= 0:
        return 0
    cutoff = now - timedelta(days=retrain_days)
    return session.scalar(select(func.max(Decision.id)).where(Decision.created_at < cutoff)) or 0


def prepare(
    session: Session,
    vw_args: str,
    rewards: RewardConfig,
    *,
    now: datetime,
    retrain_days: float,
) -> tuple[PolicyLineage, PolicyLineage | None]:
    """The serving lineage, and the lineage training to replace it (None: the settings are
    the serving ones), started here when the settings are new (the caller commits)."""
    wanted = settings_of(vw_args, rewards)
    serving = serving_lineage(session)
    if serving is None:
        serving = PolicyLineage(
            settings=wanted,
            status="serving",
            start_cursor=0,
            serving_since=now,
            created_at=now,
            note="first lineage",
        )
        session.add(serving)
        session.flush()
    elif serving.settings.get("reward_values") is None and serving.settings["vw_args"] == vw_args:
        # Snapshots from before lineages (migration 0007): their reward rules are unknown,
        # so they are taken to be today's rather than retraining on upgrade.
        serving.settings = wanted
    training = session.scalars(
        select(PolicyLineage).where(PolicyLineage.status == "training").order_by(PolicyLineage.id)
    ).all()
    current = None
    for lineage in training:
        if current is None and lineage.settings == wanted and serving.settings != wanted:
            current = lineage
        else:  # the settings moved on again (or back): this one will never serve
            lineage.status, lineage.retired_at = "retired", now
            lineage.note = "settings changed before it caught up"
    if current is None and serving.settings != wanted:
        current = PolicyLineage(
            settings=wanted,
            status="training",
            start_cursor=_start_cursor(session, now, retrain_days),
            created_at=now,
            note="learning settings changed",
        )
        session.add(current)
        session.flush()
    return serving, current


def switch(session: Session, serving: PolicyLineage, trained: PolicyLineage, now: datetime) -> None:
    """Serve `trained` in place of `serving` (the caller commits both in one transaction)."""
    serving.status, serving.retired_at = "retired", now
    serving.note = f"replaced by lineage {trained.id}"
    trained.status, trained.serving_since = "serving", now


def describe(session: Session, lineage: PolicyLineage) -> dict[str, Any]:
    """A lineage as the policy API shows it: its settings, status and newest snapshot."""
    snapshot = session.scalars(
        select(PolicySnapshot)
        .where(PolicySnapshot.lineage_id == lineage.id)
        .order_by(PolicySnapshot.version.desc())
        .limit(1)
    ).first()
    return {
        "id": lineage.id,
        "status": lineage.status,
        "settings": lineage.settings,
        "created_at": _iso(lineage.created_at),
        "serving_since": _iso(lineage.serving_since),
        "retired_at": _iso(lineage.retired_at),
        "note": lineage.note,
        "version": snapshot.version if snapshot else None,
        "examples_learned": snapshot.examples_learned if snapshot else 0,
        "cursor": snapshot.cursor if snapshot else lineage.start_cursor,
        "snapshot_at": _iso(snapshot.created_at) if snapshot else None,
    }


def history(session: Session, limit: int = 20) -> list[dict[str, Any]]:
    """The newest lineages first, each `describe`d."""
    lineages = session.scalars(
        select(PolicyLineage).order_by(PolicyLineage.id.desc()).limit(limit)
    ).all()
    return [describe(session, lineage) for lineage in lineages]


def stored_settings(session: Session) -> dict[str, str]:
    """Learning settings stored through the API, as the environment variables they stand
    in for (empty: none, the environment's hold)."""
    row = session.get(StoredPolicySettings, 1)
    return dict(row.settings) if row is not None else {}


def store_settings(session: Session, values: dict[str, str], now: datetime) -> None:
    """Store `values` (checked by the caller) in place of any stored before; empty clears
    them, and the environment's hold again (the caller commits)."""
    row = session.get(StoredPolicySettings, 1)
    if not values:
        if row is not None:
            session.delete(row)
        return
    if row is None:
        session.add(StoredPolicySettings(id=1, settings=values, updated_at=now))
    else:
        row.settings, row.updated_at = values, now


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() + "Z" if moment is not None else None
