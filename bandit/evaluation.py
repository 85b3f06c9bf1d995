"""Offline (counterfactual) evaluation: what would other policies have earned on the traffic
already logged? Over the SQL log or any DSJSON file, it scores the logged policy, uniform
random, the editor's default, the current snapshot, and candidate VW argument sets trained
progressively (predict on each event before learning from it, in time order) with the
estimators of `bandit.estimators`.

Every source is turned into DSJSON lines first, so keyart's log and a foreign log go through
the same VW parser, and a candidate's IPS estimate is exactly minus the average loss VW's own
command-line driver reports for `--cb_explore_adf --dsjson` with the same arguments: for each
event VW scores loss = Σ_a π_t(a) · ĉ(a), with ĉ(a) = cost / p for the logged action and 0
otherwise, π_t being the prediction made before learning that event.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import Any

import numpy as np
import vowpal_wabbit_next as vw
from sqlalchemy import select
from sqlalchemy.orm import Session

from bandit import estimators
from bandit.dsjson import DsjsonError, DsjsonLine, LoggedEvent, to_dsjson, validate_line
from bandit.features import Candidate
from bandit.models import Decision, Evaluation, Reward, utcnow
from bandit.policy import Policy, vw_argv
from bandit.rewards import RewardConfig, horizon, joined_reward

# A small learning rate: the regression sees importance weights up to 1/p, and with VW's
# default rate its guesses for rarely logged actions swing far off (on the simulated
# world, uniform's DM fell to 0.04 against a true 0.17; at 0.05 it is 0.165).
DEFAULT_REWARD_MODEL = "--cb_adf --cb_type mtr -l 0.05"
# Below this many effective events an estimate is flagged as not to be trusted.
MIN_EFFECTIVE_SAMPLE = 30


@dataclass(frozen=True)
class EvaluationConfig:
    """What to compare and how.

    `candidates` are VW argument strings (each must include --cb_explore_adf);
    `reward_model_args` configure the progressive regression behind DM and DR (the
    interactions of the first candidate, or of `interactions`, are added to it).
    """

    candidates: Sequence[str] = ()
    interactions: str = "-q ua -q ta"
    reward_model_args: str = DEFAULT_REWARD_MODEL
    clip: float | None = None
    interval: estimators.Interval = "normal"
    seed: int = 0
    # Candidates' per-event doubly robust terms kept in the result (`"dr_terms"`, arrays,
    # not JSON): for comparing two policies on the same events (`bandit.optimizer`).
    keep_terms: bool = False

    def __post_init__(self) -> None:
        for args in self.candidates:
            if "--cb_explore_adf" not in shlex.split(args):
                raise ValueError(f"VW arguments {args!r} must include --cb_explore_adf")
        if self.clip is not None and not 0 < self.clip < math.inf:
            raise ValueError(f"clip must be a positive finite number, got {self.clip}")
        if self.interval not in ("normal", "bootstrap"):
            raise ValueError("interval must be 'normal' or 'bootstrap'")
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed}")


def _check_window(since: datetime | None, until: datetime | None) -> None:
    # The window is [since, until): one that ends before it starts selects nothing.
    if since is not None and until is not None and since >= until:
        raise ValueError(f"since ({since}) must be before until ({until})")


@dataclass
class _Log:
    lines: list[DsjsonLine]
    defaults: list[int] = field(default_factory=list)


def logged_events(
    session: Session,
    rewards: RewardConfig,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    slot: str | None = None,
    segment: str | None = None,
    now: datetime | None = None,
    batch_size: int = 5000,
) -> Iterator[LoggedEvent]:
    """Decisions in time order whose reward window has closed, joined to their rewards the
    way the learner joins them (a deferred decision counts only once its impression came;
    late events never count; a single candidate is no choice and is left out). A window
    that ends before it starts is refused here, when called, not when first iterated."""
    _check_window(since, until)
    closed_at = horizon(rewards, now or utcnow())
    return _logged_events(session, rewards, closed_at, since, until, slot, segment, batch_size)


def _logged_events(
    session: Session,
    rewards: RewardConfig,
    closed_at: datetime,
    since: datetime | None,
    until: datetime | None,
    slot: str | None,
    segment: str | None,
    batch_size: int,
) -> Iterator[LoggedEvent]:
    cursor = 0
    while True:
        query = (
            select(Decision)
            .where(Decision.id > cursor, Decision.created_at <= closed_at)
            .order_by(Decision.id)
        )
        if since is not None:
            query = query.where(Decision.created_at >= since)
        if until is not None:
            query = query.where(Decision.created_at < until)
        if slot is not None:
            query = query.where(Decision.slot == slot)
        batch = session.scalars(query.limit(batch_size)).all()
        if not batch:
            return
        cursor = batch[-1].id
        events: dict[str, list[tuple[str, float]]] = {}
        for event_id, kind, value in session.execute(
            select(Reward.event_id, Reward.type, Reward.value).where(
                Reward.event_id.in_([d.event_id for d in batch]), Reward.late.is_(False)
            )
        ):
            events.setdefault(event_id, []).append((kind, value))
        for decision in batch:
            if segment is not None and decision.context.get("segment") != segment:
                continue
            reward = joined_reward(rewards, decision.deferred, events.get(decision.event_id))
            if reward is None or len(decision.candidates) < 2:
                continue
            yield LoggedEvent(
                event_id=decision.event_id,
                timestamp=decision.created_at,
                context=decision.context,
                slot_features=decision.slot_features,
                candidates=[Candidate(c["id"], c["features"]) for c in decision.candidates],
                chosen_index=decision.chosen_index,
                probability=decision.probability,
                reward=reward,
                slot=decision.slot,
                distribution=decision.distribution,
            )


def _log_from_events(events: Sequence[LoggedEvent], defaults: Mapping[str, str] | None) -> _Log:
    import json

    lines = []
    default_indexes = []
    for number, event in enumerate(events, start=1):
        text = json.dumps(to_dsjson(event), separators=(",", ":"))
        lines.append(validate_line(text, number))
        ids = [c.id for c in event.candidates]
        wanted = (defaults or {}).get(event.slot)
        default_indexes.append(ids.index(wanted) if wanted in ids else 0)
    return _Log(lines, default_indexes)


def _action(index: int, line: DsjsonLine) -> int:
    # VW reads some lines (a `_multi` inside a namespace, `_slots`) as more actions
    # than the `c._multi` that was validated.
    if not 0 <= index < line.actions:
        raise DsjsonError(
            f"line {line.line_number}: VW read more actions than the {line.actions} in c._multi"
        )
    return index


def _distribution(pairs: Sequence[tuple[int, float]], line: DsjsonLine) -> np.ndarray:
    count = line.actions
    out = np.zeros(count)
    for index, probability in pairs:
        out[_action(index, line)] = probability
    total = out.sum()
    return out / total if total > 0 else np.full(count, 1 / count)


def _workspace(args: str) -> tuple[vw.Workspace, vw.DSJsonFormatParser]:
    try:
        workspace = vw.Workspace(vw_argv(args))
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"VW rejected the arguments {args!r}: {error}") from None
    return workspace, vw.DSJsonFormatParser(workspace)


def _parse(parser: vw.DSJsonFormatParser, line: DsjsonLine) -> list[vw.Example]:
    try:
        return parser.parse_json(line.text)
    except RuntimeError as error:
        raise DsjsonError(f"line {line.line_number}: VW cannot parse it: {error}") from None


def progressive(args: str, lines: Sequence[DsjsonLine]) -> list[np.ndarray]:
    """The distribution a fresh `args` policy gives each event just before learning it."""
    workspace, parser = _workspace(args)
    out = []
    for line in lines:
        pairs = workspace.predict_then_learn_one(_parse(parser, line))
        out.append(_distribution(pairs, line))
    return out


def progressive_reward_model(args: str, lines: Sequence[DsjsonLine]) -> list[np.ndarray]:
    """q̂_i(a) for every action, from a `--cb_adf` regression that has seen only the events
    before i (so it never scores an event it learned from)."""
    workspace, parser = _workspace(args)
    # No reward outside what the log holds is possible: keep the model's guesses inside it.
    low = min((line.reward for line in lines), default=0.0)
    high = max((line.reward for line in lines), default=0.0)
    out = []
    for line in lines:
        scores = np.zeros(line.actions)
        # cb_adf scores are predicted costs; rewards are their negation.
        for index, score in workspace.predict_one(_parse(parser, line)):
            scores[_action(index, line)] = -float(score)
        # Learn from a fresh parse: VW leaves state on examples it has predicted with that
        # corrupts interactions if the same objects are then learned from.
        workspace.learn_one(_parse(parser, line))
        out.append(np.clip(scores, low, high))
    return out


def snapshot_distributions(policy: Policy, lines: Sequence[DsjsonLine]) -> list[np.ndarray]:
    """The (fixed) distribution a loaded policy gives each event."""
    parser = vw.DSJsonFormatParser(policy.workspace)
    return [
        _distribution(policy.workspace.predict_one(_parse(parser, line)), line) for line in lines
    ]


@dataclass(frozen=True)
class _Target:
    name: str
    kind: str
    distributions: list[np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)


def _estimates(
    target: _Target,
    lines: Sequence[DsjsonLine],
    reward_model: Sequence[np.ndarray],
    config: EvaluationConfig,
) -> dict[str, Any]:
    data = estimators.OffPolicyData.build(
        [line.reward for line in lines],
        [line.probability for line in lines],
        [line.chosen_index for line in lines],
        target.distributions,
        reward_model,
    )
    options: dict[str, Any] = {"interval": config.interval}
    if config.interval == "bootstrap":
        options["rng"] = np.random.default_rng(config.seed)
    results = {
        "ips": estimators.ips(data, clip=config.clip, **options),
        "snips": estimators.snips(data, clip=config.clip, **options),
        "dm": estimators.dm(data, **options),
        "dr": estimators.dr(data, clip=config.clip, **options),
    }
    ess = results["ips"].effective_sample_size
    out = {
        "name": target.name,
        "kind": target.kind,
        **target.extra,
        "estimates": {key: value.as_dict() for key, value in results.items()},
        "effective_sample_size": ess,
        "trustworthy": ess >= MIN_EFFECTIVE_SAMPLE,
    }
    if config.keep_terms and target.kind == "candidate":
        out["dr_terms"] = estimators.dr_terms(data, clip=config.clip)
    return out


def _summary(
    lines: Sequence[DsjsonLine],
    targets: Sequence[_Target],
    reward_model: Sequence[np.ndarray],
    config: EvaluationConfig,
) -> dict[str, Any]:
    n = len(lines)
    logged = estimators.on_policy(
        [line.reward for line in lines],
        interval=config.interval,
        rng=np.random.default_rng(config.seed) if config.interval == "bootstrap" else None,
    )
    return {
        "events": n,
        "first_timestamp": lines[0].timestamp if lines else None,
        "last_timestamp": lines[-1].timestamp if lines else None,
        "clip": config.clip,
        "interval": "95% bootstrap" if config.interval == "bootstrap" else "95% normal",
        "policies": [
            {
                "name": "logged",
                "kind": "logged",
                "estimates": {"on_policy": logged.as_dict()},
                "effective_sample_size": float(n),
                "trustworthy": n >= MIN_EFFECTIVE_SAMPLE,
            },
            *(_estimates(target, lines, reward_model, config) for target in targets),
        ],
    }


def _reward_model_args(config: EvaluationConfig) -> str:
    first = shlex.split(config.candidates[0]) if config.candidates else []
    interactions = " ".join(
        token
        for flag, value in pairwise(first)
        if flag in ("-q", "--quadratic", "--interactions")
        for token in (flag, value)
    )
    return f"{config.reward_model_args} {interactions or config.interactions}"


def evaluate_log(
    log: _Log,
    config: EvaluationConfig,
    snapshot: Policy | None = None,
    groups: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, Any]:
    """Score every policy over the whole log and, when `groups` (name → event indexes) is
    given, over each group too (under `"groups"`): the policies and the reward model are
    the same ones, trained over the whole log; only the events averaged over differ."""
    for args in config.candidates:
        _workspace(args)  # refuse arguments VW rejects even when the log is empty
    lines = log.lines
    n = len(lines)
    if n == 0:
        return _summary(lines, [], [], config)
    model_args = _reward_model_args(config)
    reward_model = progressive_reward_model(model_args, lines)
    defaults = log.defaults or [0] * n
    targets = [
        _Target("uniform", "uniform", [np.full(line.actions, 1 / line.actions) for line in lines]),
        _Target(
            "editor_default",
            "editor_default",
            [np.eye(line.actions)[d] for line, d in zip(lines, defaults, strict=True)],
        ),
    ]
    if snapshot is not None:
        targets.append(
            _Target(
                f"snapshot v{snapshot.version}",
                "snapshot",
                snapshot_distributions(snapshot, lines),
                {
                    "version": snapshot.version,
                    "vw_args": snapshot.vw_args,
                    "note": "the snapshot may have learned from these very events, which "
                    "flatters it; the progressive candidates never score an event they "
                    "learned from",
                },
            )
        )
    for args in config.candidates:
        targets.append(
            _Target(
                f"vw: {args}",
                "candidate",
                progressive(args, lines),
                {"vw_args": args, "progressive": True},
            )
        )
    result = _summary(lines, targets, reward_model, config)
    result["reward_model"] = model_args
    if groups:
        result["groups"] = {}
        for name, indexes in groups.items():
            subset = [
                _Target(t.name, t.kind, [t.distributions[i] for i in indexes], t.extra)
                for t in targets
            ]
            part = _summary(
                [lines[i] for i in indexes], subset, [reward_model[i] for i in indexes], config
            )
            part["reward_model"] = model_args
            result["groups"][name] = part
    return result


def evaluate_dsjson(
    lines: Sequence[DsjsonLine], config: EvaluationConfig, snapshot: Policy | None = None
) -> dict[str, Any]:
    """Evaluate a DSJSON log; the editor default is the first action of `c._multi`, the
    Personalizer baseline convention (the first action the caller offered)."""
    return evaluate_log(_Log(list(lines)), config, snapshot)


def evaluate_events(
    events: Sequence[LoggedEvent],
    config: EvaluationConfig,
    snapshot: Policy | None = None,
    defaults: Mapping[str, str] | None = None,
    *,
    by_slot: bool = False,
) -> dict[str, Any]:
    """Evaluate logged events; `defaults` maps a slot to its default action id (else the
    first candidate). With `by_slot`, the result also holds each slot's own evaluation
    under `"groups"`. No events is an error: an empty selection has no estimates."""
    if not events:
        raise ValueError(
            "no decisions in the selection (only decisions whose reward window has closed count)"
        )
    groups: dict[str, list[int]] | None = None
    if by_slot:
        groups = {}
        for index, event in enumerate(events):
            groups.setdefault(event.slot, []).append(index)
    return evaluate_log(_log_from_events(events, defaults), config, snapshot, groups)


def save_evaluation(
    session: Session,
    result: Mapping[str, Any],
    *,
    slot: str | None = None,
    segment: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Evaluation:
    """Store an evaluation (the caller commits); one of no events, whose estimates are all
    undefined, is refused."""
    _check_window(since, until)
    if not result["events"]:
        raise ValueError("an evaluation of no decisions is not stored")
    evaluation = Evaluation(
        slot=slot,
        segment=segment,
        since=since,
        until=until,
        events=int(result["events"]),
        result=jsonable(result),
    )
    session.add(evaluation)
    return evaluation


def latest_evaluation(
    session: Session, slot: str | None, segment: str | None = None
) -> Evaluation | None:
    """The newest evaluation of `slot` (the whole log when None) for `segment` (all viewers
    when None)."""
    query = select(Evaluation).order_by(Evaluation.id.desc()).limit(1)
    query = query.where(Evaluation.slot.is_(None) if slot is None else Evaluation.slot == slot)
    query = query.where(
        Evaluation.segment.is_(None) if segment is None else Evaluation.segment == segment
    )
    return session.scalars(query).first()


def jsonable(value: Any) -> Any:
    """The result with NaN and infinities (which JSON lacks) as null."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value
