"""Small helpers the tests share."""

from __future__ import annotations

import io

from flask import Flask
from flask.testing import FlaskClient

from artwork.demo import poster
from web.state import Runtime


def runtime(app: Flask) -> Runtime:
    return app.extensions["keyart"]


def poster_bytes(
    name: str,
    composition: str = "portrait",
    palette: str = "dark",
    seed: int = 1,
    fmt: str = "JPEG",
) -> bytes:
    """A real poster image, drawn by the demo generator, encoded as `fmt`."""
    buffer = io.BytesIO()
    poster(name, composition, palette, seed).save(buffer, fmt)
    return buffer.getvalue()


def upload(client: FlaskClient, headers: dict[str, str], title: str, data: bytes, **form: str):  # type: ignore[no-untyped-def]
    return client.post(
        f"/api/v1/titles/{title}/artworks",
        data={"file": (io.BytesIO(data), "poster.jpg"), **form},
        headers=headers,
        content_type="multipart/form-data",
    )
