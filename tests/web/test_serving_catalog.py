"""The serving path's catalog read: fresh statuses every request, renditions re-read after
their cache time."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy import update
from sqlalchemy.orm import Session

from artwork.models import Rendition
from tests.helpers import poster_bytes, upload
from web.serving_catalog import ServingCatalog


def test_statuses_are_fresh_and_renditions_refresh_after_their_ttl(
    client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    client.post("/api/v1/titles", json={"id": "s", "name": "S"}, headers=editor_headers)
    ids = [
        upload(client, editor_headers, "s", poster_bytes("S", palette=p)).json["id"]
        for p in ("dark", "bright")
    ]
    engine = session.get_bind()
    cached, fresh = ServingCatalog(rendition_ttl_seconds=3600), ServingCatalog(0)
    assert [c.id for c in cached.titles(engine, ["s", "nope"])["s"].variants] == ids
    before = cached.image(engine, [ids[0]], "boxart-342", "webp")[ids[0]]
    fresh.image(engine, [ids[0]], "boxart-342", "webp")

    client.patch(f"/api/v1/artworks/{ids[0]}", json={"status": "paused"}, headers=editor_headers)
    session.execute(
        update(Rendition)
        .where(Rendition.artwork_id == ids[0], Rendition.format == "webp")
        .values(key="re-rendered.webp")
    )
    session.commit()
    assert [c.id for c in cached.titles(engine, ["s"])["s"].variants] == [ids[1]]
    assert cached.image(engine, [ids[0]], "boxart-342", "webp")[ids[0]] == before
    assert fresh.image(engine, [ids[0]], "boxart-342", "webp")[ids[0]]["url"] == (
        "/media/re-rendered.webp"
    )
