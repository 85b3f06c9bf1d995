"""The whole loop through HTTP: upload → decide → log → reward → learn → decide better."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from bandit.decisions import DecisionRequest, shaped_distribution
from bandit.features import Candidate
from bandit.learner import learn_once
from bandit.models import Decision, PolicySnapshot, utcnow
from bandit.policy import Policy
from tests.helpers import poster_bytes, runtime, upload
from web import create_app
from web.config import Settings

CLICK_RATES = {
    # segment → click probability of variant 1, 2, 3
    "segment-a": (0.30, 0.05, 0.05),
    "segment-b": (0.05, 0.05, 0.30),
}


def _title_with_three_variants(client: FlaskClient, headers: dict[str, str]) -> list[str]:
    response = client.post(
        "/api/v1/titles",
        json={"id": "space-show", "name": "Space Show", "genres": ["sci-fi"]},
        headers=headers,
    )
    assert response.status_code == 201, response.json
    ids = []
    for composition, palette in (("portrait", "dark"), ("landscape", "bright"), ("group", "cool")):
        response = upload(
            client,
            headers,
            "space-show",
            poster_bytes("Space Show", composition, palette),
            label=composition,
        )
        assert response.status_code == 201, response.json
        ids.append(response.json["id"])
    return ids


def _serve(client: FlaskClient, segment: str, rng: random.Random) -> tuple[str, str, float]:
    response = client.post(
        "/api/v1/decisions",
        json={
            "context": {"segment": segment, "device": rng.choice(["tv", "web"])},
            "titles": ["space-show"],
        },
    )
    assert response.status_code == 200, response.json
    (decision,) = response.json["decisions"]
    return decision["event_id"], decision["artwork_id"], decision["probability"]


def _learn(app: Flask, session: Session) -> None:
    """A learning pass as if every reward window so far had closed."""
    settings = runtime(app).settings
    after_window = utcnow() + timedelta(seconds=settings.reward_wait + 1)
    learn_once(session, settings.vw_args, runtime(app).rewards, now=after_window)
    runtime(app).policy.refresh()


def test_learns_each_segments_preferred_variant(
    app: Flask, client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    variants = _title_with_three_variants(client, editor_headers)
    preferred = {"segment-a": variants[0], "segment-b": variants[2]}
    world = random.Random(7)

    served = 0
    while served < 3000:
        for _ in range(250):
            segment = world.choice(list(CLICK_RATES))
            event_id, artwork_id, _ = _serve(client, segment, world)
            rate = CLICK_RATES[segment][variants.index(artwork_id)]
            if world.random() < rate:
                response = client.post(
                    "/api/v1/events", json={"events": [{"event_id": event_id, "type": "click"}]}
                )
                assert response.json["events"][0]["status"] == "accepted"
            served += 1
        _learn(app, session)

    for segment, best in preferred.items():
        chosen = [_serve(client, segment, world)[1] for _ in range(500)]
        share = chosen.count(best) / len(chosen)
        assert share >= 0.8, f"{segment}: preferred variant got {share:.0%}"

    # Every logged probability is the share the policy of that version gave the variant:
    # recompute each distribution with the snapshot that served it.
    # The first decisions are apprentice ones (the editor's default, variant 1, below the
    # learned-examples threshold); the rest are the policy's, floor included.
    policies = {0: Policy(runtime(app).settings.vw_args)}
    for snapshot in session.scalars(select(PolicySnapshot)):
        policies[snapshot.version] = Policy(
            snapshot.vw_args, snapshot.model, snapshot.version, snapshot.slot_examples
        )
    decisions = session.scalars(select(Decision).order_by(Decision.id)).all()
    assert len(decisions) == 4000
    assert len({d.policy_version for d in decisions}) > 5
    assert {d.mode for d in decisions} == {"apprentice", "policy"}
    for decision in decisions:
        candidates = [Candidate(c["id"], c["features"]) for c in decision.candidates]
        request = DecisionRequest(
            decision.slot,
            candidates,
            decision.context,
            decision.slot_features,
            default_id=variants[0],
        )
        expected, mode = shaped_distribution(
            policies[decision.policy_version], request, runtime(app).exploration
        )
        assert decision.mode == mode
        assert decision.distribution == expected
        assert decision.probability == expected[decision.chosen_index]
        assert decision.chosen_id == candidates[decision.chosen_index].id


def test_restarted_app_serves_the_latest_snapshot(
    app: Flask,
    client: FlaskClient,
    session: Session,
    editor_headers: dict[str, str],
    settings: Settings,
) -> None:
    variants = _title_with_three_variants(client, editor_headers)
    world = random.Random(3)
    for _ in range(3):
        for _ in range(100):
            event_id, artwork_id, _ = _serve(client, "segment-a", world)
            if artwork_id == variants[0]:
                client.post(
                    "/api/v1/events", json={"events": [{"event_id": event_id, "type": "play"}]}
                )
        _learn(app, session)
    latest = session.scalar(select(PolicySnapshot.version).order_by(PolicySnapshot.version.desc()))
    assert latest == 3

    restarted = create_app(settings)
    try:
        response = restarted.test_client().post(
            "/api/v1/decisions",
            json={"context": {"segment": "segment-a"}, "titles": ["space-show"]},
        )
        (decision,) = response.json["decisions"]
        assert decision["policy_version"] == latest
        # An empty model would share uniformly; the learned one favours the played variant.
        logged = session.scalar(select(Decision).where(Decision.event_id == decision["event_id"]))
        assert logged.distribution[variants.index(variants[0])] > 0.5
    finally:
        runtime(restarted).engine.dispose()


@pytest.mark.parametrize("status", ["paused", "archived"])
def test_inactive_variants_are_never_served(
    client: FlaskClient, session: Session, editor_headers: dict[str, str], status: str
) -> None:
    variants = _title_with_three_variants(client, editor_headers)
    for artwork_id in variants[:2]:
        response = client.patch(
            f"/api/v1/artworks/{artwork_id}", json={"status": status}, headers=editor_headers
        )
        assert response.status_code == 200 and response.json["status"] == status
    for _ in range(20):
        _, artwork_id, probability = _serve(client, "segment-a", random.Random())
        assert artwork_id == variants[2] and probability == 1.0
    (logged,) = {d.mode for d in session.scalars(select(Decision))}
    assert logged == "single"
    client.patch(f"/api/v1/artworks/{variants[2]}", json={"status": status}, headers=editor_headers)
    response = client.post("/api/v1/decisions", json={"titles": ["space-show"]})
    assert response.json["decisions"][0]["error"]["code"] == "no_artwork"
