"""`keyart artwork reprocess`: new presets reach every variant, batch by batch, and an
interrupted or failed run resumes where it stopped."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from artwork.models import Artwork
from artwork.renditions import parse_presets
from tests.helpers import poster_bytes, runtime, upload
from web import create_app
from web.cli import main
from web.config import Settings

NEW_PRESETS = "boxart=2:3@200;square=1:1@120"


def _env(settings: Settings, presets: str) -> dict[str, str]:
    return {
        "KEYART_DATABASE_URL": settings.database_url,
        "KEYART_VAR_DIR": str(settings.var_dir),
        "KEYART_MEDIA_DIR": str(settings.media_dir),
        "KEYART_SECRET_KEY": settings.secret_key,
        "KEYART_PRESETS": presets,
    }


def _presets_of(session: Session) -> dict[str, set[str]]:
    session.expire_all()
    return {a.id: {r.preset for r in a.renditions} for a in session.scalars(select(Artwork))}


def test_reprocess_rebuilds_renditions_and_resumes(
    client: FlaskClient, editor_headers: dict[str, str], settings: Settings, session: Session
) -> None:
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    ids = []
    for composition in ("portrait", "landscape", "group"):
        response = upload(client, editor_headers, "show", poster_bytes("S", composition))
        assert response.status_code == 201
        ids.append(response.json["id"])
    runner = CliRunner()

    # One original goes missing: that variant fails, the others are done and committed.
    missing = session.get(Artwork, ids[1])
    assert missing is not None
    original = next(Path(settings.media_dir, "originals").rglob(missing.original_key))
    hidden = original.with_suffix(".hidden")
    os.replace(original, hidden)
    result = runner.invoke(
        main, ["artwork", "reprocess", "--batch-size", "1"], env=_env(settings, NEW_PRESETS)
    )
    assert result.exit_code == 1
    assert f"{ids[1]}: original" in result.output
    assert "reprocessed 2 variants, 1 failed" in result.output
    presets = _presets_of(session)
    assert presets[ids[0]] == presets[ids[2]] == {"boxart-200", "square-120"}
    assert presets[ids[1]] == {"boxart-342", "billboard-640"}

    # The next run picks up only what is left.
    os.replace(hidden, original)
    result = runner.invoke(main, ["artwork", "reprocess"], env=_env(settings, NEW_PRESETS))
    assert result.exit_code == 0, result.output
    assert "reprocessed 1 variants, 0 failed" in result.output
    assert all(p == {"boxart-200", "square-120"} for p in _presets_of(session).values())
    refreshed = session.get(Artwork, ids[1])
    assert refreshed is not None and set(refreshed.placeholder["blurhash"]) == {
        "boxart-200",
        "square-120",
    }
    assert {r.format for r in refreshed.renditions} == {"avif", "webp", "jpg"}

    result = runner.invoke(main, ["artwork", "reprocess"], env=_env(settings, NEW_PRESETS))
    assert result.exit_code == 0 and "up to date" in result.output

    # A server started with the new presets offers them.
    new = create_app(settings.with_overrides({"presets": parse_presets(NEW_PRESETS)}))
    try:
        response = new.test_client().post(
            "/api/v1/decisions", json={"titles": ["show"], "context": {}, "rendition": "square-120"}
        )
        (decision,) = response.json["decisions"]
        assert decision["image"]["width"] == decision["image"]["height"] == 120
        assert decision["placeholder"]["blurhash"]
        # Without boxart-342 among the presets, a request naming none gets the first one.
        response = new.test_client().post(
            "/api/v1/decisions", json={"titles": ["show"], "context": {}}
        )
        assert response.json["decisions"][0]["image"]["width"] == 200
    finally:
        runtime(new).policy.stop()
        runtime(new).engine.dispose()


def test_bad_presets_setting_is_named(settings: Settings) -> None:
    result = CliRunner().invoke(main, ["artwork", "reprocess"], env=_env(settings, "boxart=2:3@"))
    assert result.exit_code != 0
    assert "KEYART_PRESETS" in result.output
