"""One decision path: the server and the simulator decide through the same service with the
same settings, so for the same candidates, context and seed they decide the same."""

from __future__ import annotations

import random
from dataclasses import replace

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from artwork.models import Artwork
from bandit.config import ExplorationConfig
from bandit.decision_log import GroupCommitLog
from bandit.decisions import DecisionService, JSONDict, ListedCandidates, Slot
from bandit.features import Candidate, context_text
from bandit.models import Decision
from bandit.simulator import SimulationConfig
from tests.helpers import poster_bytes, runtime, upload
from web.config import Settings
from web.personalize import artwork_features


def test_the_simulator_decides_with_a_servers_defaults() -> None:
    server, simulator = Settings(), SimulationConfig()
    assert simulator.vw_args == server.vw_args
    assert simulator.exploration == replace(server.exploration(), viewer_key=b"")


def test_the_server_and_the_simulator_decide_alike(
    app: Flask, client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    client.post(
        "/api/v1/titles",
        json={"id": "show", "name": "Show", "genres": ["drama"]},
        headers=editor_headers,
    )
    for composition, palette in (("portrait", "dark"), ("landscape", "bright"), ("group", "warm")):
        upload(client, editor_headers, "show", poster_bytes("Show", composition, palette))
    exploration = ExplorationConfig(floor=0.05, apprentice_examples=0)
    runtime(app).exploration = exploration
    context = {"segment": "kids", "device": "tv"}

    # The server: decisions through HTTP, with the process's generator seeded.
    runtime(app).rng = random.Random(7)
    served = []
    for _ in range(30):
        response = client.post("/api/v1/decisions", json={"context": context, "titles": ["show"]})
        assert response.status_code == 200
        served.append(response.json["decisions"][0])

    # The simulator's way in: the title as a listed slot built from the artwork rows (not
    # from the serving catalog's SQL), the same policy, settings and seed.
    artworks = session.scalars(
        select(Artwork).where(Artwork.title_id == "show").order_by(Artwork.created_at, Artwork.id)
    ).all()
    features = JSONDict({"title": "show", "genre": ["drama"]})
    slot = Slot(
        "show",
        [Candidate(a.id, artwork_features(a)) for a in artworks],
        None,
        features,
        context_text(features),
    )
    log = GroupCommitLog(session.get_bind())
    service = DecisionService(
        ListedCandidates([slot]), runtime(app).policy, log, exploration, random.Random(7)
    )
    try:
        simulated = [service.decide(["show"], context).decisions[0] for _ in range(30)]
    finally:
        log.stop(timeout=30)

    assert [d["artwork_id"] for d in served] == [d.chosen_id for d in simulated]
    assert [d["probability"] for d in served] == [d.probability for d in simulated]
    rows = {d.event_id: d for d in session.scalars(select(Decision))}
    for answer, record in zip(served, simulated, strict=True):
        assert rows[answer["event_id"]].distribution == rows[record.event_id].distribution
        assert rows[answer["event_id"]].seed == rows[record.event_id].seed
    # Not a constant answer: the draws differ from one decision to the next.
    assert len({d["artwork_id"] for d in served}) > 1
