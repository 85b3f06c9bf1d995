"""Policy lineages: changed learning settings train a new model from the log and replace the
serving one once it has caught up, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from bandit.config import ExplorationConfig
from bandit.decisions import DecisionRequest, shaped_distribution
from bandit.learner import BATCH_SIZE, learn_once
from bandit.models import Decision, PolicyLineage, PolicySnapshot, utcnow
from bandit.policy import Policy
from bandit.rewards import RewardConfig
from bandit.snapshots import ServingPolicy, load_latest, serving_lineage
from tests.bandit.world import START, catalog, weights, write_log
from tests.helpers import Learners, decide, learner_env, runtime, until
from web.config import DEFAULT_VW_ARGS

REWARDS = RewardConfig(wait_seconds=600.0)
OTHER_ARGS = DEFAULT_VW_ARGS.replace("--squarecb", "--epsilon 0.05")


def _log(session: Session, count: int, seed: int, start=START):  # type: ignore[no-untyped-def]
    return write_log(
        session, Policy(DEFAULT_VW_ARGS), catalog(3), count, random.Random(seed), start=start
    )


def test_new_settings_train_a_lineage_from_the_log_and_then_serve(
    app: Flask, session: Session
) -> None:
    end = _log(session, 300, seed=1)
    later = end + timedelta(hours=1)
    first = learn_once(session, DEFAULT_VW_ARGS, REWARDS, now=later)
    assert first.training is None and first.learned > 0
    serving = ServingPolicy(runtime(app).sessions, DEFAULT_VW_ARGS, poll_seconds=3600)
    old_lineage = serving.current.lineage_id
    assert old_lineage == first.lineage_id

    # New settings: a lineage for them learns the whole retained log in the same pass and,
    # having caught up, serves from then on; the old one is retired, its history kept.
    report = learn_once(session, OTHER_ARGS, REWARDS, now=later, retrain_days=0)
    assert report.training is not None and report.switched
    assert report.training.learned == first.learned
    new = serving_lineage(session)
    assert new is not None and new.id == report.training.lineage_id != old_lineage
    assert new.settings["vw_args"] == OTHER_ARGS
    assert session.get(PolicyLineage, old_lineage).status == "retired"
    # It is the model an uninterrupted learner with those settings would have: trained on
    # the log from the start, in time order.
    policy, snapshot = load_latest(session, DEFAULT_VW_ARGS)
    assert snapshot is not None and snapshot.lineage_id == new.id
    assert policy.vw_args == OTHER_ARGS
    assert snapshot.cursor == first.cursor
    assert sum(snapshot.slot_examples.values()) == first.learned

    # Serving follows the switch on its next poll, even though the old lineage's snapshots
    # may carry versions as high as the new one's.
    assert serving.refresh()
    assert serving.current.lineage_id == new.id
    assert serving.current.vw_args == OTHER_ARGS
    np.testing.assert_array_equal(weights(serving.current), weights(policy))

    # The same settings again: nothing new is started.
    again = learn_once(session, OTHER_ARGS, REWARDS, now=later)
    assert again.training is None
    assert session.scalar(select(func.count()).select_from(PolicyLineage)) == 2


def test_a_lineage_learns_only_the_retained_log(session: Session) -> None:
    end = _log(session, 100, seed=2)
    end = _log(session, 100, seed=3, start=end + timedelta(days=20))
    now = end + timedelta(hours=1)
    learn_once(session, DEFAULT_VW_ARGS, REWARDS, now=now)
    report = learn_once(session, OTHER_ARGS, REWARDS, now=now, retrain_days=14)
    assert report.switched and report.training is not None
    old = session.scalar(select(func.count()).select_from(Decision)) - 100
    assert old == 100
    new = session.get(PolicyLineage, report.training.lineage_id)
    # It started after the first hundred, which are older than 14 days.
    first_recent = session.scalar(
        select(func.min(Decision.id)).where(Decision.created_at >= end - timedelta(days=14))
    )
    assert new.start_cursor == first_recent - 1
    assert report.training.learned + report.training.skipped == 100


def test_a_stopped_retraining_resumes_and_serving_waits_for_it(session: Session) -> None:
    end = _log(session, 400, seed=4)
    now = end + timedelta(hours=1)
    first = learn_once(session, DEFAULT_VW_ARGS, REWARDS, now=now)
    # The learner is stopped after the new lineage's first batch has committed (what a kill
    # there leaves behind): the old lineage keeps serving, the new one keeps its cursor.
    calls = 0

    def stop_after_one_batch() -> bool:
        nonlocal calls
        calls += 1
        return calls > 2

    stopped = learn_once(
        session,
        OTHER_ARGS,
        REWARDS,
        now=now,
        retrain_days=0,
        batch_size=60,
        should_stop=stop_after_one_batch,
    )
    assert stopped.training is not None and not stopped.switched
    training = session.get(PolicyLineage, stopped.training.lineage_id)
    assert training.status == "training"
    assert 0 < stopped.training.cursor < stopped.cursor
    assert serving_lineage(session).settings["vw_args"] == DEFAULT_VW_ARGS

    resumed = learn_once(session, OTHER_ARGS, REWARDS, now=now, retrain_days=0, batch_size=60)
    assert resumed.switched and resumed.training.lineage_id == training.id
    # Between them, the two passes learned every decision once, as the serving lineage did.
    assert stopped.training.learned + resumed.training.learned == first.learned
    assert resumed.training.cursor == first.cursor


def test_a_change_back_before_catching_up_retires_the_half_trained_lineage(
    session: Session,
) -> None:
    end = _log(session, 200, seed=5)
    now = end + timedelta(hours=1)
    learn_once(session, DEFAULT_VW_ARGS, REWARDS, now=now)
    stopped = learn_once(
        session,
        OTHER_ARGS,
        REWARDS,
        now=now,
        retrain_days=0,
        batch_size=40,
        should_stop=iter([False, False, True, True, True, True]).__next__,
    )
    assert stopped.training is not None and not stopped.switched
    back = learn_once(session, DEFAULT_VW_ARGS, REWARDS, now=now)
    assert back.training is None
    statuses = dict(session.execute(select(PolicyLineage.id, PolicyLineage.status)).all())
    assert statuses[stopped.training.lineage_id] == "retired"
    assert sorted(statuses.values()) == ["retired", "serving"]


def test_reward_rules_are_learning_settings_too(session: Session) -> None:
    end = _log(session, 120, seed=6)
    now = end + timedelta(hours=1)
    learn_once(session, DEFAULT_VW_ARGS, REWARDS, now=now)
    plays_only = RewardConfig({"click": 0.0, "play": 1.0, "impression": 0.0}, 600.0)
    report = learn_once(session, DEFAULT_VW_ARGS, plays_only, now=now, retrain_days=0)
    assert report.switched
    new = serving_lineage(session)
    assert new.settings["reward_values"] == {"click": 0.0, "impression": 0.0, "play": 1.0}
    # No plays in this log: the new lineage learned every decision as unrewarded.
    snapshot = session.scalars(
        select(PolicySnapshot).where(PolicySnapshot.lineage_id == new.id)
    ).first()
    assert snapshot is not None


def test_decisions_across_a_switch_log_the_probability_they_were_drawn_with(
    app: Flask, session: Session
) -> None:
    end = _log(session, 300, seed=7)
    now = end + timedelta(hours=1)
    learn_once(session, DEFAULT_VW_ARGS, REWARDS, now=now)
    serving = runtime(app).policy
    exploration = ExplorationConfig(floor=0.05, apprentice_examples=0)
    title = catalog(3)[0]
    request = DecisionRequest(
        title.id,
        title.candidates(),
        {"segment": "action-fans", "device": "tv"},
        {"title": title.id, "genre": list(title.genres)},
    )
    drawn = []
    for settings in (DEFAULT_VW_ARGS, OTHER_ARGS):
        learn_once(session, settings, REWARDS, now=now, retrain_days=0)
        serving.refresh()
        policy = serving.current
        logged = decide(session, policy, [request] * 20, random.Random(1), exploration=exploration)
        expected, _ = shaped_distribution(policy, request, exploration)
        drawn.append((policy.lineage_id, policy.version))
        for row in logged:
            assert row.policy_version == policy.version
            assert row.distribution == expected
            assert row.probability == expected[row.chosen_index]
    # Two different models served, from two lineages.
    assert drawn[0][0] != drawn[1][0] and drawn[0][1] != drawn[1][1]


def test_the_policy_api_reports_and_stores_settings(
    client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    end = _log(session, 100, seed=8)
    learn_once(session, DEFAULT_VW_ARGS, REWARDS, now=end + timedelta(hours=1))
    got = client.get("/api/v1/policy", headers=editor_headers).get_json()
    assert got["lineage"]["status"] == "serving"
    assert got["interactions"] == ["context*action", "slot*action"] and got["hash_bits"] == 18
    assert got["settings"]["source"] == "environment"
    assert got["learner_lag_seconds"] >= 0

    bad = client.put("/api/v1/policy", json={"vw_args": "--epsilon 0.1"}, headers=editor_headers)
    assert bad.status_code == 422
    assert "vw_args must include --cb_explore_adf" in bad.get_json()["error"]["message"]
    bad = client.put("/api/v1/policy", json={"hash_bits": 99}, headers=editor_headers)
    assert bad.status_code == 422 and "hash_bits" in bad.get_json()["error"]["message"]
    assert (
        client.put("/api/v1/policy", json={"bits": 20}, headers=editor_headers).status_code == 422
    )

    put = client.put(
        "/api/v1/policy",
        json={
            "vw_args": "--cb_explore_adf --epsilon 0.05",
            "reward_values": {"click": 1, "impression": 0},
        },
        headers=editor_headers,
    )
    assert put.status_code == 200
    stored = put.get_json()["settings"]
    assert stored["source"] == "stored"
    assert stored["vw_args"].startswith("--cb_explore_adf --epsilon 0.05 --quiet -q ua -q ta")
    assert stored["reward_values"] == {"click": 1.0, "impression": 0.0}
    cleared = client.put("/api/v1/policy", json={}, headers=editor_headers).get_json()
    assert cleared["settings"]["source"] == "environment"


def _training_progress(session: Session, lineage_id: int) -> list[tuple[int, int, int]]:
    """(version, cursor, examples learned) of each snapshot of a lineage, oldest first."""
    session.rollback()  # a fresh read of what the learner process has committed
    query = (
        select(PolicySnapshot.version, PolicySnapshot.cursor, PolicySnapshot.examples_learned)
        .where(PolicySnapshot.lineage_id == lineage_id)
        .order_by(PolicySnapshot.version)
    )
    return [tuple(row) for row in session.execute(query)]


def _training_lineage(session: Session) -> PolicyLineage | None:
    session.rollback()
    return session.scalars(select(PolicyLineage).where(PolicyLineage.status == "training")).first()


def test_a_learner_killed_while_retraining_resumes_the_lineage_where_it_left_it(
    client: FlaskClient,
    session: Session,
    editor_headers: dict[str, str],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    # A log long enough that a new lineage takes several of the learner's batches (they
    # grow from a quarter of BATCH_SIZE: 2,500, 3,750, 5,625, then the rest).
    count = 12_000
    assert count > BATCH_SIZE // 4 * 3
    write_log(session, Policy(DEFAULT_VW_ARGS), catalog(3), count, random.Random(9), per_commit=500)
    later = utcnow() + timedelta(days=1)
    put = client.put(
        "/api/v1/policy",
        json={"vw_args": "--cb_explore_adf --epsilon 0.05"},
        headers=editor_headers,
    )
    assert put.status_code == 200
    new_args = put.get_json()["settings"]["vw_args"]

    # What a learner that is never killed makes of the log with the new settings.
    learn_once(session, new_args, REWARDS, now=later, retrain_days=0)
    expected_policy, expected = load_latest(session, new_args)
    assert expected is not None and expected.cursor == count
    expected_weights = weights(expected_policy)
    expected_counts = (expected.cursor, expected.examples_learned, dict(expected.slot_examples))
    session.execute(delete(PolicySnapshot))
    session.execute(delete(PolicyLineage))
    session.commit()

    # The environment's settings serve, caught up with the log; the stored ones wait.
    old = learn_once(session, DEFAULT_VW_ARGS, REWARDS, now=later, retrain_days=0)
    assert old.cursor == count and old.training is None

    learners = Learners(learner_env(cli_env, KEYART_RETRAIN_DAYS="0"), tmp_path)
    try:
        first = learners.start()
        lineage = until(lambda: _training_lineage(session), 120, "a lineage for the new settings")
        # SIGKILL once it has committed some progress.
        deadline = time.monotonic() + 120
        while not _training_progress(session, lineage.id) and time.monotonic() < deadline:
            time.sleep(0.005)
        learners.kill(first)
        at_kill = _training_progress(session, lineage.id)
        assert at_kill, "the killed learner committed nothing for the new lineage"
        killed_version, killed_cursor, killed_examples = at_kill[-1]
        assert 0 < killed_cursor < count, "killed too late: the lineage had caught up"
        assert killed_examples == killed_cursor  # every decision so far, once
        assert _training_lineage(session).id == lineage.id
        assert serving_lineage(session).settings["vw_args"] == DEFAULT_VW_ARGS

        second = learners.start()
        until(
            lambda: (found := serving_lineage(session)) is not None and found.id == lineage.id,
            120,
            "the new lineage serves",
        )
        learners.kill(second)
    finally:
        learners.stop()

    # The second learner carried on from the killed one's last commit: every snapshot it
    # wrote is past it, and the lineage's counts grew by exactly the decisions after it.
    progress = _training_progress(session, lineage.id)
    assert progress[: len(at_kill)] == at_kill
    resumed = progress[len(at_kill) :]
    assert resumed and all(cursor > killed_cursor for _, cursor, _ in resumed)
    cursors = [cursor for _, cursor, _ in progress]
    assert cursors == sorted(set(cursors))
    assert all(version > killed_version for version, _, _ in resumed)
    assert resumed[-1][2] - killed_examples == count - killed_cursor

    # One switch, recorded once: the old lineage retired in favour of the new one.
    lineages = session.scalars(select(PolicyLineage).order_by(PolicyLineage.id)).all()
    assert [(x.status, x.note) for x in lineages] == [
        ("retired", f"replaced by lineage {lineage.id}"),
        ("serving", "learning settings changed"),
    ]
    switches = [
        line
        for process in learners.processes
        for line in Learners.lines(process)
        if line["message"].endswith("serves in place of lineage " + str(lineages[0].id))
    ]
    assert len(switches) == 1 and Learners.lines(second).count(switches[0]) == 1

    # And it is the model the uninterrupted learner made: the same weights, the same counts.
    policy, snapshot = load_latest(session, DEFAULT_VW_ARGS)
    assert snapshot is not None and snapshot.lineage_id == lineage.id
    assert (snapshot.cursor, snapshot.examples_learned, dict(snapshot.slot_examples)) == (
        expected_counts
    )
    np.testing.assert_array_equal(weights(policy), expected_weights)
