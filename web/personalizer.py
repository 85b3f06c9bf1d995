"""Azure Personalizer's REST API (2022-09-01-preview) over keyart's decision loop, so that an
application written against Personalizer moves here by changing its endpoint and key.

A rank decides through the same `DecisionService` as the artwork API, its actions read by a
`ListedCandidates`, into the same log, learned by the same learner (see bandit/personalizer.py
for where its decisions sit). The key (`Ocp-Apim-Subscription-Key`) is any editor API token.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy import exc, func, select

from bandit import lineages
from bandit import personalizer as loop
from bandit.config import ExplorationConfig
from bandit.decision_log import DecisionLogError
from bandit.decisions import (
    CandidatesUnavailable,
    CatalogChanging,
    DecisionRecord,
    DecisionService,
    ListedCandidates,
    Slot,
    event_ids,
)
from bandit.features import Candidate
from bandit.lineages import store_settings, stored_settings
from bandit.models import Decision, PolicySnapshot, utcnow
from bandit.optimizer import LearningCandidate
from bandit.policy import Policy
from bandit.rewards import ACTIVATION, Event, record_events, record_reward
from bandit.snapshots import load_latest, save_snapshot, serving_lineage
from web.auth import token_hash
from web.config import ConfigError, learning_settings
from web.errors import ApiError, describe_validation
from web.models import Editor
from web.personalizer_schemas import (
    ApplyFromEvaluation,
    EvaluationRequest,
    MultiSlotRankRequest,
    MultiSlotRewardRequest,
    PolicySettings,
    RankRequest,
    RewardRequest,
    ServiceConfiguration,
    flatten_features,
)
from web.state import Runtime, db, runtime

bp = Blueprint("personalizer", __name__, url_prefix="/personalizer")

API_VERSION = "2022-09-01-preview"
KEY_HEADER = "Ocp-Apim-Subscription-Key"
# Name of the learning settings when none were stored.
DEFAULT_POLICY_NAME = "keyart"

M = TypeVar("M", bound=BaseModel)
_durations = TypeAdapter(timedelta)


def _bad(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _not_found(message: str) -> ApiError:
    return ApiError(404, "ResourceNotFound", message)


@bp.before_request
def _authorise() -> None:
    """The key first (a caller without one learns nothing else), then the API version."""
    key = request.headers.get(KEY_HEADER, "").strip()
    editor = None
    if key:
        editor = db().scalar(select(Editor.id).where(Editor.token_hash == token_hash(key)))
    if editor is None:
        raise ApiError(
            401,
            "Unauthorized",
            f"send an editor API token as the '{KEY_HEADER}' header",
        )
    version = request.args.get("api-version")
    if version != API_VERSION:
        raise _bad(f"query parameter 'api-version' must be {API_VERSION!r}, got {version!r}")


def _body(model: type[M]) -> M:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise _bad("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _bad(describe_validation(error)) from None


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.replace(tzinfo=UTC).isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    return str(_durations.dump_python(timedelta(seconds=seconds), mode="json"))


# Settings


def _service_defaults(state: Runtime) -> dict[str, Any]:
    """The configuration before any is stored: keyart's reward wait and learning interval,
    and Personalizer's own defaults for the rest."""
    return {
        "rewardWaitTime": _duration(state.settings.reward_wait),
        "defaultReward": 0.0,
        "rewardAggregation": "earliest",
        "explorationPercentage": 0.2,
        "modelExportFrequency": _duration(state.settings.learn_interval_seconds),
        "logRetentionDays": -1,
        "modelRetrainDays": 0,
        "learningMode": "Online",
    }


def _service(state: Runtime) -> tuple[dict[str, Any], datetime | None]:
    stored = loop.load_setting(db(), "service")
    config = _service_defaults(state)
    if stored is None:
        return config, None
    config.update(stored[0])
    return config, stored[1]


def _wait_seconds(config: Mapping[str, Any]) -> float:
    return _durations.validate_python(config["rewardWaitTime"]).total_seconds()


def _policy_setting(state: Runtime) -> dict[str, str]:
    stored = loop.load_setting(db(), "policy")
    if stored is None:
        return {"name": DEFAULT_POLICY_NAME, "arguments": state.settings.vw_args}
    return {"name": stored[0]["name"], "arguments": stored[0]["arguments"]}


@bp.get("/configurations/service")
def get_service() -> Response:
    config, edited = _service(runtime())
    return jsonify({**config, "lastConfigurationEditDate": _iso(edited)})


@bp.put("/configurations/service")
def put_service() -> Response:
    state = runtime()
    body = _body(ServiceConfiguration)
    wait = body.rewardWaitTime.total_seconds()
    if wait > state.settings.reward_wait:
        # The learner scores a decision once KEYART_REWARD_WAIT has passed: a longer wait
        # here would learn decisions before their rewards were due.
        raise _bad(
            f"rewardWaitTime must be at most this instance's KEYART_REWARD_WAIT "
            f"({_duration(state.settings.reward_wait)}); raise that setting first"
        )
    value = body.model_dump(mode="json", exclude_none=True)
    session = db()
    # Where a change of reward settings would start a new lineage (see the README).
    loop.store_setting(session, "service", value)
    session.commit()
    return get_service()


@bp.get("/configurations/policy")
def get_policy() -> Response:
    return jsonify(_policy_setting(runtime()))


def _store_policy(name: str, arguments: str) -> None:
    try:
        loop.check_policy_arguments(arguments)
    except ValueError as error:
        raise _bad(f"arguments {error}") from None
    session = db()
    loop.store_setting(session, "policy", {"name": name, "arguments": arguments})
    # And as keyart's policy settings (`PUT /api/v1/policy`): the learner starts a lineage
    # for them and serving switches to it once it has caught up with the log.
    candidate, bits = LearningCandidate.from_vw_args(arguments)
    stored = {**stored_settings(session), "KEYART_VW_ARGS": candidate.exploration_args}
    if candidate.interactions:
        stored["KEYART_INTERACTIONS"] = candidate.interactions
    if "-b" in shlex.split(arguments):
        stored["KEYART_HASH_BITS"] = str(bits)
    try:
        learning_settings(runtime().settings, stored)
    except ConfigError as error:
        raise _bad(f"arguments: {error}") from None
    store_settings(session, stored, utcnow())
    session.commit()


@bp.put("/configurations/policy")
def put_policy() -> Response:
    body = _body(PolicySettings)
    _store_policy(body.name, body.arguments)
    return get_policy()


@bp.delete("/configurations/policy")
def reset_policy() -> Response:
    session = db()
    loop.drop_setting(session, "policy")
    kept = {
        key: value
        for key, value in stored_settings(session).items()
        if key not in ("KEYART_VW_ARGS", "KEYART_INTERACTIONS", "KEYART_HASH_BITS")
    }
    store_settings(session, kept, utcnow())
    session.commit()
    return get_policy()


@bp.post("/configurations/applyFromEvaluation")
def apply_from_evaluation() -> tuple[str, int]:
    body = _body(ApplyFromEvaluation)
    evaluation = db().get(loop.PersonalizerEvaluation, body.evaluationId)
    if evaluation is None:
        raise _not_found(f"no evaluation {body.evaluationId!r}")
    for entry in evaluation.result.get("value", []):
        if entry["name"] == body.policyName and entry.get("arguments"):
            _store_policy(entry["name"], entry["arguments"])
            return "", 204
    raise _not_found(f"evaluation {body.evaluationId!r} has no policy {body.policyName!r}")


# Rank, reward, activate


def _exploration(state: Runtime, config: Mapping[str, Any], actions: int) -> ExplorationConfig:
    """Online: `explorationPercentage` ε of traffic spread evenly, the floor ε/K per action
    (keyart's floor mixes p = ε/K + (1 − ε)·p), from the first rank (no apprentice phase).
    Apprentice and LoggingOnly: the baseline, with probability one."""
    if config["learningMode"] == "Online":
        floor = min(float(config["explorationPercentage"]) / max(actions, 1), 0.49)
        return replace(state.exploration, floor=floor, floor_min=None, apprentice_examples=0)
    return replace(state.exploration, floor=0.0, floor_min=None, apprentice_examples=2**62)


# Caller-chosen event ids are checked and logged under this lock, so two requests of one
# process with one id cannot both pass the check (see the README for several processes).
_ranking = threading.Lock()


def _decide(
    slots: list[Slot], context: dict[str, Any], event_id: str | None, deferred: bool, multi: bool
) -> tuple[str, list[DecisionRecord]]:
    state = runtime()
    session = db()
    config, _ = _service(state)
    mode = config["learningMode"]
    actions = max(len(s.candidates) for s in slots)
    service = DecisionService(
        ListedCandidates(slots),
        state.policy,
        state.decision_log,
        _exploration(state, config, actions),
        state.rng,
    )
    chosen = event_id or event_ids(1, utcnow())[0]
    ids = {s.id: loop.decision_event_id(chosen, s.id.partition("/")[2] or None) for s in slots}

    def decide() -> list[DecisionRecord]:
        if loop.event_id_taken(session, chosen):
            raise ApiError(409, "Conflict", f"event {chosen!r} has already been ranked")
        session.rollback()  # end the read, so the check does not hold a snapshot open
        try:
            decided = service.decide(
                [s.id for s in slots],
                context,
                deferred=deferred,
                event_ids=ids,
                exclusive=multi,
                learn=mode != "LoggingOnly",
            )
        except (CandidatesUnavailable, CatalogChanging, DecisionLogError) as error:
            raise ApiError(503, "ServiceUnavailable", str(error)) from None
        return decided.decisions

    if event_id is None:
        records = decide()
    else:
        with _ranking:
            records = decide()
    default = float(config["defaultReward"])
    if not deferred and mode != "LoggingOnly" and default != 0.0:
        # Used at once: the default reward stands unless a reward call comes.
        record_events(
            session,
            [Event(r.event_id, ACTIVATION, default) for r in records],
            reward_wait=_wait_seconds(config),
            known_types=[ACTIVATION],
        )
        session.commit()
    return chosen, records


def _candidates(body: RankRequest) -> list[Candidate]:
    try:
        return [
            Candidate(a.id, flatten_features(a.features, f"action {a.id!r}")) for a in body.actions
        ]
    except ValueError as error:
        raise _bad(str(error)) from None


def _context(features: list[dict[str, Any]] | None, where: str) -> dict[str, Any]:
    try:
        return flatten_features(features, where)
    except ValueError as error:
        raise _bad(str(error)) from None


@bp.post("/rank")
def rank() -> tuple[Response, int]:
    body = _body(RankRequest)
    candidates = _candidates(body)
    ids = [c.id for c in candidates]
    excluded = set(body.excludedActions or [])
    unknown = excluded - set(ids)
    if unknown:
        raise _bad(f"excludedActions names actions not offered: {', '.join(sorted(unknown))}")
    offered = [c for c in candidates if c.id not in excluded]
    if not offered:
        raise _bad("every action is excluded")
    # The baseline is the first action not excluded (Personalizer's rule).
    slot = Slot(loop.slot_name(None), offered, default_id=offered[0].id)
    context = _context(body.contextFeatures, "contextFeatures")
    chosen, records = _decide([slot], context, body.eventId, bool(body.deferActivation), False)
    (record,) = records
    shares = dict(zip([c["id"] for c in record.candidates], record.distribution, strict=True))
    order = sorted(range(len(ids)), key=lambda i: (-shares.get(ids[i], 0.0), i))
    ranking = [{"id": ids[i], "probability": shares.get(ids[i], 0.0)} for i in order]
    answer = {"eventId": chosen, "rewardActionId": record.chosen_id, "ranking": ranking}
    return jsonify(answer), 201


@bp.post("/multislot/rank")
def rank_multi_slot() -> tuple[Response, int]:
    body = _body(MultiSlotRankRequest)
    candidates = _candidates(body)
    known = {c.id for c in candidates}
    seen_slots: set[str] = set()
    baselines: set[str] = set()
    global_excluded = set(body.excludedActions or [])
    slots = []
    for spec in body.slots:
        if spec.id in seen_slots:
            raise _bad(f"slot id {spec.id!r} is given twice")
        seen_slots.add(spec.id)
        excluded = set(spec.excludedActions or []) | global_excluded
        unknown = (excluded | {spec.baselineAction}) - known
        if unknown:
            raise _bad(f"slot {spec.id!r} names actions not offered: {', '.join(sorted(unknown))}")
        if spec.baselineAction in excluded:
            raise _bad(f"slot {spec.id!r} excludes its own baselineAction")
        if spec.baselineAction in baselines:
            raise _bad(f"slot {spec.id!r} shares its baselineAction with another slot")
        baselines.add(spec.baselineAction)
        features = _context(spec.features, f"slot {spec.id!r}")
        offered = [c for c in candidates if c.id not in excluded]
        slots.append(Slot(loop.slot_name(spec.id), offered, spec.baselineAction, features))
    context = _context(body.contextFeatures, "contextFeatures")
    chosen, records = _decide(slots, context, body.eventId, bool(body.deferActivation), True)
    by_slot = {r.slot: r.chosen_id for r in records}
    answer = {
        "eventId": chosen,
        "slots": [
            {"id": spec.id, "rewardActionId": by_slot.get(loop.slot_name(spec.id))}
            for spec in body.slots
        ],
    }
    return jsonify(answer), 201


def _decisions(event_id: str, multi: bool) -> list[Decision]:
    found = [
        d
        for d in loop.event_decisions(db(), event_id)
        if (d.event_id != event_id) == multi  # a multi-slot rank's ids carry their slot
    ]
    if not found:
        kind = "multi-slot " if multi else ""
        raise _not_found(f"no {kind}rank has event id {event_id!r}")
    return found


def _reward(decision_event_id: str, value: float, config: Mapping[str, Any]) -> None:
    record_reward(
        db(),
        decision_event_id,
        value,
        aggregation=config["rewardAggregation"],
        reward_wait=_wait_seconds(config),
    )


def _activate(decisions: list[Decision], config: Mapping[str, Any]) -> None:
    # A LoggingOnly decision is never activated: the learner must not learn it.
    events = [
        Event(d.event_id, ACTIVATION, float(config["defaultReward"]))
        for d in decisions
        if d.mode != "logging"
    ]
    record_events(db(), events, reward_wait=_wait_seconds(config), known_types=[ACTIVATION])


def _event_write(action: Callable[[], None]) -> tuple[str, int]:
    session = db()
    try:
        action()
        session.commit()
    except exc.IntegrityError:
        # Two calls for one event raced to store its first event: the other's stands.
        session.rollback()
    return "", 204


@bp.post("/events/<path:event_id>/reward")
def reward(event_id: str) -> tuple[str, int]:
    body = _body(RewardRequest)
    (decision,) = _decisions(event_id, multi=False)
    config, _ = _service(runtime())
    return _event_write(lambda: _reward(decision.event_id, body.value, config))


@bp.post("/events/<path:event_id>/activate")
def activate(event_id: str) -> tuple[str, int]:
    decisions = _decisions(event_id, multi=False)
    config, _ = _service(runtime())
    return _event_write(lambda: _activate(decisions, config))


@bp.post("/multislot/events/<path:event_id>/reward")
def reward_multi_slot(event_id: str) -> tuple[str, int]:
    body = _body(MultiSlotRewardRequest)
    decisions = {d.event_id: d for d in _decisions(event_id, multi=True)}
    wanted = []
    for item in body.reward:
        key = loop.decision_event_id(event_id, item.slotId)
        if key not in decisions:
            raise _bad(f"event {event_id!r} has no decision for slot {item.slotId!r}")
        wanted.append((key, item.value))
    config, _ = _service(runtime())

    def store() -> None:
        for key, value in wanted:
            _reward(key, value, config)

    return _event_write(store)


@bp.post("/multislot/events/<path:event_id>/activate")
def activate_multi_slot(event_id: str) -> tuple[str, int]:
    decisions = _decisions(event_id, multi=True)
    config, _ = _service(runtime())
    return _event_write(lambda: _activate(decisions, config))


# Evaluations


def _evaluation_json(row: loop.PersonalizerEvaluation, content: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "startTime": _iso(row.start_time),
        "endTime": _iso(row.end_time),
        "creationTime": _iso(row.created_at),
        "evaluationType": "Manual",
        "status": row.status,
    }
    if content:
        out["description"] = row.result.get("description")
        out["optimalPolicy"] = row.result.get("optimalPolicy")
        out["content"] = {
            "startTime": _iso(row.start_time),
            "endTime": _iso(row.end_time),
            "intervalInMinutes": int((row.end_time - row.start_time).total_seconds() // 60),
            "value": row.result.get("value", []),
        }
    return out


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


@bp.put("/evaluations/<path:evaluation_id>")
def create_evaluation(evaluation_id: str) -> tuple[str, int]:
    if len(evaluation_id) > 256:
        raise _bad("an evaluation id is at most 256 characters")
    body = _body(EvaluationRequest)
    start, end = _naive_utc(body.startTime), _naive_utc(body.endTime)
    if start >= end:
        raise _bad("startTime must be before endTime")
    policies = []
    for policy in body.policies or []:
        try:
            policies.append((policy.name, loop.check_policy_arguments(policy.arguments)))
        except ValueError as error:
            raise _bad(f"policy {policy.name!r}: arguments {error}") from None
    session = db()
    if session.get(loop.PersonalizerEvaluation, evaluation_id) is not None:
        raise ApiError(409, "Conflict", f"evaluation {evaluation_id!r} exists")
    state = runtime()
    online = _policy_setting(state)
    try:
        result = loop.run_evaluation(
            session,
            state.rewards,
            start=start,
            end=end,
            policies=policies,
            optimize=bool(body.enablePolicyOptimization),
            online=(online["name"], state.settings.vw_args),
        )
        status = "Succeeded"
    except (ValueError, RuntimeError) as error:  # no decisions; arguments VW fails on
        result, status = {"description": str(error)}, "Failed"
    session.rollback()  # the evaluation only read; end that before writing
    session.add(
        loop.PersonalizerEvaluation(
            id=evaluation_id,
            name=body.name,
            created_at=utcnow(),
            start_time=start,
            end_time=end,
            status=status,
            optimize=bool(body.enablePolicyOptimization),
            policies=[{"name": n, "arguments": a} for n, a in policies],
            result=result,
        )
    )
    try:
        session.commit()
    except exc.IntegrityError:
        session.rollback()
        raise ApiError(409, "Conflict", f"evaluation {evaluation_id!r} exists") from None
    return "", 200


def _evaluation(evaluation_id: str) -> loop.PersonalizerEvaluation:
    row = db().get(loop.PersonalizerEvaluation, evaluation_id)
    if row is None:
        raise _not_found(f"no evaluation {evaluation_id!r}")
    return row


@bp.get("/evaluations/<path:evaluation_id>")
def get_evaluation(evaluation_id: str) -> Response:
    for name in ("startTime", "endTime"):
        raw = request.args.get(name)
        if raw is not None:
            try:
                datetime.fromisoformat(raw)
            except ValueError:
                raise _bad(f"query parameter {name!r} is not an ISO 8601 time") from None
    return jsonify(_evaluation_json(_evaluation(evaluation_id), content=True))


@bp.delete("/evaluations/<path:evaluation_id>")
def delete_evaluation(evaluation_id: str) -> tuple[str, int]:
    session = db()
    session.delete(_evaluation(evaluation_id))
    session.commit()
    return "", 204


def _count(name: str, default: int | None) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 9:
        raise _bad(f"query parameter {name!r} must be a whole number")
    return int(raw)


@bp.get("/evaluations")
def list_evaluations() -> Response:
    skip = _count("$skip", 0) or 0
    top = _count("$top", None)
    query = select(loop.PersonalizerEvaluation).order_by(
        loop.PersonalizerEvaluation.created_at, loop.PersonalizerEvaluation.id
    )
    query = query.offset(skip)
    if top is not None:
        query = query.limit(top)
    rows = db().scalars(query).all()
    return jsonify({"value": [_evaluation_json(r, content=False) for r in rows], "nextLink": None})


# Model and logs


@bp.get("/model")
def export_model() -> Response:
    state = runtime()
    policy, snapshot = load_latest(db(), state.settings.vw_args)
    # The stored bytes as they were saved (or imported), not a re-serialisation.
    model = snapshot.model if snapshot is not None else policy.serialize()
    return Response(model, mimetype="application/octet-stream")


def _serving_args() -> str:
    """The serving lineage's VW arguments (the environment's before the first pass)."""
    return load_latest(db(), runtime().settings.vw_args)[0].vw_args


def _save_model(policy: Policy, *, keep_counts: bool, model: bytes | None = None) -> None:
    session = db()
    state = runtime()
    lineage = serving_lineage(session)
    if lineage is None:  # nothing learned yet: the lineage the learner would start
        vw_args, rewards = learning_settings(state.settings, stored_settings(session))
        lineage, _ = lineages.prepare(
            session, vw_args, rewards, now=utcnow(), retrain_days=state.settings.retrain_days
        )
    _, current = load_latest(session, state.settings.vw_args, lineage)
    cursor = current.cursor if current else lineage.start_cursor
    examples = current.examples_learned if current and keep_counts else 0
    if current is not None and keep_counts:
        policy.slot_examples = dict(current.slot_examples or {})
    save_snapshot(
        session,
        policy,
        examples_learned=examples,
        cursor=cursor,
        model=model,
        lineage_id=lineage.id,
    )
    try:
        session.commit()
    except exc.IntegrityError:
        session.rollback()
        raise ApiError(
            409, "Conflict", "the learner saved a model at the same moment; try again"
        ) from None
    runtime().policy.refresh()


@bp.put("/model")
def import_model() -> tuple[str, int]:
    data = request.get_data()
    if not data:
        raise _bad("the body must be a model's bytes")
    try:
        policy = Policy(_serving_args(), data)
    except RuntimeError as error:
        raise _bad(f"the body is not a model VW can load: {error}") from None
    _save_model(policy, keep_counts=True, model=data)
    return "", 204


@bp.delete("/model")
def reset_model() -> tuple[str, int]:
    _save_model(Policy(_serving_args()), keep_counts=False)
    return "", 204


@bp.get("/model/properties")
def model_properties() -> Response:
    first, last = (
        db()
        .execute(select(func.min(PolicySnapshot.created_at), func.max(PolicySnapshot.created_at)))
        .one()
    )
    out = {}
    if first is not None:
        out = {"creationTime": _iso(last), "lastModifiedTime": _iso(last)}
    return jsonify(out)


@bp.get("/logs/properties")
def log_properties() -> Response:
    first, last = loop.log_range(db())
    date_range = {} if first is None else {"from": _iso(first), "to": _iso(last)}
    return jsonify({"dateRange": date_range})


@bp.delete("/logs")
def delete_logs() -> tuple[str, int]:
    session = db()
    loop.delete_log(session)
    session.commit()
    return "", 204
