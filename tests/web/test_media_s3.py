"""Media on S3-compatible storage, through the HTTP API and the CLI, against a real
S3-compatible server (moto's standalone server, over HTTP) on both databases."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select

from artwork.models import Artwork
from artwork.store import S3Location
from tests.helpers import poster_bytes, runtime, upload
from web import create_app
from web.auth import create_editor
from web.cli import main
from web.config import Settings


def _objects(url: str) -> set[str]:
    location = S3Location.parse(url)
    keys: set[str] = set()
    pages = boto3.client("s3").get_paginator("list_objects_v2").paginate(Bucket=location.bucket)
    for page in pages:
        keys.update(item["Key"] for item in page.get("Contents", ()))
    return keys


@contextmanager
def _app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings, {"TESTING": True})
    runtime(app).rng = random.Random(7)
    try:
        yield app
    finally:
        runtime(app).policy.stop()
        if runtime(app).decision_log is not None:
            runtime(app).decision_log.stop(timeout=30)
        runtime(app).engine.dispose()


def _editor(app: Flask) -> dict[str, str]:
    with runtime(app).sessions() as session:
        _, token = create_editor(session, "s3@example.com")
        session.commit()
    return {"Authorization": f"Bearer {token}"}


def _env(settings: Settings, s3_env: dict[str, str], **more: str) -> dict[str, str]:
    return {
        **s3_env,
        "KEYART_DATABASE_URL": settings.database_url,
        "KEYART_VAR_DIR": str(settings.var_dir),
        "KEYART_MEDIA_DIR": str(settings.media_dir),
        "KEYART_SECRET_KEY": settings.secret_key,
        **more,
    }


def test_uploads_go_to_the_bucket_and_are_served_from_it(
    settings: Settings, s3_media_url: str
) -> None:
    s3 = dataclasses.replace(settings, media_url=s3_media_url)
    with _app(s3) as app:
        client, headers = app.test_client(), _editor(app)
        client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=headers)
        created = upload(client, headers, "show", poster_bytes("S3"))
        assert created.status_code == 201, created.json
        # Nothing of media stays on this host's disk.
        assert not Path(settings.media_dir).exists() or not any(settings.media_dir.rglob("*.*"))
        objects = _objects(s3_media_url)
        renditions = {r["url"].removeprefix("/media/") for r in created.json["renditions"]}
        assert {f"media-test/media/{key}" for key in renditions} <= objects
        assert sum(name.startswith("media-test/originals/") for name in objects) == 1

        key = sorted(renditions)[0]
        served = client.get(f"/media/{key}")
        assert served.status_code == 200
        stored = boto3.client("s3").get_object(
            Bucket=S3Location.parse(s3_media_url).bucket, Key=f"media-test/media/{key}"
        )
        assert served.data == stored["Body"].read()
        assert served.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert served.headers["X-Content-Type-Options"] == "nosniff"
        assert (
            served.headers["Content-Type"]
            == f"image/{'jpeg' if key.endswith('jpg') else key.rsplit('.', 1)[1]}"
        )
        etag = served.headers["ETag"]
        again = client.get(f"/media/{key}", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.data == b""
        assert client.get(f"/media/{'0' * 64}.webp").status_code == 404
        assert (
            client.get(
                f"/media/{'0' * 64}.webp", headers={"If-None-Match": f'"{"0" * 64}"'}
            ).status_code
            == 404
        )

        # The duplicate checks hold on this backend too.
        duplicate = upload(client, headers, "show", poster_bytes("S3"))
        assert duplicate.status_code == 409
        assert duplicate.json["error"]["code"] == "duplicate_artwork"

        decided = client.post(
            "/api/v1/decisions", json={"titles": ["show"], "rendition": "boxart-342"}
        ).json["decisions"][0]
        assert client.get(decided["image"]["url"]).status_code == 200


def test_a_public_url_puts_absolute_urls_in_answers_and_redirects_media(
    settings: Settings, s3_media_url: str
) -> None:
    cdn = "https://cdn.example.com/keyart/"
    s3 = dataclasses.replace(settings, media_url=s3_media_url, media_public_url=cdn)
    with _app(s3) as app:
        client, headers = app.test_client(), _editor(app)
        client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=headers)
        created = upload(client, headers, "show", poster_bytes("CDN"))
        assert all(
            r["url"].startswith("https://cdn.example.com/keyart/")
            for r in created.json["renditions"]
        )
        decided = client.post("/api/v1/decisions", json={"titles": ["show"]}).json["decisions"][0]
        url = decided["image"]["url"]
        key = url.removeprefix("https://cdn.example.com/keyart/")
        assert url == f"https://cdn.example.com/keyart/{key}" and "/" not in key
        # The URL names the object the bucket keeps under <prefix>/media/<key>.
        assert f"media-test/media/{key}" in _objects(s3_media_url)
        moved = client.get(f"/media/{key}")
        assert moved.status_code == 302 and moved.headers["Location"] == url
        assert client.get("/media/not-a-key.webp").status_code == 404


def test_reprocess_on_the_bucket(
    settings: Settings, s3_media_url: str, s3_env: dict[str, str]
) -> None:
    s3 = dataclasses.replace(settings, media_url=s3_media_url)
    with _app(s3) as app:
        client, headers = app.test_client(), _editor(app)
        client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=headers)
        for composition in ("portrait", "landscape"):
            assert (
                upload(client, headers, "show", poster_bytes("R", composition)).status_code == 201
            )
    result = CliRunner().invoke(
        main,
        ["artwork", "reprocess"],
        env=_env(settings, s3_env, KEYART_MEDIA_URL=s3_media_url, KEYART_PRESETS="square=1:1@120"),
    )
    assert result.exit_code == 0, result.output
    assert "reprocessed 2 variants, 0 failed" in result.output
    with _app(s3) as app, runtime(app).sessions() as session:
        artworks = list(session.scalars(select(Artwork)))
        keys = {r.key for a in artworks for r in a.renditions}
        assert {r.preset for a in artworks for r in a.renditions} == {"square-120"}
        assert {f"media-test/media/{key}" for key in keys} <= _objects(s3_media_url)
        client = app.test_client()
        for key in keys:
            assert client.get(f"/media/{key}").status_code == 200


def test_migrate_copies_a_local_store_resumably(
    settings: Settings, s3_media_url: str, s3_env: dict[str, str]
) -> None:
    with _app(settings) as app:  # local media first
        client, headers = app.test_client(), _editor(app)
        client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=headers)
        created = upload(client, headers, "show", poster_bytes("M"))
        assert created.status_code == 201
    local = {p.name for p in settings.media_dir.rglob("*") if p.is_file()}
    env = _env(settings, s3_env)
    runner = CliRunner()
    first = runner.invoke(main, ["media", "migrate", "--to", s3_media_url], env=env)
    assert first.exit_code == 0, first.output
    assert f"copied {len(local)} blobs" in first.output
    copied = _objects(s3_media_url)
    assert {name.rsplit("/", 1)[1] for name in copied} == local
    assert sum(name.startswith("media-test/originals/") for name in copied) == 1

    # Interrupted: some objects never arrived. A second run copies only those.
    bucket = S3Location.parse(s3_media_url).bucket
    lost = sorted(copied)[:3]
    for name in lost:
        boto3.client("s3").delete_object(Bucket=bucket, Key=name)
    second = runner.invoke(main, ["media", "migrate", "--to", s3_media_url], env=env)
    assert second.exit_code == 0, second.output
    assert (
        f"copied 3 blobs to {s3_media_url} ({len(local) - 3} were already there)" in second.output
    )
    assert _objects(s3_media_url) == copied
    done = runner.invoke(main, ["media", "migrate", "--to", s3_media_url], env=env)
    assert "already holds all" in done.output

    # Served from the bucket now, local directory gone.
    for path in sorted(settings.media_dir.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    with _app(dataclasses.replace(settings, media_url=s3_media_url)) as app:
        url = created.json["renditions"][0]["url"]
        assert app.test_client().get(url).status_code == 200

    bad = runner.invoke(main, ["media", "migrate", "--to", "s3://Bad_Bucket"], env=env)
    assert bad.exit_code != 0 and "--to" in bad.output
    missing = runner.invoke(main, ["media", "migrate", "--to", "s3://no-such-bucket-x"], env=env)
    assert missing.exit_code == 1 and "media store error" in missing.output


def test_an_unreachable_store_answers_503(
    settings: Settings, s3_media_url: str, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with _app(dataclasses.replace(settings, media_url=s3_media_url)) as app:
        answer = app.test_client().get(f"/media/{'0' * 64}.webp")
        assert answer.status_code == 503
        assert answer.json["error"]["code"] == "media_unavailable"
        assert answer.headers["Retry-After"] == "1"
