"""The decision engine's side of the Personalizer-compatible API (web/personalizer.py): where
its decisions sit in the log, its stored settings, and its offline evaluations.

A rank's decisions are ordinary decisions under a slot namespace of their own (`SLOT`, and
`SLOT/<slot id>` for multi-slot ranks), so the same learner learns them and DSJSON exports
them. A multi-slot rank logs one decision per slot, its event id the rank's joined to the
slot id by `SEPARATOR` (which Personalizer event ids may not contain).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import vowpal_wabbit_next as vw
from sqlalchemy import JSON, Boolean, DateTime, String, delete, func, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from bandit.evaluation import EvaluationConfig, evaluate_events, jsonable, logged_events
from bandit.models import Decision, LogBase, Reward, utcnow
from bandit.policy import vw_argv
from bandit.rewards import RewardConfig

SLOT = "personalizer"
SEPARATOR = "\x1f"


def slot_name(slot_id: str | None) -> str:
    """The log's slot for a single-slot rank (None) or one slot of a multi-slot rank."""
    return SLOT if slot_id is None else f"{SLOT}/{slot_id}"


def decision_event_id(event_id: str, slot_id: str | None = None) -> str:
    """The log's event id for a rank's decision (in one slot of a multi-slot rank)."""
    return event_id if slot_id is None else f"{event_id}{SEPARATOR}{slot_id}"


def _ours() -> Any:
    return or_(Decision.slot == SLOT, Decision.slot.startswith(f"{SLOT}/", autoescape=True))


def event_decisions(session: Session, event_id: str) -> list[Decision]:
    """The decisions of rank `event_id`: one for a single-slot rank, one per slot for a
    multi-slot one, none if it was never ranked."""
    query = select(Decision).where(
        or_(
            Decision.event_id == event_id,
            Decision.event_id.startswith(event_id + SEPARATOR, autoescape=True),
        ),
        _ours(),
    )
    return list(session.scalars(query.order_by(Decision.id)))


def event_id_taken(session: Session, event_id: str) -> bool:
    """Whether any decision, of this API's or another, already has the event id."""
    query = select(Decision.id).where(
        or_(
            Decision.event_id == event_id,
            Decision.event_id.startswith(event_id + SEPARATOR, autoescape=True),
        )
    )
    return session.scalar(query.limit(1)) is not None


class PersonalizerSetting(LogBase):
    """A stored setting of the Personalizer API (`service`, `policy`), as its JSON."""

    __tablename__ = "personalizer_settings"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class PersonalizerEvaluation(LogBase):
    """One offline evaluation asked for through the Personalizer API, and its result."""

    __tablename__ = "personalizer_evaluations"

    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    name: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    start_time: Mapped[datetime] = mapped_column(DateTime)
    end_time: Mapped[datetime] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(32))
    optimize: Mapped[bool] = mapped_column(Boolean, default=False)
    # [{"name", "arguments"}] asked for.
    policies: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    # {"value": [...], "optimalPolicy", "description"} once run.
    result: Mapped[dict[str, Any]] = mapped_column(JSON)


def load_setting(session: Session, name: str) -> tuple[dict[str, Any], datetime] | None:
    row = session.get(PersonalizerSetting, name)
    return None if row is None else (dict(row.value), row.updated_at)


def store_setting(session: Session, name: str, value: Mapping[str, Any]) -> None:
    """Replace setting `name` (the caller commits)."""
    row = session.get(PersonalizerSetting, name)
    if row is None:
        session.add(PersonalizerSetting(name=name, value=dict(value), updated_at=utcnow()))
    else:
        row.value = dict(value)
        row.updated_at = utcnow()


def drop_setting(session: Session, name: str) -> None:
    session.execute(delete(PersonalizerSetting).where(PersonalizerSetting.name == name))


# Options that would make VW read or write files or listen on a port.
_FILE_OPTIONS = frozenset(
    {
        "-d",
        "--data",
        "-f",
        "--final_regressor",
        "-i",
        "--initial_regressor",
        "-c",
        "--cache",
        "--cache_file",
        "-p",
        "--predictions",
        "-r",
        "--raw_predictions",
        "--readable_model",
        "--invert_hash",
        "--daemon",
        "--port",
        "--pid_file",
        "--save_resume",
    }
)


def check_policy_arguments(arguments: str) -> str:
    """`arguments` if they are a `--cb_explore_adf` setup VW starts with, else ValueError."""
    try:
        argv = shlex.split(arguments)
    except ValueError as error:
        raise ValueError(f"cannot be split into arguments ({error})") from None
    if "--cb_explore_adf" not in argv:
        raise ValueError("must include --cb_explore_adf")
    for token in argv:
        if token.split("=", 1)[0] in _FILE_OPTIONS:
            raise ValueError(f"must not use {token}: it reads or writes files or listens")
    try:
        vw.Workspace(vw_argv(arguments))
    except RuntimeError as error:
        raise ValueError(f"are rejected by VW: {error}") from None
    return arguments


def log_range(session: Session) -> tuple[datetime | None, datetime | None]:
    """When this API's oldest and newest logged decisions were made."""
    first, last = session.execute(
        select(func.min(Decision.created_at), func.max(Decision.created_at)).where(_ours())
    ).one()
    return first, last


def delete_log(session: Session) -> int:
    """Delete this API's decisions and their events (the caller commits); the artwork API's
    share of the log stays. Answers the number of decisions deleted."""
    ids = select(Decision.event_id).where(_ours()).scalar_subquery()
    session.execute(delete(Reward).where(Reward.event_id.in_(ids)))
    return session.execute(delete(Decision).where(_ours())).rowcount or 0


# Exploration set-ups the optimiser tries, on top of the serving arguments' features.
_EXPLORATION_GRID = ("--squarecb", "--epsilon 0.05", "--epsilon 0.2")
_EXPLORATION_FLAGS = {
    "--squarecb": 0,
    "--epsilon": 1,
    "--cover": 1,
    "--bag": 1,
    "--first": 1,
    "--softmax": 0,
    "--lambda": 1,
    "--regcb": 0,
    "--regcbopt": 0,
    "--synthcover": 0,
    "--gamma_scale": 1,
    "--gamma_exponent": 1,
    "--quiet": 0,
}


def optimiser_candidates(vw_args: str) -> list[tuple[str, str]]:
    """(name, arguments) of the exploration set-ups the optimiser compares: `vw_args` with
    its exploration replaced by each of a small grid."""
    argv = shlex.split(vw_args)
    kept: list[str] = []
    skip = 0
    for token in argv:
        if skip:
            skip -= 1
            continue
        flag = token.split("=", 1)[0]
        if flag in _EXPLORATION_FLAGS:
            skip = _EXPLORATION_FLAGS[flag] if "=" not in token else 0
            continue
        kept.append(token)
    base = shlex.join(kept)
    return [(f"optimiser: {explore}", f"{base} {explore}") for explore in _EXPLORATION_GRID]


def _summary(estimate: Mapping[str, Any]) -> dict[str, Any]:
    value = estimate.get("value")
    interval = estimate.get("ci95") or [None, None]
    return {"expectedReward": value, "confidenceInterval": list(interval)}


_SOURCES = {"logged": "Online", "editor_default": "Baseline", "uniform": "Random"}


def run_evaluation(
    session: Session,
    rewards: RewardConfig,
    *,
    start: datetime,
    end: datetime,
    policies: Sequence[tuple[str, str]],
    optimize: bool,
    online: tuple[str, str],
) -> dict[str, Any]:
    """Evaluate this API's logged decisions made in [start, end) (those whose reward window
    has closed): the logged (online) policy, the baseline (first action offered), uniform
    random, each of `policies` (name, VW arguments) and, with `optimize`, the optimiser's
    candidates, each trained progressively over the log. Answers Personalizer's evaluation
    content (`value`, one entry per policy and slot) and the optimal policy: the candidate
    whose IPS lower bound beats the online policy's on-policy upper bound by the most, else
    the online policy. Raises ValueError when no decision is in the window."""
    slots = session.scalars(select(Decision.slot).where(_ours()).distinct()).all()
    events = []
    for slot in sorted(slots):
        events += list(logged_events(session, rewards, since=start, until=end, slot=slot))
    events.sort(key=lambda e: (e.timestamp, e.event_id))
    named = [*policies, *(optimiser_candidates(online[1]) if optimize else [])]
    config = EvaluationConfig(candidates=[args for _, args in named])
    result = evaluate_events(events, config, by_slot=len(slots) > 1)
    custom = {args: (name, "Custom") for name, args in policies}
    for name, args in named[len(policies) :]:
        custom.setdefault(args, (name, "OfflineExperimentation"))

    def entries(part: Mapping[str, Any], slot_id: str) -> list[dict[str, Any]]:
        out = []
        for policy in part["policies"]:
            if policy["kind"] == "logged":
                name, arguments = online
                estimate = policy["estimates"]["on_policy"]
                source = "Online"
            elif policy["kind"] == "candidate":
                name, source = custom[policy["vw_args"]]
                arguments = policy["vw_args"]
                estimate = policy["estimates"]["ips"]
            elif policy["kind"] in _SOURCES:
                name = policy["name"]
                arguments = ""
                estimate = policy["estimates"]["ips"]
                source = _SOURCES[policy["kind"]]
            else:
                continue
            summary = _summary(estimate)
            out.append(
                {
                    "name": name,
                    "arguments": arguments,
                    "policySource": source,
                    "slotId": slot_id,
                    "summary": summary,
                    "timeseries": {"data": [{"timeStamp": _iso(start), **summary}]},
                }
            )
        return out

    value = entries(result, "")
    for slot, part in (result.get("groups") or {}).items():
        value += entries(part, slot.removeprefix(f"{SLOT}/") if slot != SLOT else "")
    overall = [entry for entry in value if entry["slotId"] == ""]
    online_upper = next(
        e["summary"]["confidenceInterval"][1] for e in overall if e["policySource"] == "Online"
    )
    best, margin = online[0], 0.0
    for entry in overall:
        if entry["policySource"] not in ("Custom", "OfflineExperimentation"):
            continue
        lower = entry["summary"]["confidenceInterval"][0]
        if lower is not None and online_upper is not None and lower - online_upper > margin:
            best, margin = entry["name"], lower - online_upper
    return jsonable({"value": value, "optimalPolicy": best, "events": result["events"]})


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds") + "Z"
