"""The learner survives SIGKILL anywhere: restarted, it learns every joined decision exactly
once, ending with the very model an uninterrupted run builds from the same log."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bandit.learner import LearnReport, learn_once
from bandit.models import Decision, PolicySnapshot, utcnow
from bandit.policy import Policy
from bandit.rewards import RewardConfig
from bandit.snapshots import load_latest
from tests.bandit.world import catalog, weights, write_log
from web.config import DEFAULT_VW_ARGS

ROOT = Path(__file__).resolve().parents[2]
BATCH = 100


def _learner(url: str, *kill: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.bandit.learner_process",
            url,
            DEFAULT_VW_ARGS,
            str(BATCH),
            *kill,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _history(session: Session) -> list[tuple[int, int, dict[str, int] | None]]:
    session.expire_all()
    return [
        (s.cursor, s.examples_learned, s.slot_examples)
        for s in session.scalars(select(PolicySnapshot).order_by(PolicySnapshot.version))
    ]


def _learned_up_to(session: Session, cursor: int) -> tuple[int, dict[str, int]]:
    """What a snapshot at `cursor` must have counted: in this log every decision is learned."""
    counts = dict(
        session.execute(
            select(Decision.slot, func.count()).where(Decision.id <= cursor).group_by(Decision.slot)
        ).all()
    )
    return sum(counts.values()), counts


def _check_history(session: Session, history: list[tuple[int, int, dict[str, int] | None]]) -> None:
    """Each snapshot moved the cursor on and counted exactly the decisions up to it."""
    cursors = [cursor for cursor, _, _ in history]
    assert cursors == sorted(set(cursors))
    for cursor, learned, slots in history:
        assert (learned, slots) == _learned_up_to(session, cursor)


def _snapshots(session: Session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(PolicySnapshot)) or 0


def test_killed_learner_learns_every_decision_exactly_once(
    session: Session, database_url: str
) -> None:
    write_log(session, Policy(DEFAULT_VW_ARGS), catalog(), 1050, random.Random(21))

    reference = learn_once(
        session,
        DEFAULT_VW_ARGS,
        RewardConfig(wait_seconds=600.0),
        now=utcnow() + timedelta(days=1),
        batch_size=BATCH,
    )
    assert reference.learned == 1050
    expected_model = weights(load_latest(session, DEFAULT_VW_ARGS)[0])
    expected_history = _history(session)
    # Batches grow from a quarter of BATCH (bandit.learner._batches): 25, 37, 55, 82, 100...
    assert [cursor for cursor, _, _ in expected_history][:5] == [25, 62, 117, 199, 299]
    _check_history(session, expected_history)
    session.execute(delete(PolicySnapshot))
    session.commit()

    # SIGKILL inside a batch, right after a commit, at a batch's first and last example.
    for kill in (("examples", "250"), ("commits", "2"), ("examples", "1"), ("examples", "99")):
        process = _learner(database_url, *kill)
        _, err = process.communicate(timeout=120)
        assert process.returncode == -signal.SIGKILL, err

    # And from outside, at whatever point the learner has reached once it has committed.
    process = _learner(database_url)
    before = _snapshots(session)
    deadline = time.monotonic() + 60
    while _snapshots(session) == before and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)

    process = _learner(database_url)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err

    policy, snapshot = load_latest(session, DEFAULT_VW_ARGS)
    assert snapshot is not None
    assert (snapshot.cursor, snapshot.examples_learned) == (reference.cursor, 1050)
    # Every decision was counted once: a restarted pass starts its batches small again, so
    # the boundaries differ from the uninterrupted run's, but not what each snapshot holds.
    _check_history(session, _history(session))
    assert np.array_equal(weights(policy), expected_model)


def test_a_pass_asked_to_stop_ends_after_a_commit_and_the_next_carries_on(
    session: Session,
) -> None:
    write_log(session, Policy(DEFAULT_VW_ARGS), catalog(), 400, random.Random(5))
    rewards = RewardConfig(wait_seconds=600.0)
    later = utcnow() + timedelta(days=1)
    reference = learn_once(session, DEFAULT_VW_ARGS, rewards, now=later, batch_size=BATCH)
    expected_model = weights(load_latest(session, DEFAULT_VW_ARGS)[0])
    session.execute(delete(PolicySnapshot))
    session.commit()

    commits: list[LearnReport] = []
    stopped = learn_once(
        session,
        DEFAULT_VW_ARGS,
        rewards,
        now=later,
        batch_size=BATCH,
        on_commit=commits.append,
        should_stop=lambda: len(commits) == 2,
    )
    assert len(commits) == 2 and _snapshots(session) == 2
    assert stopped.cursor == commits[-1].cursor < reference.cursor
    rest = learn_once(session, DEFAULT_VW_ARGS, rewards, now=later, batch_size=BATCH)
    assert stopped.learned + rest.learned == reference.learned == 400
    _check_history(session, _history(session))
    assert np.array_equal(weights(load_latest(session, DEFAULT_VW_ARGS)[0]), expected_model)
