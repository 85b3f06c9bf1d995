"""The editor's view of apprentice mode: visible per title, switching once enough is learned."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from bandit.config import ExplorationConfig
from bandit.learner import learn_once
from bandit.models import utcnow
from tests.helpers import poster_bytes, runtime, upload


def test_apprentice_switches_to_policy_and_the_report_shows_it(
    app: Flask, client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    runtime(app).exploration = ExplorationConfig(floor=0.05, apprentice_examples=30)
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    ids = [
        upload(client, editor_headers, "show", poster_bytes("Show", c, p)).json["id"]
        for c, p in (("portrait", "dark"), ("landscape", "bright"))
    ]
    report = client.get("/api/v1/titles/show/serving", headers=editor_headers).json
    assert (report["mode"], report["examples_learned"], report["apprentice_examples"]) == (
        "apprentice",
        0,
        30,
    )
    for _ in range(40):
        decision = client.post("/api/v1/decisions", json={"titles": ["show"]}).json["decisions"][0]
        assert decision["mode"] == "apprentice"
        # The default (first upload) with 1 − floor, the other with the floor.
        expected = 0.95 if decision["artwork_id"] == ids[0] else 0.05
        assert abs(decision["probability"] - expected) < 1e-12

    settings = runtime(app).settings
    learn_once(
        session,
        settings.vw_args,
        runtime(app).rewards,
        now=utcnow() + timedelta(seconds=settings.reward_wait + 1),
    )
    runtime(app).policy.refresh()
    report = client.get("/api/v1/titles/show/serving", headers=editor_headers).json
    assert report["mode"] == "policy"
    assert report["examples_learned"] == 40
    assert report["decisions_by_mode"] == {"apprentice": 40}
    decision = client.post("/api/v1/decisions", json={"titles": ["show"]}).json["decisions"][0]
    assert decision["mode"] == "policy"

    assert client.get("/api/v1/titles/nope/serving", headers=editor_headers).status_code == 404
    assert client.get("/api/v1/titles/show/serving").status_code == 401
