"""The serving path's catalog: cached with the catalog version, which database triggers
bump and the decision log checks at every commit, so a paused variant is never served once
the pause has committed; renditions re-read after their cache time."""

from __future__ import annotations

from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text, update
from sqlalchemy.orm import Session

from artwork.models import CatalogVersion, Rendition
from bandit.decision_log import GroupCommitLog
from bandit.models import Decision
from tests.helpers import poster_bytes, runtime, upload
from web.db import make_engine
from web.serving_catalog import ServingCatalog


def _version(session: Session) -> int:
    session.expire_all()
    return session.scalars(select(CatalogVersion.version)).one()


def _title(client: FlaskClient, headers: dict[str, str], title: str) -> list[str]:
    client.post("/api/v1/titles", json={"id": title, "name": title}, headers=headers)
    return [
        upload(client, headers, title, poster_bytes(title, palette=p)).json["id"]
        for p in ("dark", "bright")
    ]


def test_every_change_to_titles_or_artworks_bumps_the_catalog_version(
    client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    start = _version(session)
    ids = _title(client, editor_headers, "v")
    after_uploads = _version(session)
    assert after_uploads > start
    # Any writer at all, not only keyart's own code paths: the triggers are in the database.
    session.execute(text("UPDATE artworks SET status = 'paused' WHERE id = :id"), {"id": ids[0]})
    session.commit()
    assert _version(session) == after_uploads + 1
    session.execute(text("UPDATE titles SET name = 'renamed' WHERE id = 'v'"))
    session.commit()
    assert _version(session) == after_uploads + 2
    # Renditions and the decision log are not the catalog.
    session.execute(update(Rendition).values(width=Rendition.width))
    session.commit()
    assert _version(session) == after_uploads + 2
    # Emptying the table counts too (TRUNCATE on PostgreSQL, which fires no DELETE trigger).
    session.execute(text("DELETE FROM renditions"))
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("TRUNCATE artworks CASCADE"))
    else:
        session.execute(text("DELETE FROM artworks"))
    session.commit()
    assert _version(session) > after_uploads + 2


def test_titles_are_cached_until_asked_fresh_and_renditions_refresh_after_their_ttl(
    client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    ids = _title(client, editor_headers, "s")
    engine = session.get_bind()
    cached, fresh = ServingCatalog(rendition_ttl_seconds=3600), ServingCatalog(0)
    found, version = cached.titles(engine, ["s", "nope"])
    assert [c.id for c in found["s"].candidates] == ids
    assert "nope" not in found and version == _version(session)
    before = cached.image(engine, [ids[0]], "boxart-342", "webp")[ids[0]]
    fresh.image(engine, [ids[0]], "boxart-342", "webp")

    client.patch(f"/api/v1/artworks/{ids[0]}", json={"status": "paused"}, headers=editor_headers)
    session.execute(
        update(Rendition)
        .where(Rendition.artwork_id == ids[0], Rendition.format == "webp")
        .values(key="re-rendered.webp")
    )
    session.commit()
    # The cache answers with what it read, and says at which version...
    found, stale = cached.titles(engine, ["s"])
    assert [c.id for c in found["s"].candidates] == ids and stale == version
    # ...which the decision log would refuse; a fresh read has the pause.
    found, current = cached.titles(engine, ["s"], fresh=True)
    assert [c.id for c in found["s"].candidates] == [ids[1]]
    assert current == _version(session) > version
    assert cached.image(engine, [ids[0]], "boxart-342", "webp")[ids[0]] == before
    assert fresh.image(engine, [ids[0]], "boxart-342", "webp")[ids[0]]["url"] == (
        "/media/re-rendered.webp"
    )


def test_a_paused_variant_is_never_served_once_the_pause_has_committed(
    app: Flask, client: FlaskClient, editor_headers: dict[str, str]
) -> None:
    ids = _title(client, editor_headers, "p")
    log = runtime(app).decision_log
    assert log is not None
    ask = {"titles": ["p"], "context": {"segment": "a"}}
    served = {client.post("/api/v1/decisions", json=ask).json["decisions"][0]["artwork_id"]}
    for _ in range(30):  # warm the cache; both variants are active
        served.add(client.post("/api/v1/decisions", json=ask).json["decisions"][0]["artwork_id"])
    assert served <= set(ids)
    refused = log.refused

    client.patch(f"/api/v1/artworks/{ids[0]}", json={"status": "paused"}, headers=editor_headers)
    answers = [client.post("/api/v1/decisions", json=ask).json["decisions"][0] for _ in range(50)]
    assert {a["artwork_id"] for a in answers} == {ids[1]}
    assert {a["mode"] for a in answers} == {"single"}
    # The first was decided from the cached catalog and refused by the log, then made again.
    assert log.refused == refused + 1


def test_a_catalog_that_never_holds_still_or_cannot_be_read_answers_503(
    app: Flask, client: FlaskClient, editor_headers: dict[str, str], tmp_path: Path
) -> None:
    _title(client, editor_headers, "c")
    rt = runtime(app)
    ask = {"titles": ["c"]}
    # A guard whose value is new at every commit: every attempt's decisions are refused.
    restless = GroupCommitLog(
        make_engine(rt.settings.database_url), guard="SELECT random()", owns_engine=True
    )
    rt.decision_log, steady = restless, rt.decision_log
    answer = client.post("/api/v1/decisions", json=ask)
    assert answer.status_code == 503
    assert answer.json["error"]["code"] == "catalog_changing"
    assert restless.refused == 3 and restless.commits == 0
    restless.stop(timeout=30)
    assert not restless.running

    rt.decision_log = steady
    broken = make_engine(f"sqlite:///{tmp_path / 'no-catalog.db'}")  # no tables at all
    rt.engine, working = broken, rt.engine
    answer = client.post("/api/v1/decisions", json={"titles": ["not-cached"]})
    assert answer.status_code == 503
    assert answer.json["error"]["code"] == "catalog_unavailable"
    # A server that cannot even be connected to (nothing listens on port 1).
    rt.engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    answer = client.post("/api/v1/decisions", json={"titles": ["not-cached-either"]})
    assert answer.status_code == 503
    assert answer.json["error"]["code"] == "catalog_unavailable"
    rt.engine.dispose()
    rt.engine = working
    broken.dispose()


def test_a_decision_is_answered_if_and_only_if_it_was_logged(
    app: Flask, client: FlaskClient, editor_headers: dict[str, str], session: Session
) -> None:
    # Renditions are cached for a while; when that runs out on a request whose database
    # then fails, the decision must not have been logged (it was, and then answered 503: the
    # learner counted a variant nobody saw as unclicked, and the retry logged another).
    _title(client, editor_headers, "d")
    rt = runtime(app)
    rt.catalog = ServingCatalog(rendition_ttl_seconds=0)  # renditions read on every request
    ask = {"titles": ["d"]}
    assert client.post("/api/v1/decisions", json=ask).status_code == 200
    logged = session.scalar(select(func.count()).select_from(Decision))
    rt.engine, working = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none"), rt.engine
    try:
        answer = client.post("/api/v1/decisions", json=ask)
    finally:
        rt.engine.dispose()
        rt.engine = working
    # Answered from the process's catalog snapshot instead (tests/web/test_fallback.py).
    assert answer.status_code == 200 and answer.headers["Keyart-Fallback"] == "1"
    assert answer.json["decisions"][0]["event_id"] is None
    session.expire_all()
    assert session.scalar(select(func.count()).select_from(Decision)) == logged


def test_a_title_asked_for_before_it_existed_is_served_once_it_has_a_variant(
    client: FlaskClient, editor_headers: dict[str, str]
) -> None:
    # A page of titles nobody had made yet was cached as unknown, and with nothing to log
    # no write ever found the cache stale: the title stayed unknown to this process (and to
    # every other host a UI had asked early) after the editor had made it.
    ask = {"titles": ["late"]}
    early = client.post("/api/v1/decisions", json=ask).json["decisions"][0]
    assert early["error"]["code"] == "unknown_title"
    client.post("/api/v1/titles", json={"id": "late", "name": "Late"}, headers=editor_headers)
    empty = client.post("/api/v1/decisions", json=ask).json["decisions"][0]
    assert empty["error"]["code"] != "unknown_title"
    uploaded = upload(client, editor_headers, "late", poster_bytes("Late"))
    assert uploaded.status_code == 201
    served = client.post("/api/v1/decisions", json=ask).json["decisions"][0]
    assert served["artwork_id"] == uploaded.json["id"] and served["event_id"]
    single = client.get("/api/v1/titles/late/artwork").json
    assert single["artwork_id"] == uploaded.json["id"]
