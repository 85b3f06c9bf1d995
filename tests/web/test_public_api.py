"""The public API as a UI meets it: decisions, events, media, and their errors."""

from __future__ import annotations

import hmac
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bandit.models import Decision, Reward
from tests.helpers import poster_bytes, runtime, upload
from web import create_app
from web.db import make_engine, make_sessionmaker


@pytest.fixture
def catalog(client: FlaskClient, editor_headers: dict[str, str]) -> list[str]:
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    ids = []
    for composition, palette in (("portrait", "dark"), ("landscape", "bright")):
        response = upload(
            client, editor_headers, "show", poster_bytes("Show", composition, palette)
        )
        ids.append(response.json["id"])
    client.post("/api/v1/titles", json={"id": "empty", "name": "Empty"}, headers=editor_headers)
    return ids


def test_a_page_with_good_and_bad_titles(client: FlaskClient, catalog: list[str]) -> None:
    response = client.post(
        "/api/v1/decisions",
        json={
            "user": "v1",
            "context": {"segment": "kids", "hour": 20},
            "titles": ["show", "nope", "empty"],
            "format": "webp",
        },
    )
    assert response.status_code == 200
    show, nope, empty = response.json["decisions"]
    # A new title is in apprentice mode: the editor's default (the first upload) gets
    # 1 − floor, the other variant the floor.
    assert show["mode"] == "apprentice" and show["artwork_id"] in catalog
    expected = 0.99 if show["artwork_id"] == catalog[0] else 0.01
    assert show["probability"] == pytest.approx(expected)
    assert show["image"]["format"] == "webp" and show["image"]["width"] == 342
    with client.get(show["image"]["url"]) as media:
        assert media.status_code == 200 and media.mimetype == "image/webp"
    assert nope["error"]["code"] == "unknown_title"
    assert empty["error"]["code"] == "no_artwork"


def test_decisions_are_counted_by_outcome(client: FlaskClient, catalog: list[str]) -> None:
    def counted() -> dict[str, float]:
        return {
            outcome: REGISTRY.get_sample_value("keyart_decisions_total", {"outcome": outcome})
            or 0.0
            for outcome in ("ok", "unknown_title", "no_artwork")
        }

    before = counted()
    titles = ["show", "nope", "empty", "gone"]
    assert client.post("/api/v1/decisions", json={"titles": titles}).status_code == 200
    after = counted()
    assert {k: after[k] - before[k] for k in after} == {
        "ok": 1,
        "unknown_title": 2,
        "no_artwork": 1,
    }


def test_request_latency_is_observed_by_endpoint(client: FlaskClient, catalog: list[str]) -> None:
    def observed(endpoint: str) -> float:
        labels = {"endpoint": endpoint}
        return REGISTRY.get_sample_value("keyart_request_seconds_count", labels) or 0.0

    before = {e: observed(e) for e in ("api.decisions", "ops.healthz", "unmatched")}
    client.post("/api/v1/decisions", json={"titles": ["show"]})
    client.post("/api/v1/decisions", json={"titles": "not a list"})  # a 422 is timed too
    client.get("/healthz")  # probes are not
    client.get("/no/such/page")
    after = {e: observed(e) for e in before}
    assert {e: after[e] - before[e] for e in after} == {
        "api.decisions": 2,
        "ops.healthz": 0,
        "unmatched": 1,
    }
    assert b'keyart_request_seconds_bucket{endpoint="api.decisions"' in client.get("/metrics").data


def test_the_log_holds_viewer_keys_hashed_with_the_servers_secret(
    app: Flask, client: FlaskClient, catalog: list[str], session: Session
) -> None:
    answer = client.post("/api/v1/decisions", json={"titles": ["show"], "user": "viewer-4242"})
    event_id = answer.json["decisions"][0]["event_id"]
    logged = session.scalar(select(Decision).where(Decision.event_id == event_id))
    key = runtime(app).settings.exploration().viewer_key
    assert logged.user_hash == hmac.new(key, b"viewer-4242", "sha256").hexdigest()
    # The key comes from the server's secret, and is not the secret itself.
    secret = runtime(app).settings.secret_key.encode()
    assert key not in (b"", secret)
    other = replace(runtime(app).settings, secret_key="another-secret-key-0123456789")
    assert other.exploration().viewer_key != key


def test_one_title_from_query_parameters(
    client: FlaskClient, catalog: list[str], session: Session
) -> None:
    response = client.get("/api/v1/titles/show/artwork?segment=kids&hour=7&rendition=billboard-640")
    assert response.status_code == 200
    assert response.json["image"]["width"] == 640
    logged = session.scalar(select(Decision).where(Decision.event_id == response.json["event_id"]))
    assert logged.context == {"segment": "kids", "hour": 7}
    assert client.get("/api/v1/titles/nope/artwork").status_code == 404
    assert client.get("/api/v1/titles/empty/artwork").json["error"]["code"] == "no_artwork"
    bad = client.get("/api/v1/titles/show/artwork?format=gif")
    assert bad.status_code == 422 and bad.json["error"]["message"].startswith("format")
    twice = client.get("/api/v1/titles/show/artwork?segment=kids&segment=teens")
    assert twice.status_code == 422 and "'segment' is given twice" in twice.json["error"]["message"]
    vague = client.get("/api/v1/titles/show/artwork?defer_activation=maybe")
    assert vague.status_code == 422
    assert vague.json["error"]["message"].startswith("defer_activation")
    deferred = client.get("/api/v1/titles/show/artwork?defer_activation=yes").json
    logged = session.scalar(select(Decision).where(Decision.event_id == deferred["event_id"]))
    assert logged.deferred and not logged.activated


def test_format_is_negotiated_from_accept(client: FlaskClient, catalog: list[str]) -> None:
    def fmt(accept: str) -> str:
        response = client.post(
            "/api/v1/decisions", json={"titles": ["show"]}, headers={"Accept": accept}
        )
        assert "Accept" in response.headers["Vary"]
        return response.json["decisions"][0]["image"]["format"]

    assert fmt("image/avif,image/webp,*/*") == "avif"
    assert fmt("image/webp,image/jpeg") == "webp"
    assert fmt("image/webp,*/*") == "webp"
    assert fmt("*/*") == "avif"
    assert fmt("application/json") == "jpg"


def test_same_user_gets_the_same_variant(
    app: Flask, client: FlaskClient, catalog: list[str]
) -> None:
    # Past apprentice mode, so both variants have a real share.
    runtime(app).exploration = replace(runtime(app).exploration, apprentice_examples=0)

    def chosen(user: str) -> str:
        body = {"user": user, "context": {"segment": "a"}, "titles": ["show"]}
        return client.post("/api/v1/decisions", json=body).json["decisions"][0]["artwork_id"]

    for user in ("alice", "bob", "carol"):
        assert len({chosen(user) for _ in range(10)}) == 1
    # Without a user key draws are independent, so both variants appear.
    anonymous = {
        client.post("/api/v1/decisions", json={"titles": ["show"]}).json["decisions"][0][
            "artwork_id"
        ]
        for _ in range(40)
    }
    assert anonymous == set(catalog)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({}, 422, "titles"),
        ({"titles": []}, 422, "titles"),
        ({"titles": "show"}, 422, "titles"),
        ({"titles": ["show"], "context": {"hour": float("inf")}}, 422, "context"),
        ({"titles": ["show"], "context": {"x": {"nested": 1}}}, 422, "context"),
        ({"titles": ["show"], "user": ""}, 422, "user"),
        ({"titles": ["show"], "rendition": "poster-9000"}, 422, None),
        ({"titles": ["show"], "defer_activation": "maybe"}, 422, "defer_activation"),
        ({"titles": ["show"], "defer_activation": "yes"}, 422, "defer_activation"),
        ({"titles": ["show"], "defer_activation": 1}, 422, "defer_activation"),
        ({"titles": ["show"], "titels": ["x"]}, 422, "titels"),
        # PostgreSQL cannot store NUL; an unpaired surrogate is not UTF-8, and VW failed on it.
        ({"titles": ["sh\x00ow"]}, 422, "titles"),
        ({"titles": [".."]}, 422, "titles"),
        ({"titles": ["show"], "user": "v\x00"}, 422, "user"),
        ({"titles": ["show"], "context": {"seg\x00": "x"}}, 422, "context"),
        ({"titles": ["show"], "context": {"\ud800": "x"}}, 422, "context"),
        ({"titles": ["show"], "context": {"segment": "\ud800"}}, 422, "context"),
        ({"titles": ["show"], "context": {"visits": 10**400}}, 422, "context"),
    ],
)
def test_bad_decision_requests(
    client: FlaskClient,
    catalog: list[str],
    session: Session,
    body: dict,
    status: int,
    field: str | None,
) -> None:
    response = client.post("/api/v1/decisions", json=body)
    assert response.status_code == status, response.json
    if field:
        assert response.json["error"]["message"].startswith(field), response.json
    assert session.scalar(select(func.count()).select_from(Decision)) == 0


def test_urls_with_nul_characters_are_refused(
    client: FlaskClient, catalog: list[str], editor_headers: dict[str, str]
) -> None:
    for url, headers in (
        ("/api/v1/titles/sh%00ow/artwork", {}),
        ("/api/v1/titles/show/artwork?seg%00ment=kids", {}),
        ("/api/v1/titles/show/artwork?segment=ki%00ds", {}),
        ("/api/v1/titles/sh%00ow", editor_headers),
        ("/api/v1/evaluations/latest?segment=a%00b", editor_headers),
    ):
        response = client.get(url, headers=headers)
        assert response.status_code == 400, (url, response.json)
        assert "NUL" in response.json["error"]["message"]
    # Form fields likewise, before anything is written.
    media = Path(runtime(client.application).settings.media_dir)
    files = sorted(media.rglob("*"))
    poster = poster_bytes("Show", "group", "cool")
    response = upload(client, editor_headers, "show", poster, label="cover\x00")
    assert response.status_code == 400 and "form field 'label'" in response.json["error"]["message"]
    assert sorted(media.rglob("*")) == files


def test_non_json_bodies(client: FlaskClient) -> None:
    deep = "[" * 100_000 + "]" * 100_000  # past Python's recursion limit when parsed
    for data in ("not json", "[1, 2]", deep, '{"titles": ["show"], "context": ' + deep + "}"):
        response = client.post(
            "/api/v1/decisions", data=data, headers={"Content-Type": "application/json"}
        )
        assert response.status_code in (400, 422)
        assert response.json["error"]["code"] in ("invalid_json", "invalid_request")


def test_events_are_idempotent_and_checked(
    client: FlaskClient, catalog: list[str], session: Session
) -> None:
    decided = client.post("/api/v1/decisions", json={"titles": ["show"]}).json["decisions"][0]
    event_id = decided["event_id"]
    response = client.post(
        "/api/v1/events",
        json={
            "events": [
                {"event_id": event_id, "type": "click"},
                {"event_id": event_id, "type": "play", "value": 0.5},
                {"event_id": event_id, "type": "click"},
                {"event_id": "never-issued", "type": "click"},
                {"event_id": event_id, "type": "purchase"},
                {"event_id": event_id},
                {"event_id": "never\x00issued", "type": "click"},
                {"event_id": event_id, "type": "play", "value": "1.5"},
                {"event_id": event_id, "type": "play", "value": True},
                {"event_id": event_id, "type": "play", "value": -1},
            ]
        },
    )
    assert response.status_code == 202
    statuses = [e["status"] for e in response.json["events"]]
    assert statuses == [
        "accepted",
        "accepted",
        "duplicate",
        "unknown_event",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
        "invalid",
    ]
    again = client.post(
        "/api/v1/events", json={"events": [{"event_id": event_id, "type": "click"}]}
    )
    assert again.json["events"][0]["status"] == "duplicate"
    stored = session.scalars(select(Reward).where(Reward.event_id == event_id)).all()
    assert sorted((r.type, r.value) for r in stored) == [("click", 1.0), ("play", 0.5)]
    assert session.scalar(select(Reward).where(Reward.event_id == "never-issued")) is None

    # An event after the reward window is kept apart, not learned.
    decision = session.scalar(select(Decision).where(Decision.event_id == event_id))
    decision.created_at -= timedelta(hours=1)
    session.commit()
    late = client.post(
        "/api/v1/events", json={"events": [{"event_id": event_id, "type": "impression"}]}
    )
    assert late.json["events"][0]["status"] == "too_late"

    for body in ({}, {"events": []}, {"events": "x"}):
        assert client.post("/api/v1/events", json=body).status_code == 422


def test_media_is_immutable_and_conditional(client: FlaskClient, catalog: list[str]) -> None:
    url = client.post("/api/v1/decisions", json={"titles": ["show"]}).json["decisions"][0]["image"][
        "url"
    ]
    with client.get(url) as first:
        assert first.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert first.headers["X-Content-Type-Options"] == "nosniff"
        etag = first.headers["ETag"]
    assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/media/" + "0" * 64 + ".jpg").status_code == 404
    assert client.get("/media/../../etc/passwd").status_code == 404


def test_operations_endpoints(client: FlaskClient) -> None:
    assert client.get("/healthz").json == {"status": "ok"}
    assert client.get("/readyz").json["status"] == "ready"
    assert b"keyart_decisions_total" in client.get("/metrics").data
    document = client.get("/api/v1/openapi.json").json
    assert document["openapi"].startswith("3.")
    assert "DecisionsRequest" in document["components"]["schemas"]
    assert client.get("/no/such/page").json["error"]["code"] == "not_found"
    assert client.delete("/api/v1/decisions").status_code == 405


def test_relative_media_dir_serves_files(
    settings, editor_headers: dict[str, str], tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """`make run` configures ./var/media, relative to where keyart starts."""
    monkeypatch.chdir(tmp_path)
    app = create_app(settings.with_overrides({"media_dir": Path("relative-media")}))
    client = app.test_client()
    try:
        client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
        upload(client, editor_headers, "show", poster_bytes("Show"))
        decision = client.post("/api/v1/decisions", json={"titles": ["show"]}).json["decisions"][0]
        with client.get(decision["image"]["url"]) as media:
            assert media.status_code == 200
        assert (tmp_path / "relative-media").is_dir()
    finally:
        app.extensions["keyart"].engine.dispose()


def test_a_database_that_cannot_be_reached_is_a_503_to_retry(
    app: Flask, client: FlaskClient, catalog: list[str], editor_headers: dict[str, str]
) -> None:
    rt = runtime(app)
    decided = client.post("/api/v1/decisions", json={"titles": ["show"]}).json["decisions"][0]
    unreachable = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    rt.sessions, working = make_sessionmaker(unreachable), rt.sessions
    try:
        for method, url, body in (
            (
                "post",
                "/api/v1/events",
                {"events": [{"event_id": decided["event_id"], "type": "click"}]},
            ),
            ("get", "/api/v1/titles", None),
        ):
            answer = getattr(client, method)(url, json=body, headers=editor_headers)
            assert answer.status_code == 503, (url, answer.json)
            assert answer.json["error"]["code"] == "database_unavailable"
            assert answer.headers["Retry-After"] == "1"
    finally:
        rt.sessions = working
        unreachable.dispose()
    # And once it is back, the same event is taken: nothing of the failed attempt remains.
    again = client.post(
        "/api/v1/events", json={"events": [{"event_id": decided["event_id"], "type": "click"}]}
    )
    assert again.json["events"][0]["status"] == "accepted"
