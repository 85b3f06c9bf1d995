"""Migration 0006 moves a log's candidates into candidate sets, and back on downgrade,
without changing what any decision says it chose among."""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from bandit.decisions import DecisionRequest, candidate_set_id, choose
from bandit.features import Candidate
from bandit.models import CandidateSet, Decision
from bandit.policy import Policy
from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES
from web.config import DEFAULT_VW_ARGS
from web.db import alembic_config, make_engine, scratch_database

TITLES = {
    "title-a": [Candidate("a1", {"tag": ["dark"], "brightness": 0.25}), Candidate("a2")],
    "title-b": [Candidate("b1", {"faces": "one"}), Candidate("b2"), Candidate("b3")],
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all (the shared test database is already at head)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'keyart.db'}"
        return
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_database(POSTGRES_URL, "keyart_migration"))
        except Exception as error:
            message = f"PostgreSQL not reachable: {type(error).__name__}"
            if REQUIRE_POSTGRES:
                pytest.fail(message)
            pytest.skip(message)
        yield url


def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    engine = make_engine(url)
    config = alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)
    engine.dispose()


def _log_at_0005(url: str) -> dict[str, list[dict]]:
    """Decisions written as revision 0005 stored them, candidates in each row; returns
    each event id's candidates."""
    records = choose(
        Policy(DEFAULT_VW_ARGS),
        [DecisionRequest(slot, TITLES[slot]) for slot in [*TITLES, *TITLES, "title-a"]],
        random.Random(3),
    )
    engine = make_engine(url)
    with engine.begin() as connection:
        for record in records:
            connection.execute(
                text(
                    "INSERT INTO decisions (event_id, created_at, slot, context, slot_features,"
                    " candidates, chosen_id, chosen_index, probability, distribution,"
                    " policy_version, seed, activated, deferred, mode) VALUES (:event_id,"
                    " :created_at, :slot, '{}', '{}', :candidates, :chosen_id, :chosen_index,"
                    " :probability, '[0.5, 0.5]', 0, 1, true, false, 'policy')"
                ),
                {
                    "event_id": record.event_id,
                    "created_at": record.created_at,
                    "slot": record.slot,
                    # The text keyart wrote: exactly json.dumps of the logged list.
                    "candidates": record.candidates.json_text,  # type: ignore[attr-defined]
                    "chosen_id": record.chosen_id,
                    "chosen_index": record.chosen_index,
                    "probability": record.probability,
                },
            )
    engine.dispose()
    return {record.event_id: list(record.candidates) for record in records}


def test_upgrade_stores_each_set_once_and_downgrade_restores_the_rows(empty_url: str) -> None:
    _migrate(empty_url, "0005")
    logged = _log_at_0005(empty_url)

    _migrate(empty_url, "head")
    engine = make_engine(empty_url)
    with Session(engine) as session:
        sets = session.scalars(select(CandidateSet)).all()
        assert len(sets) == len(TITLES)  # five decisions, two distinct sets
        for decision in session.scalars(select(Decision)):
            assert decision.candidates == logged[decision.event_id]
            # The id a new decision with the same candidates would get: later writes reuse it.
            assert decision.candidate_set_id == candidate_set_id(
                choose(
                    Policy(DEFAULT_VW_ARGS),
                    [DecisionRequest(decision.slot, TITLES[decision.slot])],
                    random.Random(0),
                )[0].candidates
            )
    engine.dispose()

    _migrate(empty_url, "0005", down=True)
    engine = make_engine(empty_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT event_id, candidates FROM decisions")).all()
        tables = set(
            connection.execute(
                text(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    if engine.dialect.name == "sqlite"
                    else "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            ).scalars()
        )
    engine.dispose()
    assert len(rows) == len(logged)
    for event_id, candidates in rows:
        value = json.loads(candidates) if isinstance(candidates, str) else candidates
        assert value == logged[event_id]
    assert "candidate_sets" not in tables
