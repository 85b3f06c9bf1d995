"""Snapshots: serving picks up a newer one on its own, and a corrupt one is passed over."""

from __future__ import annotations

import random
import time
from datetime import timedelta

import numpy as np
from flask import Flask
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bandit.learner import learn_once
from bandit.models import PolicySnapshot, utcnow
from bandit.policy import Policy
from bandit.rewards import RewardConfig
from bandit.snapshots import ServingPolicy, load_latest
from tests.bandit.world import catalog, weights, write_log
from tests.helpers import runtime
from web.config import DEFAULT_VW_ARGS
from web.db import make_engine, make_sessionmaker


def _learn(session: Session, seed: int) -> int:
    write_log(session, Policy(DEFAULT_VW_ARGS), catalog(2), 150, random.Random(seed))
    report = learn_once(
        session, DEFAULT_VW_ARGS, RewardConfig(wait_seconds=600.0), now=utcnow() + timedelta(days=1)
    )
    assert report.version is not None
    return report.version


def _wait_for(condition, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_serving_notices_a_newer_snapshot_on_its_own(app: Flask, session: Session) -> None:
    serving = ServingPolicy(runtime(app).sessions, DEFAULT_VW_ARGS, poll_seconds=0.05)
    assert serving.current.version == 0
    serving.start()
    try:
        first = serving.current
        version = _learn(session, 1)
        assert _wait_for(lambda: serving.current.version == version)
        # The swapped-in policy is that snapshot's model, and the old object was left intact
        # for any request still holding it.
        learned, _ = load_latest(session, DEFAULT_VW_ARGS)
        assert np.array_equal(weights(serving.current), weights(learned))
        assert first.version == 0

        newer = _learn(session, 2)
        assert newer > version
        assert _wait_for(lambda: serving.current.version == newer)
    finally:
        serving.stop()


def test_a_process_first_asked_long_after_it_started_decides_with_the_newest_snapshot(
    app: Flask, session: Session
) -> None:
    # A gunicorn worker loads the policy when it boots and starts polling on its first
    # request; one that no connection reached while the learner moved on must not answer
    # that request with its boot-time model (a live Personalizer test once got uniform
    # probabilities from such a worker).
    serving = ServingPolicy(runtime(app).sessions, DEFAULT_VW_ARGS, poll_seconds=3600)
    assert serving.current.version == 0
    version = _learn(session, 6)
    serving.start()
    try:
        assert serving.current.version == version
    finally:
        serving.stop()


def test_corrupt_snapshot_falls_back_to_the_previous_one(app: Flask, session: Session) -> None:
    good = _learn(session, 3)
    bad = _learn(session, 4)
    good_model = session.scalar(select(PolicySnapshot.model).where(PolicySnapshot.version == good))
    model = session.scalar(select(PolicySnapshot.model).where(PolicySnapshot.version == bad))
    flipped = bytes([model[0] ^ 0xFF]) + model[1:]
    session.execute(
        update(PolicySnapshot).where(PolicySnapshot.version == bad).values(model=flipped)
    )
    session.commit()

    policy, snapshot = load_latest(session, DEFAULT_VW_ARGS)
    assert snapshot is not None and snapshot.version == good
    assert np.array_equal(weights(policy), weights(Policy(DEFAULT_VW_ARGS, good_model)))

    serving = ServingPolicy(runtime(app).sessions, DEFAULT_VW_ARGS, poll_seconds=3600)
    assert serving.current.version == good
    assert serving.refresh() is False
    # The learner also resumes from the sound snapshot, so nothing it holds is lost.
    resumed = learn_once(
        session, DEFAULT_VW_ARGS, RewardConfig(wait_seconds=600.0), now=utcnow() + timedelta(days=1)
    )
    assert resumed.learned == 150


def test_a_process_starts_while_the_database_is_down_and_loads_the_policy_after(
    app: Flask, session: Session
) -> None:
    version = _learn(session, 5)
    unreachable = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    database = [make_sessionmaker(unreachable)]  # which database the sessions reach, for now
    serving = ServingPolicy(lambda: database[0](), DEFAULT_VW_ARGS, poll_seconds=3600)
    # It started (a gunicorn worker that cannot boot takes the whole server down with it),
    # with no policy yet, and says so.
    assert not serving.loaded and serving.current.version == 0
    client = app.test_client()
    runtime(app).policy, kept = serving, runtime(app).policy
    try:
        answer = client.get("/readyz")
        assert answer.status_code == 503 and answer.json["error"]["code"] == "policy_not_loaded"
        serving.start()
        database[0] = runtime(app).sessions  # the database is back
        # Retried every second until it gets through, not every poll interval (an hour).
        assert _wait_for(lambda: serving.current.version == version, timeout=10)
        assert serving.loaded and client.get("/readyz").status_code == 200
    finally:
        serving.stop()
        runtime(app).policy = kept
        unreachable.dispose()
