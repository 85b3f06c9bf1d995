"""The learner: join decisions whose reward window has closed to their rewards, teach VW,
and save the new policy together with the log cursor in one transaction."""

from __future__ import annotations

import gc
import itertools
import json
import logging
import operator
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, String, bindparam, cast, select
from sqlalchemy.orm import Session

from bandit import lineages, vw_driver
from bandit.features import (
    CONTEXT_NS,
    SLOT_NS,
    Candidate,
    _number,
    context_text,
)
from bandit.models import CandidateSet, Decision, PolicyLineage, Reward, utcnow
from bandit.policy import vw_argv
from bandit.rewards import RewardConfig, horizon, joined_reward
from bandit.snapshots import load_latest, save_snapshot

log = logging.getLogger(__name__)


# Decisions per batch, and so per snapshot while catching up: each batch costs VW's driver
# a new workspace and a model load and save (about 8 ms), a third of a 5,000-decision batch.
BATCH_SIZE = 10_000


# Days of log a new lineage is trained from (KEYART_RETRAIN_DAYS); 0: the whole log.
RETRAIN_DAYS = 14.0


@dataclass(frozen=True)
class LearnReport:
    """One pass over the serving lineage (and, under `training`, over the lineage being
    trained to replace it)."""

    learned: int
    skipped: int
    cursor: int
    version: int | None  # the snapshot saved, or None when there was nothing to learn
    lineage_id: int | None = None
    training: LearnReport | None = None
    switched: bool = False  # the trained lineage serves from this pass on


_BATCH = (
    select(
        Decision.id,
        Decision.slot,
        cast(Decision.context, String),
        cast(Decision.slot_features, String),
        Decision.candidate_set_id,
        Decision.chosen_index,
        Decision.probability,
        Decision.deferred,
        # Whether the window has closed, compared by the database: turning every row's
        # timestamp into a datetime in Python cost as much as reading the row.
        (Decision.created_at <= bindparam("horizon", type_=DateTime)).label("closed"),
    )
    .where(Decision.id > bindparam("cursor"))
    .order_by(Decision.id)
    .limit(bindparam("size"))
)


# The batch's on-time events, by a join on the batch's id range rather than a list of ids.
_REWARDS = (
    select(Decision.id, Reward.type, Reward.value)
    .join(Decision, Decision.event_id == Reward.event_id)
    .where(
        Decision.id >= bindparam("first"),
        Decision.id <= bindparam("last"),
        Reward.late.is_(False),
    )
)


def _closed_batch(connection: Connection, cursor: int, closed_at: datetime, size: int) -> list[Any]:
    """The next decisions after `cursor`, in log order, up to the first whose window is still
    open: stopping there (rather than filtering it out) means the cursor never passes a
    decision that has not been scored yet, whatever the clocks of the processes that wrote
    the log. JSON columns come back as their text, the key of `_Featuriser`'s caches."""
    # Core rows, not ORM ones: building ORM result rows was a tenth of a learning pass.
    query = {"cursor": cursor, "size": size, "horizon": closed_at}
    rows = connection.execute(_BATCH, query).all()
    return list(itertools.takewhile(operator.itemgetter(-1), rows))


_UNSEEN: Any = object()


class _Featuriser:
    """VW text for logged decisions, caching by the logged JSON text (and candidate sets by
    their id): a segment's context and a title's candidates repeat across thousands of
    decisions, and featurising them is most of a learning pass's cost. The lines are
    exactly `example_lines`'.

    The action lines are cached in two parts around the chosen action's label (by set and
    chosen index), so that a decision costs three look-ups and one string."""

    LIMIT = 50_000

    def __init__(self) -> None:
        self._texts: dict[str, str] = {}  # a context's or a slot's JSON text → its tokens
        self._sets: dict[str, list[str]] = {}  # a candidate set's lines, by its id
        self._around: dict[tuple[str, int], tuple[str, str] | None] = {}

    def load_sets(self, session: Session, ids: set[str]) -> None:
        """Read the candidate sets among `ids` not cached yet (a batch's, before its
        `examples`)."""
        missing = ids - self._sets.keys()
        if not missing:
            return
        if len(self._sets) + len(missing) > self.LIMIT:
            self._sets.clear()
            self._around.clear()
            missing = ids
        wanted = sorted(missing)
        for start in range(0, len(wanted), 500):
            query = select(CandidateSet.id, cast(CandidateSet.candidates, String)).where(
                CandidateSet.id.in_(wanted[start : start + 500])
            )
            for key, text in session.execute(query):
                parsed = json.loads(text)
                self._sets[key] = [Candidate(c["id"], c["features"]).line for c in parsed]

    def text(self, logged: str) -> str:
        """A context's or a slot's tokens, from its logged JSON text."""
        text = self._texts.get(logged)
        if text is None:
            if len(self._texts) >= self.LIMIT:
                self._texts.clear()
            text = self._texts[logged] = context_text(json.loads(logged))
        return text

    def around(self, candidate_set: str, chosen: int) -> tuple[str, str] | None:
        """The action lines of a set (loaded by `load_sets`) with the chosen one's label
        left out: the text before the label and the text after it, remembered for the
        next decision of that set and index (`examples` looks there first). None when there
        is nothing to learn: the set had a single candidate, is missing, or has no action
        at `chosen` (a log edited by hand)."""
        actions = self._sets.get(candidate_set)
        if actions is None:
            # Its candidates were never stored (see bandit/models.py): nothing to learn from.
            # Not remembered: a later batch's `load_sets` may yet find the set.
            log.error("decision's candidate set %s is missing; skipped", candidate_set)
            return None
        if not 0 <= chosen < len(actions):
            log.error("chosen index %d is not in candidate set %s; skipped", chosen, candidate_set)
            parts = None
        elif len(actions) < 2:
            parts = None
        else:
            before = "".join(line + "\n" for line in actions[:chosen])
            after = "".join("\n" + line for line in actions[chosen + 1 :])
            parts = (before + "0:", f" {actions[chosen]}{after}")
        if len(self._around) >= self.LIMIT:
            self._around.clear()
        self._around[candidate_set, chosen] = parts
        return parts

    def examples(
        self,
        rows: list[Any],
        events: Mapping[int, list[tuple[str, float]]],
        rewards: RewardConfig,
    ) -> tuple[list[str], list[str]]:
        """The examples to learn among a batch's `rows` (`_BATCH`'s), given their on-time
        `events` by decision id, and the slot of each."""
        texts: list[str] = []
        slots: list[str] = []
        texts_of, around = self._texts, self._around
        for decision_id, slot, context, title, candidate_set, chosen, p, deferred, _ in rows:
            joined = events.get(decision_id)
            if joined is None and not deferred:  # most decisions: no event, reward 0
                label = f"0:{p!r}"
            else:
                reward = joined_reward(rewards, deferred, joined)
                if reward is None:
                    continue
                label = f"{_number(-reward)}:{p!r}"
            parts = around.get((candidate_set, chosen), _UNSEEN)
            if parts is _UNSEEN:
                parts = self.around(candidate_set, chosen)
            if parts is None:
                continue
            user = texts_of.get(context)
            if user is None:  # not `or`: an empty context's text is "", and worth keeping
                user = self.text(context)
            about = texts_of.get(title)
            if about is None:
                about = self.text(title)
            texts.append(
                f"shared |{CONTEXT_NS} {user} |{SLOT_NS} {about}\n{parts[0]}{label}{parts[1]}"
            )
            slots.append(slot)
        return texts, slots


@contextmanager
def _collector_paused() -> Iterator[None]:
    """A learning pass allocates rows and strings by the ten thousand, none of them in
    reference cycles; the collector's passes over them took a fifth of a pass's time."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Chain:
    """Batches learned by VW's own command-line driver, each on top of the model the one
    before left, in the driver's worker process (`bandit.vw_driver`), so that this process
    can read and featurise the next batch meanwhile: `start(examples)`, then `wait()`.

    The driver parses and learns in C++, twice the speed of the Python binding fed one
    example at a time. Chaining batches through `-i`/`-f` gives exactly the predictions of
    learning them in one workspace (VW saves its resume state with the model by default;
    tests/bandit/test_learner_driver.py checks this)."""

    def __init__(self, vw_args: str, model: bytes | None, work: Path) -> None:
        self._argv = vw_argv(vw_args)
        self._work = work
        self._driver = vw_driver.shared()
        self._steps = 0
        self._model: Path | None = None
        self._learning: Path | None = None
        if model is not None:
            self._model = work / "model-0"
            self._model.write_bytes(model)

    def start(self, examples: str) -> None:
        """Learn `examples` (VW text format, multi-line examples each ended by a blank line)."""
        self._steps += 1
        data = self._work / "batch.txt"  # the last job has finished with it
        data.write_text(examples)
        # Two model files in turn: a job reads the one the last job wrote.
        after = self._work / f"model-{self._steps % 2}"
        argv = [*self._argv, "-d", str(data), "-f", str(after)]
        if self._model is not None:
            argv += ["-i", str(self._model)]
        self._driver.start(argv)
        self._learning = after

    def wait(self) -> bytes:
        """The model after the job `start` began."""
        assert self._learning is not None, "no batch is being learned"
        after, self._learning = self._learning, None
        try:
            self._driver.wait()
        except vw_driver.DriverError as error:
            raise RuntimeError(f"VW's driver failed to learn a batch: {error}") from error
        self._model = after
        return after.read_bytes()

    def abandon(self) -> None:
        """Give up on a job under way (its worker is stopped; the next job starts another)."""
        if self._learning is not None:
            self._learning = None
            self._driver.close()


def learn_text(vw_args: str, model: bytes | None, examples: str, work: Path) -> bytes:
    """The model after VW's own driver has learned `examples` (VW text format) on top of
    `model` (None: a new one); `work` is a directory for the driver's files."""
    chain = _Chain(vw_args, model, work)
    chain.start(examples)
    return chain.wait()


@dataclass
class _Batch:
    """A batch read and featurised, ready for VW: what its commit will record."""

    cursor: int  # the last decision id it covers
    size: int  # decisions read, learned or not
    examples: str | None  # as VW text; None when there is nothing to learn
    slot_examples: Counter[str]  # examples to learn, per slot

    @property
    def learned(self) -> int:
        return sum(self.slot_examples.values())

    @property
    def skipped(self) -> int:
        return self.size - self.learned


def _batches(
    session: Session,
    cursor: int,
    closed_at: datetime,
    size: int,
    rewards: RewardConfig,
    on_learned: Callable[[int], None] | None,
) -> Iterator[_Batch]:
    """The log past `cursor`, batch by batch, read, joined to its rewards and written out
    as VW text, until a batch comes back short (the closed part of the log is done).

    Batches start at a quarter of `size` and grow by half up to it: VW waits for the first
    batch to be read and featurised, and for the rest only where the learner falls behind
    it (each is read and featurised while VW learns the one before). Starting at `size`
    made a pass about a tenth slower."""
    featuriser = _Featuriser()
    learned = 0
    wanted = max(1, size // 4)
    while True:
        # Read on the learner's own connection, between VW's jobs: VW runs in its worker
        # process, and a thread reading ahead here only contended with featurising for the
        # GIL (PostgreSQL passes were about 7% slower with one).
        rows = _closed_batch(session.connection(), cursor, closed_at, wanted)
        if not rows:
            return
        full = len(rows) == wanted
        wanted = min(size, max(wanted + 1, wanted * 3 // 2))
        events: dict[int, list[tuple[str, float]]] = defaultdict(list)
        for decision_id, kind, value in session.execute(
            _REWARDS, {"first": rows[0].id, "last": rows[-1].id}
        ):
            events[decision_id].append((kind, value))
        featuriser.load_sets(session, {row[4] for row in rows})  # candidate_set_id
        texts, slots = featuriser.examples(rows, events, rewards)
        counts = Counter(slots)
        if on_learned is not None:
            for _ in texts:
                learned += 1
                on_learned(learned)
        examples = None
        if texts:
            texts.append("")  # every example, the last too, ends with a blank line
            examples = "\n\n".join(texts)
        cursor = rows[-1].id
        yield _Batch(cursor, len(rows), examples, counts)
        if not full:
            return


def learn_once(
    session: Session,
    vw_args: str,
    rewards: RewardConfig,
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    on_learned: Callable[[int], None] | None = None,
    on_commit: Callable[[LearnReport], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    retrain_days: float = RETRAIN_DAYS,
) -> LearnReport:
    """One learner pass with these learning settings (`vw_args`, `rewards`' values and
    aggregation): the serving lineage learns every decision whose window has closed past
    its cursor; if the settings are not the serving lineage's, a lineage for them is
    started (`bandit.lineages`) and trained from the retained log, and it replaces the
    serving one, in the same transaction as its last snapshot, once it has caught up.
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    now = now or utcnow()
    serving, training = lineages.prepare(
        session, vw_args, rewards, now=now, retrain_days=retrain_days
    )
    session.commit()
    report = _learn_lineage(
        session, serving, rewards, now, batch_size, on_learned, on_commit, should_stop
    )
    if training is None or should_stop():
        return report
    trained = _learn_lineage(session, training, rewards, now, batch_size, None, None, should_stop)
    switched = trained.cursor >= report.cursor and not should_stop()
    if switched:
        lineages.switch(session, serving, training, now)
        session.commit()
        log.info("lineage %d serves in place of lineage %d", training.id, serving.id)
    return replace(report, training=trained, switched=switched)


def _learn_lineage(
    session: Session,
    lineage: PolicyLineage,
    rewards: RewardConfig,
    now: datetime,
    batch_size: int,
    on_learned: Callable[[int], None] | None,
    on_commit: Callable[[LearnReport], None] | None,
    should_stop: Callable[[], bool],
) -> LearnReport:
    """Learn every decision whose window has closed and that is past the lineage's cursor,
    in batches.

    Each batch commits the new snapshot, its per-slot counts and the cursor together, so a
    learner killed at any point restarts exactly where its last commit left it and learns
    every joined decision exactly once. `on_learned(n)` is called after the n-th example of
    this pass is read, `on_commit(report)` after each batch's commit (progress reporting).
    The pass ends early, after a batch's commit, once `should_stop()` says so.
    """
    rewards = lineages.lineage_rewards(lineage, rewards)
    closed_at = horizon(rewards, now)
    policy, snapshot = load_latest(session, lineage.settings["vw_args"], lineage)
    cursor = snapshot.cursor if snapshot else lineage.start_cursor
    examples = snapshot.examples_learned if snapshot else 0
    # The model as bytes between batches: VW's driver learns each batch from a file.
    model = snapshot.model if snapshot else None
    learned = skipped = 0
    version = None
    with tempfile.TemporaryDirectory(prefix="keyart-learn-") as tmp, _collector_paused():
        chain = _Chain(policy.vw_args, model, Path(tmp))
        batches = _batches(session, cursor, closed_at, batch_size, rewards, on_learned)
        try:
            batch = next(batches, None)
            if batch is not None and batch.examples is not None:
                chain.start(batch.examples)
            while batch is not None:
                # The next batch is read and featurised while VW learns this one...
                following = next(batches, None)
                if batch.examples is not None:
                    model = chain.wait()
                # ...and learned while this one's snapshot is committed.
                if following is not None and following.examples is not None:
                    chain.start(following.examples)
                learned += batch.learned
                skipped += batch.skipped
                for slot, count in batch.slot_examples.items():
                    policy.slot_examples[slot] = policy.slot_examples.get(slot, 0) + count
                cursor = batch.cursor
                saved = save_snapshot(
                    session,
                    policy,
                    examples_learned=examples + learned,
                    cursor=cursor,
                    model=model,
                    lineage_id=lineage.id,
                )
                policy.version = version = saved.version
                session.commit()
                log.info(
                    "lineage %d learned up to decision %d: policy version %d",
                    lineage.id,
                    cursor,
                    version,
                )
                if on_commit is not None:
                    report = LearnReport(learned, skipped, cursor, version, lineage.id)
                    on_commit(report)
                if following is not None and should_stop():
                    chain.abandon()  # the next batch's job: the next pass learns it again
                    break
                batch = following
        except BaseException:
            chain.abandon()
            raise
        finally:
            batches.close()
    return LearnReport(learned, skipped, cursor, version, lineage.id)
