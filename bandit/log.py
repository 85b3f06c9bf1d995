"""The decision log and the reward log: what was chosen, with what probability, and what
came back for it."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bandit.config import ExplorationConfig
from bandit.features import Candidate, context_text
from bandit.models import CandidateSet, Decision, Reward, utcnow
from bandit.policy import Policy, apprentice, draw, sticky_seed, with_floor


@dataclass(frozen=True)
class DecisionRequest:
    """Choose one of `candidates` for `slot`, for a viewer described by `context`.

    `default_id` is the candidate served in apprentice mode (for keyart, the editor's
    default artwork); when it is not among the candidates there is no apprentice mode.
    """

    slot: str
    candidates: Sequence[Candidate]
    context: Mapping[str, Any] = field(default_factory=dict)
    slot_features: Mapping[str, Any] = field(default_factory=dict)
    user: str | None = None
    deferred: bool = False
    default_id: str | None = None
    # `context_text(slot_features)` when the caller has it cached (keyart: per title).
    slot_tokens: str | None = None
    # `logged_candidates(candidates)` when the caller has it cached, likewise.
    logged: JSONList | None = None


class JSONList(list):  # type: ignore[type-arg]
    """A list that carries its own JSON text, built from parts serialised once: a title's
    candidates recur in every decision about it, and the log writer would otherwise encode
    them again for each row. The text is exactly `json.dumps` of the list."""

    __slots__ = ("_digest", "json_text")

    def __init__(self, items: Sequence[Any], json_text: str) -> None:
        super().__init__(items)
        self.json_text = json_text
        self._digest: str | None = None

    @property
    def digest(self) -> str:
        """SHA-256 of the text, in hex; worked out once per list."""
        if self._digest is None:
            self._digest = hashlib.sha256(self.json_text.encode()).hexdigest()
        return self._digest


def candidate_set_id(candidates: Sequence[Any]) -> str:
    """The id under which the log stores a decision's candidates (`CandidateSet`): the
    SHA-256 of their JSON text, so equal sets are stored once, whoever writes them."""
    if isinstance(candidates, JSONList):
        return candidates.digest
    return hashlib.sha256(json.dumps(list(candidates)).encode()).hexdigest()


class JSONDict(dict):  # type: ignore[type-arg]
    """A dict that carries its own JSON text (a page's decisions share one context)."""

    __slots__ = ("json_text",)

    def __init__(self, items: Mapping[str, Any]) -> None:
        super().__init__(items)
        self.json_text = json.dumps(self)


def logged_candidates(candidates: Sequence[Candidate]) -> JSONList:
    return JSONList(
        [c.logged for c in candidates], "[" + ", ".join(c.logged_json for c in candidates) + "]"
    )


def _logged_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    # A JSONDict is kept as is (its text is already made); anything else is copied.
    return value if isinstance(value, JSONDict) else dict(value)


def event_ids(count: int, now: datetime) -> list[str]:
    """`count` new event ids for decisions made at `now` (naive UTC): UUIDv7 (RFC 9562) in
    hex, a millisecond timestamp then 74 random bits. Time-ordered ids go in at the end of
    the log's unique index, where random ones touched a different index page per decision
    and every such page went to the WAL with each commit."""
    millis = int(now.replace(tzinfo=UTC).timestamp() * 1000)
    prefix = millis.to_bytes(6, "big")
    # One read of the OS's randomness for the page, not one per decision.
    entropy = os.urandom(10 * count)
    ids = []
    for n in range(count):
        raw = bytearray(prefix + entropy[10 * n : 10 * n + 10])
        raw[6] = (raw[6] & 0x0F) | 0x70  # version 7
        raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 9562 variant
        ids.append(raw.hex())
    return ids


def _floats_json(values: Sequence[float]) -> str:
    # What json.dumps writes for a list of finite floats (repr: exact, round-trips).
    return "[" + ", ".join([float.__repr__(v) for v in values]) + "]"


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """A decision as `choose` makes it: the row the log will hold (all but its id).

    A plain record rather than an ORM object because a page makes dozens of them per request
    and the group-commit writer inserts rows, not objects; `model()` gives the ORM object.
    """

    event_id: str
    created_at: datetime
    slot: str
    user_hash: str | None
    context: dict[str, Any]
    slot_features: dict[str, Any]
    candidates: list[dict[str, Any]]
    chosen_id: str
    chosen_index: int
    probability: float
    distribution: list[float]
    policy_version: int
    seed: int
    activated: bool
    deferred: bool
    mode: str

    @property
    def candidate_set_id(self) -> str:
        return candidate_set_id(self.candidates)

    def model(self) -> Decision:
        """The ORM object; its candidate set must be stored too (`store_candidate_sets`)."""
        fields = {name: getattr(self, name) for name in self.__slots__ if name != "candidates"}
        return Decision(**fields, candidate_set_id=self.candidate_set_id)


def store_candidate_sets(session: Session, records: Sequence[DecisionRecord]) -> None:
    """Store the candidate sets of `records` that the log does not hold yet (the caller
    commits, with the decisions)."""
    sets = {record.candidate_set_id: record.candidates for record in records}
    if not sets:
        return
    insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    now = utcnow()
    session.execute(
        insert(CandidateSet)
        .values([{"id": k, "candidates": list(v), "created_at": now} for k, v in sets.items()])
        .on_conflict_do_nothing(index_elements=["id"])
    )


# How a decision's distribution came about, logged with it so a report can tell them apart.
MODES = ("policy", "apprentice", "single")


def user_hash(user: str, key: bytes = b"") -> str:
    """Viewer keys are stored hashed, with a secret `key` (`ExplorationConfig.viewer_key`):
    the log never holds a client's raw viewer id, nor one anybody could hash guesses to."""
    return hmac.digest(key, user.encode(), "sha256").hex()


def sticky_period(now: datetime, exploration: ExplorationConfig) -> int:
    return int(now.replace(tzinfo=UTC).timestamp() // exploration.sticky_period_seconds)


def shaped_distribution(
    policy: Policy,
    request: DecisionRequest,
    exploration: ExplorationConfig,
    context_tokens: str | None = None,
) -> tuple[list[float], str]:
    """The distribution the draw uses, and its mode: one candidate is certain; a slot that
    has learned fewer than the apprentice threshold serves its default; otherwise VW's
    distribution with the floor mixed in."""
    candidates = request.candidates
    if len(candidates) == 1:
        return [1.0], "single"
    ids = [c.id for c in candidates]
    learned = policy.slot_examples.get(request.slot, 0)
    if request.default_id in ids and learned < exploration.apprentice_examples:
        return apprentice(len(ids), ids.index(request.default_id), exploration.floor), "apprentice"
    probabilities = policy.distribution(
        request.context, request.slot_features, candidates, context_tokens, request.slot_tokens
    )
    return with_floor(probabilities, exploration.floor), "policy"


def choose(
    policy: Policy,
    requests: Sequence[DecisionRequest],
    rng: random.Random,
    *,
    exploration: ExplorationConfig | None = None,
    now: datetime | None = None,
) -> list[DecisionRecord]:
    """A decision for every request, not yet logged anywhere.

    Each logged probability is exactly the one the draw used: the draw is made from the
    logged distribution itself. With a `user`, the draw's seed comes from (user, slot,
    sticky period), so the viewer keeps the same choice while the distribution holds still.
    """
    now = now or utcnow()
    exploration = exploration or ExplorationConfig()
    period = sticky_period(now, exploration)
    decisions = []
    # A page's requests share one context: featurise (and copy, and encode) it once.
    contexts: dict[int, tuple[str, JSONDict]] = {}
    hashes: dict[str, str] = {}
    ids = event_ids(len(requests), now)
    for request in requests:
        if not request.candidates:
            raise ValueError(f"no candidates for slot {request.slot!r}")
        key = id(request.context)
        if key not in contexts:
            contexts[key] = (context_text(request.context), JSONDict(request.context))
        tokens, context = contexts[key]
        probabilities, mode = shaped_distribution(policy, request, exploration, tokens)
        if request.user is not None:
            seed = sticky_seed(request.user, request.slot, period, exploration.viewer_key)
        else:
            seed = rng.getrandbits(63)
        index = draw(probabilities, seed)
        hashed = None
        if request.user is not None:
            hashed = hashes.get(request.user) or hashes.setdefault(
                request.user, user_hash(request.user, exploration.viewer_key)
            )
        n = len(decisions)
        decisions.append(
            DecisionRecord(
                event_id=ids[n],
                created_at=now,
                slot=request.slot,
                user_hash=hashed,
                context=context,
                slot_features=_logged_dict(request.slot_features),
                candidates=request.logged
                if request.logged is not None
                else logged_candidates(request.candidates),
                chosen_id=request.candidates[index].id,
                chosen_index=index,
                probability=probabilities[index],
                distribution=JSONList(probabilities, _floats_json(probabilities)),
                policy_version=policy.version,
                seed=seed,
                activated=not request.deferred,
                deferred=request.deferred,
                mode=mode,
            )
        )
    return decisions


def decide(
    session: Session,
    policy: Policy,
    requests: Sequence[DecisionRequest],
    rng: random.Random,
    *,
    exploration: ExplorationConfig | None = None,
    now: datetime | None = None,
) -> list[Decision]:
    """`choose`, and add the decisions to `session` (the caller commits)."""
    records = choose(policy, requests, rng, exploration=exploration, now=now)
    store_candidate_sets(session, records)
    decisions = [record.model() for record in records]
    session.add_all(decisions)
    return decisions


@dataclass(frozen=True)
class Event:
    event_id: str
    type: str
    value: float = 1.0


EVENT_STATUSES = ("accepted", "duplicate", "unknown_event", "too_late", "invalid")


def record_events(
    session: Session,
    events: Sequence[Event],
    *,
    reward_wait: float,
    known_types: Sequence[str],
    now: datetime | None = None,
) -> list[str]:
    """Store outcome events; answer one status per event, in order (the caller commits).

    Events are idempotent per (event_id, type). An event for an unknown decision is never
    stored. One that arrives after the reward window is stored apart (`late`) and never
    learned, so a slow client cannot rewrite history the learner already scored.
    """
    now = now or utcnow()
    ids = {event.event_id for event in events}
    decisions = {
        d.event_id: d.created_at
        for d in session.execute(
            select(Decision.event_id, Decision.created_at).where(Decision.event_id.in_(ids))
        )
    }
    window = timedelta(seconds=reward_wait)
    insert = postgresql.insert if session.bind.dialect.name == "postgresql" else sqlite.insert
    statuses: list[str] = []
    seen: set[tuple[str, str]] = set()
    for event in events:
        created_at = decisions.get(event.event_id)
        if event.type not in known_types:
            statuses.append("invalid")
            continue
        if created_at is None:
            statuses.append("unknown_event")
            continue
        key = (event.event_id, event.type)
        if key in seen:
            statuses.append("duplicate")
            continue
        seen.add(key)
        late = now > created_at + window
        # ON CONFLICT keeps concurrent duplicates out without failing the batch; RETURNING
        # says whether this request was the one that stored it.
        inserted = session.execute(
            insert(Reward)
            .values(
                event_id=event.event_id,
                type=event.type,
                value=event.value,
                created_at=now,
                late=late,
            )
            .on_conflict_do_nothing(index_elements=["event_id", "type"])
            .returning(Reward.id)
        ).scalar_one_or_none()
        if inserted is None:
            statuses.append("duplicate")
        elif late:
            statuses.append("too_late")
        else:
            statuses.append("accepted")
            if event.type == "impression":
                session.execute(
                    update(Decision)
                    .where(Decision.event_id == event.event_id)
                    .values(activated=True)
                )
    return statuses
