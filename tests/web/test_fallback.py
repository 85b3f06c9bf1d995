"""Fallback answers: when the catalog cannot be read or the decisions cannot be logged within
KEYART_DECISION_TIMEOUT, a page is answered from the process's last catalog snapshot with
each title's editor default, marked `fallback`, with no event id or probability, and nothing
is logged. On SQLite and PostgreSQL; the outage of a whole PostgreSQL server, under load from
several processes, is in tests/web/test_outage.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session

from bandit.decision_log import GroupCommitLog
from bandit.models import Decision
from tests.helpers import poster_bytes, runtime, upload
from web.db import ReadUnavailable, make_engine
from web.serving_catalog import CATALOG_VERSION

# Nothing listens on port 1: connecting fails at once, as to a stopped server.
UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/none"


def _title(client: FlaskClient, headers: dict[str, str], title: str) -> list[str]:
    assert client.post("/api/v1/titles", json={"id": title, "name": title}, headers=headers)
    ids = [
        upload(client, headers, title, poster_bytes(title, palette=p)).json["id"]
        for p in ("dark", "bright", "warm")
    ]
    # The editor's default is the second variant: a fallback must show it, not the first.
    answer = client.put(
        f"/api/v1/titles/{title}/default-artwork", json={"artwork_id": ids[1]}, headers=headers
    )
    assert answer.status_code == 200, answer.json
    return ids


def _logged(session: Session) -> int:
    session.expire_all()
    return session.scalar(select(func.count()).select_from(Decision)) or 0


@contextmanager
def _database_out(app: Flask) -> Iterator[None]:
    """The process's database, and its decision log's, unreachable until the block ends."""
    rt = runtime(app)
    engine, log = rt.engine, rt.decision_log
    rt.engine = make_engine(UNREACHABLE)
    rt.decision_log = GroupCommitLog(make_engine(UNREACHABLE), owns_engine=True)
    try:
        yield
    finally:
        rt.decision_log.stop(timeout=30)
        rt.engine.dispose()
        rt.engine, rt.decision_log = engine, log


def _metric(client: FlaskClient, name: str) -> float:
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_an_outage_is_answered_with_the_editor_default_and_nothing_is_logged(
    app: Flask, client: FlaskClient, editor_headers: dict[str, str], session: Session
) -> None:
    ids = _title(client, editor_headers, "f")
    ask = {"titles": ["f", "never-seen"], "context": {"segment": "a"}, "user": "viewer-1"}
    normal = client.post("/api/v1/decisions", json=ask)
    assert normal.status_code == 200 and "Keyart-Fallback" not in normal.headers
    assert normal.json["decisions"][0]["event_id"]
    assert client.get("/readyz").json["fallback"] == {"active": False}
    logged = _logged(session)
    counted = _metric(client, "keyart_fallback_answers_total")
    by_mode = _metric(client, 'keyart_decision_modes_total{mode="fallback"}')

    with _database_out(app):
        answer = client.post("/api/v1/decisions", json=ask)
        assert answer.status_code == 200
        assert answer.headers["Keyart-Fallback"] == "1"
        shown, unknown = answer.json["decisions"]
        assert shown["mode"] == "fallback"
        assert shown["artwork_id"] == ids[1]  # the editor's default
        assert shown["event_id"] is None and shown["probability"] is None
        assert shown["policy_version"] is None
        # The image and placeholder come from the process's cache, not the database.
        assert shown["image"]["url"].startswith("/media/")
        assert shown["placeholder"]["color"]
        assert unknown["error"]["code"] == "unknown_title"
        assert "snapshot" in unknown["error"]["message"]
        # The header whatever the page's first title is.
        first_unknown = client.post("/api/v1/decisions", json={"titles": ["never-seen", "f"]})
        assert first_unknown.headers["Keyart-Fallback"] == "1"
        assert first_unknown.json["decisions"][1]["mode"] == "fallback"
        one = client.get("/api/v1/titles/f/artwork?segment=a")
        assert one.status_code == 200 and one.headers["Keyart-Fallback"] == "1"
        assert one.json["artwork_id"] == ids[1] and one.json["event_id"] is None
        # A title this process has never read has nothing to fall back to.
        cold = client.post("/api/v1/decisions", json={"titles": ["never-asked"]})
        assert cold.status_code == 503
        assert cold.json["error"]["code"] == "catalog_unavailable"
        # (Its sessions still reach the database here: only decisions' paths are cut off.)
        ready = client.get("/readyz")
        assert ready.json["fallback"]["active"] is True
        assert "unavailable" in ready.json["fallback"]["reason"]

    assert _logged(session) == logged
    assert _metric(client, "keyart_fallback_answers_total") == counted + 3
    assert _metric(client, 'keyart_decision_modes_total{mode="fallback"}') == by_mode + 3
    # The database is back: decisions are logged again, without a restart.
    again = client.post("/api/v1/decisions", json=ask)
    assert again.status_code == 200 and "Keyart-Fallback" not in again.headers
    assert again.json["decisions"][0]["event_id"] and again.json["decisions"][0]["mode"] != (
        "fallback"
    )
    assert _logged(session) == logged + 1
    assert client.get("/readyz").json["fallback"] == {"active": False}


def test_a_log_that_cannot_commit_in_time_is_answered_as_fallback_and_never_logged(
    app: Flask, client: FlaskClient, editor_headers: dict[str, str], session: Session
) -> None:
    ids = _title(client, editor_headers, "slow")
    rt = runtime(app)
    assert client.post("/api/v1/decisions", json={"titles": ["slow"]}).status_code == 200
    logged = _logged(session)
    timeout = 0.3
    rt.decision_log.stop(timeout=30)
    rt.decision_log = slow_log = GroupCommitLog(
        make_engine(rt.settings.database_url),
        timeout_seconds=timeout,
        owns_engine=True,
        guard=CATALOG_VERSION,
    )
    # Another writer holds the decisions table: the log's commit waits, then gives up.
    blocker = create_engine(rt.settings.database_url)
    connection = blocker.connect()
    if blocker.dialect.name == "postgresql":
        connection.execute(text("LOCK TABLE decisions IN EXCLUSIVE MODE"))
    else:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        answer = client.post("/api/v1/decisions", json={"titles": ["slow"]})
        waited = time.monotonic() - started
    finally:
        connection.rollback()
        connection.close()
        blocker.dispose()
    assert answer.status_code == 200, answer.json
    assert answer.headers["Keyart-Fallback"] == "1"
    assert answer.json["decisions"][0]["artwork_id"] == ids[1]
    # Bounded by the timeout (the write's own wait, or the commit's), not by the blocker.
    assert waited < 10 * timeout + 2
    slow_log.stop(timeout=30)
    # Withdrawn or rolled back: the fallback answer's decision never reaches the log.
    assert _logged(session) == logged


def test_a_pause_made_before_an_outage_is_honoured_during_it(
    app: Flask, client: FlaskClient, editor_headers: dict[str, str], session: Session
) -> None:
    ids = _title(client, editor_headers, "p")
    _title(client, editor_headers, "q")
    assert client.post("/api/v1/decisions", json={"titles": ["p", "q"]}).status_code == 200
    rt = runtime(app)
    assert {t: s.fallback_id for t, s in rt.catalog.last_known(["p", "q"]).items()} == {
        "p": ids[1],
        "q": rt.catalog.last_known(["q"])["q"].default_id,
    }
    # The editor pauses p's default; no decision about p is asked for before the outage, so
    # only the background refresh (on the policy poller's thread) can notice.
    paused = client.patch(
        f"/api/v1/artworks/{ids[1]}", json={"status": "paused"}, headers=editor_headers
    )
    assert paused.status_code == 200
    assert rt.catalog.last_known(["p"])["p"].fallback_id == ids[1]  # not refreshed yet
    assert rt.catalog.refresh(rt.engine) == 2  # both remembered titles are behind
    assert rt.catalog.refresh(rt.engine) == 0  # and now none is

    with _database_out(app):
        answer = client.post("/api/v1/decisions", json={"titles": ["p"]})
    assert answer.headers["Keyart-Fallback"] == "1"
    # The default is paused: the first active variant is shown instead.
    assert answer.json["decisions"][0]["artwork_id"] == ids[0]


def test_concurrent_requests_during_an_outage_all_fall_back(
    app: Flask, client: FlaskClient, editor_headers: dict[str, str]
) -> None:
    _title(client, editor_headers, "c")
    assert client.post("/api/v1/decisions", json={"titles": ["c"]}).status_code == 200
    answers: list[tuple[int, str | None]] = []

    def ask() -> None:
        with app.test_client() as own:
            for _ in range(10):
                answer = own.post("/api/v1/decisions", json={"titles": ["c"]})
                answers.append((answer.status_code, answer.headers.get("Keyart-Fallback")))

    with _database_out(app):
        threads = [threading.Thread(target=ask) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert answers == [(200, "1")] * 40


def test_a_refresh_during_an_outage_keeps_the_snapshot(
    app: Flask, client: FlaskClient, editor_headers: dict[str, str], tmp_path: Path
) -> None:
    ids = _title(client, editor_headers, "k")
    assert client.post("/api/v1/decisions", json={"titles": ["k"]}).status_code == 200
    rt = runtime(app)
    broken: Engine = make_engine(UNREACHABLE)
    try:
        with pytest.raises(ReadUnavailable):  # the poller logs it and tries again next poll
            rt.catalog.refresh(broken)
    finally:
        broken.dispose()
    assert rt.catalog.last_known(["k"])["k"].fallback_id == ids[1]
