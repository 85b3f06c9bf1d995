"""The editor API: titles, uploads, statuses and defaults, and the errors clients get."""

from __future__ import annotations

import io
import zipfile

import pytest
from flask.testing import FlaskClient

from tests.helpers import poster_bytes, upload
from web import create_app
from web.config import Settings


def _title(client: FlaskClient, headers: dict[str, str], title_id: str = "show") -> None:
    response = client.post(
        "/api/v1/titles",
        json={"id": title_id, "name": "A Show", "genres": ["drama"]},
        headers=headers,
    )
    assert response.status_code == 201, response.json


def _two_variants(client: FlaskClient, headers: dict[str, str]) -> tuple[str, str]:
    """Title `show` with two different posters; their artwork ids, in upload order."""
    _title(client, headers)
    first = upload(client, headers, "show", poster_bytes("A Show")).json["id"]
    second = upload(client, headers, "show", poster_bytes("A Show", "landscape", "bright"))
    return first, second.json["id"]


def test_editor_endpoints_need_a_valid_token(client: FlaskClient) -> None:
    for response in (
        client.get("/api/v1/titles"),
        client.post("/api/v1/titles", json={"id": "x", "name": "X"}),
        client.get("/api/v1/titles", headers={"Authorization": "Bearer ka_not-a-token"}),
    ):
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthorized"


def test_create_list_and_get_titles(client: FlaskClient, editor_headers: dict[str, str]) -> None:
    _title(client, editor_headers, "b-show")
    _title(client, editor_headers, "a-show")
    listed = client.get("/api/v1/titles", headers=editor_headers).json["titles"]
    assert [t["id"] for t in listed] == ["a-show", "b-show"]
    one = client.get("/api/v1/titles/a-show", headers=editor_headers).json
    assert one["name"] == "A Show" and one["genres"] == ["drama"] and one["artworks"] == []
    assert client.get("/api/v1/titles/nope", headers=editor_headers).status_code == 404


def test_title_validation_names_the_field(
    client: FlaskClient, editor_headers: dict[str, str]
) -> None:
    cases = [
        ({"name": "No id"}, "id"),
        ({"id": "has space", "name": "x"}, "id"),
        ({"id": "ok", "name": ""}, "name"),
        ({"id": "ok", "name": "x", "genres": "drama"}, "genres"),
        ({"id": "ok", "name": "x", "colour": "red"}, "colour"),
        ({"id": "o\x00k", "name": "x"}, "id"),
        ({"id": "..", "name": "x"}, "id"),
        ({"id": "ok", "name": "x\x00"}, "name"),
        ({"id": "ok", "name": "x", "genres": ["dra\x00ma"]}, "genres"),
    ]
    for body, field in cases:
        response = client.post("/api/v1/titles", json=body, headers=editor_headers)
        assert response.status_code == 422, body
        assert response.json["error"]["message"].startswith(field), response.json
    response = client.post(
        "/api/v1/titles",
        data="{not json",
        headers={**editor_headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    _title(client, editor_headers, "dup")
    response = client.post(
        "/api/v1/titles", json={"id": "dup", "name": "x"}, headers=editor_headers
    )
    assert response.status_code == 409 and response.json["error"]["code"] == "title_exists"


def test_upload_writes_renditions_and_features(
    client: FlaskClient, editor_headers: dict[str, str]
) -> None:
    _title(client, editor_headers)
    response = upload(
        client, editor_headers, "show", poster_bytes("A Show"), label="close-up", tags="face, dark"
    )
    assert response.status_code == 201, response.json
    artwork = response.json
    assert artwork["label"] == "close-up" and artwork["tags"] == ["face", "dark"]
    assert artwork["status"] == "active"
    assert set(artwork["features"]) >= {"brightness", "contrast", "saturation", "colourfulness"}
    shapes = {(r["preset"], r["format"]): (r["width"], r["height"]) for r in artwork["renditions"]}
    assert shapes[("boxart-342", "webp")] == (342, 513)
    assert shapes[("billboard-640", "jpg")] == (640, 360)
    for rendition in artwork["renditions"]:
        with client.get(rendition["url"]) as media:
            assert media.status_code == 200 and len(media.data) == rendition["bytes"]
    # The first variant becomes the title's fallback.
    title = client.get("/api/v1/titles/show", headers=editor_headers).json
    assert title["default_artwork_id"] == artwork["id"]


def test_upload_refusals(client: FlaskClient, editor_headers: dict[str, str]) -> None:
    _title(client, editor_headers)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", "hello")
    jpeg = poster_bytes("A Show")
    cases = [
        (b"", 415, "unsupported_image"),
        (b"hello, I am text", 415, "unsupported_image"),
        (archive.getvalue(), 415, "unsupported_image"),
        (jpeg[: len(jpeg) // 2], 422, "undecodable_image"),
    ]
    for data, status, code in cases:
        response = upload(client, editor_headers, "show", data)
        assert response.status_code == status, (code, response.json)
        assert response.json["error"]["code"] == code
    response = client.post(
        "/api/v1/titles/show/artworks",
        data={"label": "no file"},
        headers=editor_headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 422 and "file" in response.json["error"]["message"]
    assert upload(client, editor_headers, "nope", jpeg).status_code == 404
    assert upload(client, editor_headers, "show", jpeg).status_code == 201
    # The same picture again, even re-encoded, names the variant it duplicates.
    again = upload(client, editor_headers, "show", poster_bytes("A Show", fmt="PNG"))
    assert again.status_code == 409 and again.json["error"]["code"] == "duplicate_artwork"
    assert client.get("/api/v1/titles/show", headers=editor_headers).json["artworks_active"] == 1


def test_upload_over_the_size_limit_is_413(
    settings: Settings, editor_headers: dict[str, str]
) -> None:
    app = create_app(settings.with_overrides({"max_upload_bytes": 300_000}))
    client = app.test_client()
    try:
        _title(client, editor_headers)
        jpeg = poster_bytes("A Show")
        # Just over the limit: read, measured and refused by keyart.
        response = upload(client, editor_headers, "show", jpeg + b"\0" * (300_001 - len(jpeg)))
        assert response.status_code == 413
        assert response.json["error"]["code"] == "file_too_large"
        # Far over: refused from Content-Length before the body is read.
        response = client.post(
            "/api/v1/titles/show/artworks",
            data=b"-" * 2_000_000,
            headers=editor_headers,
            content_type="multipart/form-data; boundary=x",
        )
        assert response.status_code == 413
        assert response.json["error"]["code"] == "file_too_large"
    finally:
        app.extensions["keyart"].engine.dispose()


def test_patch_status_and_default_artwork(
    client: FlaskClient, editor_headers: dict[str, str]
) -> None:
    first, second = _two_variants(client, editor_headers)
    response = client.patch(
        f"/api/v1/artworks/{second}",
        json={"status": "paused", "tags": ["sky"]},
        headers=editor_headers,
    )
    assert response.status_code == 200
    assert response.json["status"] == "paused" and response.json["tags"] == ["sky"]
    bad = client.patch(
        f"/api/v1/artworks/{second}", json={"status": "gone"}, headers=editor_headers
    )
    assert bad.status_code == 422 and bad.json["error"]["message"].startswith("status")
    assert client.patch("/api/v1/artworks/nope", json={}, headers=editor_headers).status_code == 404

    response = client.put(
        "/api/v1/titles/show/default-artwork", json={"artwork_id": second}, headers=editor_headers
    )
    assert response.status_code == 200 and response.json["default_artwork_id"] == second
    _title(client, editor_headers, "other")
    response = client.put(
        "/api/v1/titles/other/default-artwork", json={"artwork_id": first}, headers=editor_headers
    )
    assert response.status_code == 409
    client.patch(f"/api/v1/artworks/{first}", json={"status": "archived"}, headers=editor_headers)
    response = client.put(
        "/api/v1/titles/show/default-artwork", json={"artwork_id": first}, headers=editor_headers
    )
    assert response.status_code == 409 and response.json["error"]["code"] == "artwork_archived"


def test_policy_endpoint(client: FlaskClient, editor_headers: dict[str, str]) -> None:
    policy = client.get("/api/v1/policy", headers=editor_headers).json
    assert policy["version"] == 0 and policy["examples_learned"] == 0
    assert "--cb_explore_adf" in policy["vw_args"]


def test_report_counts_shows_clicks_and_plays_per_segment(
    client: FlaskClient, editor_headers: dict[str, str]
) -> None:
    first, second = _two_variants(client, editor_headers)
    shown: dict[tuple[str, str], list[str]] = {}
    for segment in ("kids", "kids", "kids", "adults", "adults"):
        for _ in range(4):
            body = {"context": {"segment": segment}, "titles": ["show"]}
            decision = client.post("/api/v1/decisions", json=body).json["decisions"][0]
            shown.setdefault((decision["artwork_id"], segment), []).append(decision["event_id"])
    clicked = {key: ids[:1] for key, ids in shown.items()}
    events = [{"event_id": i, "type": "click"} for ids in clicked.values() for i in ids]
    events.append({"event_id": events[0]["event_id"], "type": "play"})
    client.post("/api/v1/events", json={"events": events})

    report = client.get("/api/v1/titles/show/report", headers=editor_headers).json
    rows = {(r["artwork_id"], r["segment"]): r for r in report["rows"]}
    assert set(rows) == {(a, s) for a in (first, second) for s in ("kids", "adults")}
    for (artwork_id, segment), ids in shown.items():
        row = rows[(artwork_id, segment)]
        assert row["impressions"] == len(ids)
        assert row["clicks"]["count"] == 1
        assert row["clicks"]["rate"] == 1 / len(ids)
        low, high = row["clicks"]["ci95"]
        assert 0 <= low <= row["clicks"]["rate"] <= high <= 1 and low < high
    assert sum(r["plays"]["count"] for r in report["rows"]) == 1
    for segment in ("kids", "adults"):
        shares = [rows[(a, segment)]["policy_share"] for a in (first, second)]
        assert sum(shares) == pytest.approx(1.0)
    assert client.get("/api/v1/titles/nope/report", headers=editor_headers).status_code == 404
