"""The studio through a browser's eyes: sign in with CSRF, see titles, act on variants."""

from __future__ import annotations

import io
import re

from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from tests.helpers import poster_bytes, upload
from web.auth import create_editor


def _csrf(html: str) -> str:
    match = re.search(r'name="(?:\w+-)?csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def _sign_in(client: FlaskClient, session: Session) -> None:
    create_editor(session, "studio@example.com", password="a long password")
    session.commit()
    page = client.get("/studio/login").get_data(as_text=True)
    response = client.post(
        "/studio/login",
        data={
            "email": "studio@example.com",
            "password": "a long password",
            "csrf_token": _csrf(page),
        },
    )
    assert response.status_code == 302 and response.headers["Location"].endswith("/studio/")


def test_signed_out_visits_redirect_to_login(client: FlaskClient) -> None:
    response = client.get("/studio/")
    assert response.status_code == 302 and "/studio/login" in response.headers["Location"]


def test_login_needs_csrf_and_the_right_password(client: FlaskClient, session: Session) -> None:
    create_editor(session, "studio@example.com", password="a long password")
    session.commit()
    no_token = client.post(
        "/studio/login", data={"email": "studio@example.com", "password": "a long password"}
    )
    assert no_token.status_code == 200 and client.get("/studio/").status_code == 302
    page = client.get("/studio/login").get_data(as_text=True)
    wrong = client.post(
        "/studio/login",
        data={"email": "studio@example.com", "password": "wrong", "csrf_token": _csrf(page)},
    )
    assert "Wrong email or password" in wrong.get_data(as_text=True)
    assert client.get("/studio/").status_code == 302


def test_editor_manages_a_title(
    client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    client.post("/api/v1/titles", json={"id": "show", "name": "The Show"}, headers=editor_headers)
    first = upload(client, editor_headers, "show", poster_bytes("The Show")).json["id"]
    _sign_in(client, session)
    index = client.get("/studio/").get_data(as_text=True)
    assert "The Show" in index and "1 active of 1 variants" in index

    page = client.get("/studio/titles/show").get_data(as_text=True)
    response = client.post(
        "/studio/titles/show",
        data={
            "upload-csrf_token": _csrf(page),
            "upload-file": (io.BytesIO(poster_bytes("The Show", "group", "warm")), "p.jpg"),
            "upload-label": "group shot",
            "upload-tags": "group, warm",
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    title = client.get("/api/v1/titles/show", headers=editor_headers).json
    assert [a["label"] for a in title["artworks"]] == ["", "group shot"]
    second = title["artworks"][1]["id"]

    page = client.get("/studio/titles/show").get_data(as_text=True)
    for action, artwork_id in (("paused", first), ("default", second)):
        client.post(
            "/studio/titles/show",
            data={
                "action-csrf_token": _csrf(page),
                "action-artwork_id": artwork_id,
                "action-action": action,
            },
        )
    title = client.get("/api/v1/titles/show", headers=editor_headers).json
    assert title["artworks"][0]["status"] == "paused"
    assert title["default_artwork_id"] == second

    # A duplicate upload is explained on the page, not a crash.
    page = client.get("/studio/titles/show").get_data(as_text=True)
    client.post(
        "/studio/titles/show",
        data={
            "upload-csrf_token": _csrf(page),
            "upload-file": (io.BytesIO(poster_bytes("The Show")), "p.jpg"),
        },
        content_type="multipart/form-data",
    )
    assert "same as artwork" in client.get("/studio/titles/show").get_data(as_text=True)
    assert client.get("/studio/titles/nope").status_code == 404
