"""Uploads through HTTP: the status each kind of file gets, what is kept and served, and
what a decision carries about the artwork."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from tests.artwork import samples
from tests.helpers import poster_bytes, runtime, upload
from web import create_app
from web.config import Settings


@pytest.fixture
def title(client: FlaskClient, editor_headers: dict[str, str]) -> str:
    response = client.post(
        "/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers
    )
    assert response.status_code == 201
    return "show"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "AVIF"])
def test_each_accepted_format_is_created(
    client: FlaskClient, editor_headers: dict[str, str], title: str, fmt: str
) -> None:
    response = upload(
        client, editor_headers, title, samples.encoded(samples.scene(seed=8), fmt), tags="a,b"
    )
    assert response.status_code == 201, response.json
    body = response.json
    assert {(r["preset"], r["format"]) for r in body["renditions"]} == {
        (p, f) for p in ("boxart-342", "billboard-640") for f in ("avif", "webp", "jpg")
    }
    assert body["features"]["faces"] in ("one", "two")
    assert body["placeholder"]["color"].startswith("#")
    assert set(body["placeholder"]["blurhash"]) == {"boxart-342", "billboard-640"}


AWKWARD = {
    "exif-rotated": samples.exif_rotated_jpeg,
    "cmyk": samples.cmyk_jpeg,
    "16-bit-grey": samples.png_16bit_grey,
    "16-bit-rgb": samples.png_16bit_rgb,
    "palette-transparency": samples.palette_with_transparency,
    "animated-webp": samples.animated_webp,
}


@pytest.mark.parametrize("kind", sorted(AWKWARD))
def test_awkward_but_valid_images_are_created(
    client: FlaskClient, editor_headers: dict[str, str], title: str, kind: str
) -> None:
    response = upload(client, editor_headers, title, AWKWARD[kind]())
    assert response.status_code == 201, response.json


REFUSED = {
    "truncated-jpeg": (samples.truncated_jpeg, 422, "undecodable_image"),
    "png-100000x100000": (lambda: samples.png_claiming(100_000, 100_000), 422, "too_many_pixels"),
    "header-lies": (lambda: samples.png_claiming(4000, 3000), 422, "undecodable_image"),
    "text-bomb": (samples.png_with_text_bomb, 422, "undecodable_image"),
    "too-small": (
        lambda: samples.encoded(Image.new("RGB", (199, 400)), "PNG"),
        422,
        "image_too_small",
    ),
    "zip-named-jpg": (samples.zip_named_jpg, 415, "unsupported_image"),
    "svg": (lambda: samples.SVG, 415, "unsupported_image"),
    "heic": (lambda: samples.HEIC_LIKE, 415, "unsupported_image"),
    "empty": (lambda: b"", 415, "unsupported_image"),
}


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_refused_files_get_their_status_and_leave_nothing_behind(
    app: Flask, client: FlaskClient, editor_headers: dict[str, str], title: str, kind: str
) -> None:
    make, status, code = REFUSED[kind]
    response = upload(client, editor_headers, title, make())
    assert response.status_code == status, response.json
    assert response.json["error"]["code"] == code
    assert response.json["error"]["message"]
    # No partial write: no variant, no blob.
    assert client.get(f"/api/v1/titles/{title}", headers=editor_headers).json["artworks"] == []
    media = runtime(app).store.root
    assert not media.exists() or not any(p.is_file() for p in media.rglob("*"))


def test_duplicates_are_refused_naming_the_existing_variant(
    client: FlaskClient, editor_headers: dict[str, str], title: str
) -> None:
    original = poster_bytes("Dup", "portrait", "warm", seed=4)
    first = upload(client, editor_headers, title, original)
    assert first.status_code == 201
    same = upload(client, editor_headers, title, original)
    assert same.status_code == 409
    assert first.json["id"] in same.json["error"]["message"]
    # Re-encoded smaller as WebP: the same picture to a viewer.
    image = Image.open(io.BytesIO(original))
    image.thumbnail((500, 750))
    near = upload(client, editor_headers, title, samples.encoded(image, "WEBP", quality=70))
    assert near.status_code == 409
    assert near.json["error"]["code"] == "duplicate_artwork"
    other = upload(client, editor_headers, title, poster_bytes("Dup", "landscape", "cool", seed=5))
    assert other.status_code == 201


def test_written_files_carry_no_metadata_and_originals_are_not_served(
    app: Flask, client: FlaskClient, editor_headers: dict[str, str], title: str
) -> None:
    data = samples.exif_rotated_jpeg()
    response = upload(client, editor_headers, title, data)
    assert response.status_code == 201
    for rendition in response.json["renditions"]:
        with client.get(rendition["url"]) as served:
            assert served.status_code == 200
            image = Image.open(io.BytesIO(served.data))
        assert not image.getexif()
        assert b"SpyCam" not in served.data and b"GPS" not in served.data
        # Upright: the rotated original is 400 wide by 600 tall, red on the right.
        if rendition["preset"] == "boxart-342" and rendition["format"] == "jpg":
            rgb = image.convert("RGB")
            assert rgb.getpixel((330, 256))[0] > 200 and rgb.getpixel((10, 256))[2] > 200
    # The original is kept, byte for byte (GPS and all), but never as public media.
    store = runtime(app).store
    (kept,) = [p for p in Path(store.root, "originals").rglob("*") if p.is_file()]
    assert kept.read_bytes() == data
    assert client.get(f"/media/{kept.name}").status_code == 404


def test_focus_is_validated_and_kept(
    client: FlaskClient, editor_headers: dict[str, str], title: str
) -> None:
    data = samples.encoded(samples.astronaut(), "PNG")
    bad = upload(client, editor_headers, title, data, focus_x="2", focus_y="0.5")
    assert bad.status_code == 422
    good = upload(client, editor_headers, title, data, focus_x="0.5", focus_y="1")
    assert good.status_code == 201
    assert good.json["focus"] == {"x": 0.5, "y": 1.0}
    assert good.json["crop"] == {"x": 0.5, "y": 1.0, "source": "editor"}
    # Without a focal point, the crop follows the astronaut's face.
    flipped = samples.encoded(samples.astronaut().transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG")
    auto = upload(client, editor_headers, title, flipped)
    assert auto.status_code == 201, auto.json
    assert auto.json["crop"]["source"] == "faces" and auto.json["crop"]["y"] < 0.35


def _noise(side: int) -> Image.Image:
    """Random pixels: an image that compresses to about its raw size."""
    rng = np.random.default_rng(side)
    return Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8))


def test_oversized_body_is_refused_by_flask_before_it_is_read(
    settings: Settings, editor_headers: dict[str, str]
) -> None:
    small = create_app(settings.with_overrides({"max_upload_bytes": 50_000}), {"TESTING": True})
    try:
        client = small.test_client()
        client.post("/api/v1/titles", json={"id": "t", "name": "T"}, headers=editor_headers)
        body = samples.encoded(_noise(400), "PNG")
        assert len(body) > 50_000 + 64 * 1024
        response = upload(client, editor_headers, "t", body)
        assert response.status_code == 413
        assert response.json["error"]["code"] == "file_too_large"
        # Werkzeug's words: refused from Content-Length, not after reading the file.
        assert "the file is" not in response.json["error"]["message"]
        # Within Flask's margin for the form fields, the file itself is still measured.
        just_over = samples.encoded(_noise(260), "JPEG", quality=90)
        assert 50_000 < len(just_over) < 50_000 + 64 * 1024
        response = upload(client, editor_headers, "t", just_over)
        assert response.status_code == 413
        assert response.json["error"]["code"] == "file_too_large"
        assert "the file is" in response.json["error"]["message"]
    finally:
        runtime(small).policy.stop()
        runtime(small).engine.dispose()


def test_decisions_carry_the_placeholder_of_the_asked_rendition(
    client: FlaskClient, editor_headers: dict[str, str], title: str
) -> None:
    created = upload(client, editor_headers, title, poster_bytes("P", "close-up", "bright"))
    assert created.status_code == 201
    stored = created.json["placeholder"]
    for rendition in ("boxart-342", "billboard-640"):
        response = client.post(
            "/api/v1/decisions",
            json={"titles": [title], "context": {}, "rendition": rendition},
            headers={"Accept": "image/webp,image/jpeg;q=0.8"},
        )
        assert response.status_code == 200
        assert "Accept" in response.headers["Vary"]
        (decision,) = response.json["decisions"]
        assert decision["image"]["format"] == "webp"
        assert decision["placeholder"] == {
            "color": stored["color"],
            "blurhash": stored["blurhash"][rendition],
        }
