"""The studio through a browser's eyes: sign in with CSRF, see titles, act on variants."""

from __future__ import annotations

import io
import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import generate_password_hash

import web.auth
from tests.helpers import poster_bytes, upload
from web.auth import STUDIO_SESSION_SECONDS, create_editor
from web.models import Editor


def _csrf(html: str) -> str:
    match = re.search(r'name="(?:\w+-)?csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def _sign_in(client: FlaskClient, session: Session, next_: str | None = None) -> str:
    """Sign a new editor in through the login form; answer where it sent the browser."""
    create_editor(session, "studio@example.com", password="a long password")
    session.commit()
    page = client.get("/studio/login").get_data(as_text=True)
    response = client.post(
        "/studio/login",
        query_string={} if next_ is None else {"next": next_},
        data={
            "email": "studio@example.com",
            "password": "a long password",
            "csrf_token": _csrf(page),
        },
    )
    assert response.status_code == 302
    # Never sent along with another site's cross-site post; never readable by scripts.
    cookie = response.headers["Set-Cookie"]
    assert "SameSite=Lax" in cookie and "HttpOnly" in cookie
    return response.headers["Location"]


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


@pytest.mark.parametrize(
    ("next_", "location"),
    [
        ("/studio/titles/show", "/studio/titles/show"),
        ("/studio/\r\nX: y", "/studio/"),
        ("/studio/\x1b[2J", "/studio/"),
        ("//evil.com", "/studio/"),
        ("/\\evil.com", "/studio/"),
        ("/studio/\\evil.com", "/studio/"),
        ("https://evil.com/studio/", "/studio/"),
        ("/studio/../..//evil.com", "/studio/"),
        ("/studio/%2e%2e/%2E%2E//evil.com", "/studio/"),
    ],
)
def test_login_sends_the_browser_back_only_within_the_studio(
    client: FlaskClient, session: Session, next_: str, location: str
) -> None:
    assert _sign_in(client, session, next_) == location
    assert client.get("/studio/").status_code == 200


def test_signing_out_needs_the_csrf_token(client: FlaskClient, session: Session) -> None:
    assert _sign_in(client, session) == "/studio/"
    # Another site's form cannot sign the editor out: it has no token.
    forged = client.post("/studio/logout")
    assert forged.status_code == 302 and client.get("/studio/").status_code == 200
    page = client.get("/studio/").get_data(as_text=True)
    response = client.post("/studio/logout", data={"logout-csrf_token": _csrf(page)})
    assert response.status_code == 302 and response.headers["Location"] == "/studio/login"
    assert client.get("/studio/").status_code == 302


def test_a_studio_session_ends_after_its_lifetime(client: FlaskClient, session: Session) -> None:
    _sign_in(client, session)
    with client.session_transaction() as cookie:
        cookie["signed_in_at"] -= STUDIO_SESSION_SECONDS - 60
    assert client.get("/studio/").status_code == 200
    with client.session_transaction() as cookie:
        cookie["signed_in_at"] -= 120
    assert client.get("/studio/").status_code == 302


def test_a_new_password_ends_the_editors_studio_sessions(
    client: FlaskClient, session: Session
) -> None:
    _sign_in(client, session)
    copied = client.get_cookie("session")
    assert copied is not None
    editor = session.scalar(select(Editor).where(Editor.email == "studio@example.com"))
    assert editor is not None
    editor.password_hash = generate_password_hash("another long password")
    session.commit()
    replay = client.application.test_client()
    replay.set_cookie("session", copied.value)
    assert replay.get("/studio/").status_code == 302


def test_the_studio_session_opens_the_editor_api_only_with_its_csrf_token(
    client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    """The contract lets the editor API take the studio's session as well as a token; but a
    browser sends the cookie with requests other sites make (a form can post multipart to
    any origin), so a change made with the cookie must carry the session's CSRF token."""
    client.post("/api/v1/titles", json={"id": "show", "name": "The Show"}, headers=editor_headers)
    _sign_in(client, session)
    assert client.get("/api/v1/titles/show").status_code == 200  # reading is safe
    forged = upload(client, {"Origin": "https://evil.example"}, "show", poster_bytes("Evil"))
    assert forged.status_code == 403 and forged.json["error"]["code"] == "csrf_required"
    assert client.post("/api/v1/titles", json={"id": "x", "name": "X"}).status_code == 403
    token = _csrf(client.get("/studio/").get_data(as_text=True))
    made = client.post(
        "/api/v1/titles", json={"id": "x", "name": "X"}, headers={"X-CSRFToken": token}
    )
    assert made.status_code == 201
    # A wrong bearer token is refused outright, not made good by the cookie.
    wrong = client.get("/api/v1/titles/show", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert upload(client, editor_headers, "show", poster_bytes("Good")).status_code == 201


def test_an_unknown_email_costs_a_password_hash_too(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Answering an unknown email sooner than a wrong password would tell anyone which
    emails are editors'. Spied on, not timed: the real check still runs."""
    create_editor(session, "known@example.com", password="a long password")
    create_editor(session, "token-only@example.com")
    checked: list[str] = []
    real_check = web.auth.check_password_hash

    def spy(stored: str, password: str) -> bool:
        checked.append(stored)
        return real_check(stored, password)

    monkeypatch.setattr(web.auth, "check_password_hash", spy)
    for email in ("known@example.com", "nobody@example.com", "token-only@example.com"):
        assert web.auth.check_password(session, email, "a long password ") is None
    known, unknown, token_only = checked
    # The same method and cost (werkzeug's "scrypt:32768:8:1"), so the same time.
    assert unknown.split("$")[0] == token_only.split("$")[0] == known.split("$")[0]
    assert web.auth.check_password(session, "known@example.com", "a long password")
