"""The decision engine: shaping a policy's distribution (floor, apprentice mode), the seeded
draw, the records the log keeps, and the decision service every caller decides through."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bandit.config import ExplorationConfig
from bandit.decision_log import StaleWrite
from bandit.features import Candidate, context_text
from bandit.models import CandidateSet, Decision, utcnow
from bandit.policy import Policy, apprentice, draw, with_floor

T = TypeVar("T")


@dataclass(slots=True)
class DecisionRequest:
    """Choose one of `candidates` for `slot`, for a viewer described by `context`.

    `default_id` is the candidate served in apprentice mode (for keyart, the editor's
    default artwork); when it is not among the candidates there is no apprentice mode.
    `event_id` is the caller's own id for the decision (Personalizer's `eventId`; else one
    is made). With `learn` false the decision is logged as mode `logging`, deferred and never
    activated, so the learner never learns it (Personalizer's LoggingOnly mode).

    Not frozen, though nothing changes one (`dataclasses.replace` makes a new one): one is
    made for every decision, and a frozen dataclass sets each of its 11 fields through
    `object.__setattr__`, 2.2-2.4 µs a request against 0.4-0.5.
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
    event_id: str | None = None
    learn: bool = True


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


def _floats_json(values: list[float]) -> str:
    # What json.dumps writes for a list of finite floats: a list's repr is the same text
    # (each float's repr, exact and round-tripping, between ", "), in one C call.
    return list.__repr__(values)


@dataclass(slots=True)
class DecisionRecord:
    """A decision as `choose` makes it: the row the log will hold (all but its id).

    A plain record rather than an ORM object because a page makes dozens of them per request
    and the group-commit writer inserts rows, not objects; `model()` gives the ORM object.
    Not frozen, though nothing changes one: a frozen dataclass sets each of its 16 fields
    through `object.__setattr__`, and that was a twentieth of a page's time.
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
MODES = ("policy", "apprentice", "single", "logging")


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
    learned = policy.slot_examples.get(request.slot, 0)
    floor = exploration.floor_for(learned)
    if learned < exploration.apprentice_examples and request.default_id is not None:
        ids = [c.id for c in candidates]
        if request.default_id in ids:
            return apprentice(len(ids), ids.index(request.default_id), floor), "apprentice"
    probabilities = policy.distribution(
        request.context, request.slot_features, candidates, context_tokens, request.slot_tokens
    )
    return with_floor(probabilities, floor), "policy"


class _StickySeeds:
    """`bandit.policy.sticky_seed` for the decisions of one page, the same values at a third
    of the cost: the HMAC keyed once, and its state after the viewer's part of the message
    kept for each of the page's slots (OpenSSL 3 looked the digest up anew for every
    `hmac.digest`, about 9 µs of each decision)."""

    def __init__(self, key: bytes, period: int) -> None:
        self._keyed = hmac.new(key, digestmod=hashlib.sha256)
        self._suffix = f"\x1f{period}"
        self._users: dict[str, Any] = {}

    def seed(self, user: str, slot: str) -> int:
        prefix = self._users.get(user)
        if prefix is None:
            prefix = self._users[user] = self._keyed.copy()
            prefix.update(f"{user}\x1f".encode())
        mac = prefix.copy()
        mac.update(f"{slot}{self._suffix}".encode())
        return int.from_bytes(mac.digest()[:8], "big") >> 1


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
    seeds = _StickySeeds(exploration.viewer_key, period)
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
            seed = seeds.seed(request.user, request.slot)
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
                event_id=request.event_id or ids[n],
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
                activated=request.learn and not request.deferred,
                deferred=request.deferred or not request.learn,
                mode=mode if request.learn else "logging",
            )
        )
    return decisions


# The decision service: one path from "these slots, this viewer" to logged decisions, for the
# HTTP API, the simulator, the benchmarks and the tests alike.


@dataclass(frozen=True)
class Slot:
    """What a candidate reader knows of one slot (for keyart: a title): its active
    candidates in a stable order (maybe none), the action served in apprentice mode, and
    the slot's own features with their VW tokens when the reader caches them."""

    id: str
    candidates: Sequence[Candidate]
    default_id: str | None = None
    features: Mapping[str, Any] = field(default_factory=dict)
    tokens: str | None = None
    logged: JSONList | None = None  # `logged_candidates(candidates)`, when cached

    @property
    def fallback_id(self) -> str | None:
        """What to show when no decision can be made and logged: the default if it is
        among the candidates, else the first of them (None: no candidates)."""
        ids = [c.id for c in self.candidates]
        if self.default_id in ids:
            return self.default_id
        return ids[0] if ids else None


class CandidatesUnavailable(RuntimeError):
    """The reader could not read the candidates (nothing was decided or logged)."""


class CatalogChanging(RuntimeError):
    """The candidates kept changing while the service decided; nothing was logged."""


class CandidateReader(Protocol):
    """Where the service reads candidates from: keyart's catalog (`web.serving_catalog`),
    the simulator's world, or a request's own list (Personalizer's rank).

    `read` answers the known slots among `slot_ids` and the version of the candidates they
    are current at (None: unversioned); it raises `CandidatesUnavailable` when it cannot
    read. `version` is the version the reader's cache is at, which the service compares
    with what the decision log last saw to tell whether to read afresh."""

    version: Any

    def read(self, slot_ids: Sequence[str], *, fresh: bool) -> tuple[dict[str, Slot], Any]: ...


class ListedCandidates:
    """A reader over slots given in full (the simulator's world, a ranking request's own
    actions): nothing to cache, so nothing is ever stale."""

    version = None

    def __init__(self, slots: Sequence[Slot]) -> None:
        self.slots = {slot.id: slot for slot in slots}

    def read(self, slot_ids: Sequence[str], *, fresh: bool) -> tuple[dict[str, Slot], None]:
        return {s: self.slots[s] for s in slot_ids if s in self.slots}, None


class DecisionWriter(Protocol):
    """Where decisions are made durable (`bandit.decision_log.GroupCommitLog`): `write`
    returns once they are committed, raises `StaleWrite` if `expect` is no longer the
    guarded version, and `DecisionLogError` if they could not be logged."""

    guarded: Any

    def write(self, records: Sequence[DecisionRecord], expect: Any = None) -> None: ...


class PolicySource(Protocol):
    """The policy to decide with now (`bandit.snapshots.ServingPolicy`)."""

    current: Policy


@dataclass(frozen=True)
class Decided(Generic[T]):
    """A page decided and logged: the known slots as read, one decision per slot that had
    candidates (in request order), and what `prepare` made of them."""

    slots: dict[str, Slot]
    decisions: list[DecisionRecord]
    prepared: T


# Attempts at a page before giving up, when the candidates keep changing under its decisions.
ATTEMPTS = 3


class DecisionService:
    """Candidates in, decisions out: logged if and only if answered, never from stale
    candidates.

    Each call reads the slots (cached by the reader while the log's guard holds), draws a
    decision per slot with `choose`, lets the caller `prepare` its answer (anything that
    can fail must fail before the decisions are logged: a logged decision answered as an
    error would be learned as never clicked), then writes them. A write refused as stale
    (the candidates changed after they were read) is decided again from a fresh read.
    """

    def __init__(
        self,
        reader: CandidateReader,
        policy: PolicySource,
        log: DecisionWriter,
        exploration: ExplorationConfig,
        rng: random.Random,
    ) -> None:
        self.reader = reader
        self.policy = policy
        self.log = log
        self.exploration = exploration
        self.rng = rng

    def decide(
        self,
        slot_ids: Sequence[str],
        context: Mapping[str, Any],
        *,
        user: str | None = None,
        deferred: bool = False,
        now: datetime | None = None,
        prepare: Callable[[list[DecisionRecord]], T] = lambda _: None,  # type: ignore[assignment,return-value]
        event_ids: Mapping[str, str] | None = None,
        exclusive: bool = False,
        learn: bool = True,
    ) -> Decided[T]:
        """Decide and log one page; raises `CandidatesUnavailable`, `CatalogChanging` or
        `DecisionLogError` (nothing logged in each case).

        `event_ids` gives slots the caller's own event ids (the others get new ones). With
        `exclusive`, a candidate fills at most one slot: slots are decided in order, each
        among the candidates the slots before it left (a slot left with none is not
        decided). `learn` false logs decisions the learner never learns (`DecisionRequest`)."""
        wanted = list(dict.fromkeys(slot_ids))
        for attempt in range(ATTEMPTS):
            # Read afresh when the last attempt was refused, or the log's writer has already
            # seen a newer version than the reader's cache holds.
            guarded = self.log.guarded
            fresh = attempt > 0 or (guarded is not None and guarded != self.reader.version)
            slots, version = self.reader.read(wanted, fresh=fresh)
            requests = [
                DecisionRequest(
                    slot=slot.id,
                    candidates=slot.candidates,
                    context=context,
                    slot_features=slot.features,
                    user=user,
                    deferred=deferred,
                    default_id=slot.default_id,
                    slot_tokens=slot.tokens,
                    logged=slot.logged,
                    event_id=(event_ids or {}).get(slot.id),
                    learn=learn,
                )
                for slot_id in wanted
                if (slot := slots.get(slot_id)) is not None and slot.candidates
            ]
            if not requests and not fresh and wanted:
                # Nothing to log, so no write will check the cached read against the
                # catalog's version: a title made since (by this process or another host)
                # would stay unknown here until some other page was logged. Read afresh.
                continue
            if exclusive:
                records = self._exclusive(requests, now)
            else:
                records = choose(
                    self.policy.current, requests, self.rng, exploration=self.exploration, now=now
                )
            prepared = prepare(records)
            try:
                self.log.write(records, expect=version)
            except StaleWrite:
                continue
            return Decided(slots, records, prepared)
        raise CatalogChanging("the candidates kept changing while deciding; try again")

    def _exclusive(
        self, requests: Sequence[DecisionRequest], now: datetime | None
    ) -> list[DecisionRecord]:
        """One decision per request in order, each among the candidates not chosen yet."""
        policy = self.policy.current  # one policy for the whole page
        records: list[DecisionRecord] = []
        taken: set[str] = set()
        for request in requests:
            left = [c for c in request.candidates if c.id not in taken]
            if not left:
                continue
            if len(left) < len(request.candidates):
                default = request.default_id if request.default_id not in taken else None
                request = replace(request, candidates=left, logged=None, default_id=default)
            (record,) = choose(policy, [request], self.rng, exploration=self.exploration, now=now)
            records.append(record)
            taken.add(record.chosen_id)
        return records
