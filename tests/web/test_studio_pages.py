"""The studio's pages and the editor API behind them, through Flask's test client on both
databases: creating and finding titles, the focal point, results, the policy page, and
editors managed by admins only."""

from __future__ import annotations

import io
import re
from datetime import timedelta

from flask.testing import FlaskClient
from PIL import Image
from sqlalchemy import update
from sqlalchemy.orm import Session

from bandit.learner import learn_once
from bandit.models import Decision, utcnow
from tests.helpers import poster_bytes, runtime, upload
from web.auth import create_editor


def _csrf(html: str) -> str:
    match = re.search(r'name="(?:\w+-)?csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def _studio(client: FlaskClient, session: Session, *, admin: bool) -> tuple[str, str]:
    """Sign a new editor in; answer their API token and a CSRF token of their session."""
    email = "admin@example.com" if admin else "plain@example.com"
    _, token = create_editor(session, email, password="a long password", is_admin=admin)
    session.commit()
    page = client.get("/studio/login").get_data(as_text=True)
    signed_in = client.post(
        "/studio/login",
        data={"email": email, "password": "a long password", "csrf_token": _csrf(page)},
    )
    assert signed_in.status_code == 302
    return token, _csrf(client.get("/studio/").get_data(as_text=True))


def test_titles_are_created_searched_and_paged(client: FlaskClient, session: Session) -> None:
    _, csrf = _studio(client, session, admin=False)
    made = client.post(
        "/studio/",
        data={"title-csrf_token": csrf, "title-id": "my-show", "title-name": "My Show",
              "title-genres": "drama, sci-fi"},
    )
    assert made.status_code == 302 and made.headers["Location"] == "/studio/titles/my-show"
    gallery = client.get("/studio/titles/my-show").get_data(as_text=True)
    assert "Live since" in gallery and "drama, sci-fi" in gallery
    # Refused in words, nothing written: a duplicate id, an id with a slash.
    again = client.post(
        "/studio/", data={"title-csrf_token": csrf, "title-id": "my-show", "title-name": "X"}
    )
    # The page comes back with the form as typed and the reason.
    assert again.status_code == 200 and "already exists" in again.get_data(as_text=True)
    slash = client.post(
        "/studio/", data={"title-csrf_token": csrf, "title-id": "a/b", "title-name": "X"}
    )
    assert "no spaces or slashes" in slash.get_data(as_text=True)
    for n in range(25):
        client.post(
            "/studio/",
            data={"title-csrf_token": csrf, "title-id": f"t{n:02}", "title-name": f"Title {n}"},
        )
    first = client.get("/studio/").get_data(as_text=True)
    assert "26 titles" in first and "Page 1 of 2" in first and "Title 0<" in first
    second = client.get("/studio/?page=2").get_data(as_text=True)
    assert "Title 19<" in second and "Title 0<" not in second
    found = client.get("/studio/?q=my%20sh").get_data(as_text=True)
    assert "1 title matching" in found and "My Show" in found
    # LIKE's wildcards in a search are literal characters.
    assert "0 titles" in client.get("/studio/?q=%25").get_data(as_text=True)


def test_a_focal_point_cuts_the_crops_again(
    client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    artwork = upload(client, editor_headers, "show", poster_bytes("Show")).json
    billboard = next(r for r in artwork["renditions"] if r["preset"] == "billboard-640")
    moved = client.patch(
        f"/api/v1/artworks/{artwork['id']}", json={"focus": {"x": 0.5, "y": 0.05}},
        headers=editor_headers,
    )
    assert moved.status_code == 200, moved.json
    assert moved.json["focus"] == {"x": 0.5, "y": 0.05}
    assert moved.json["crop"]["source"] == "editor"
    again = next(r for r in moved.json["renditions"] if r["preset"] == "billboard-640")
    assert again["url"] != billboard["url"]
    for bad in ({"x": 1.5, "y": 0.5}, {"x": 0.5}, {"x": "left", "y": 0}):
        refused = client.patch(
            f"/api/v1/artworks/{artwork['id']}", json={"focus": bad}, headers=editor_headers
        )
        assert refused.status_code == 422 and "focus" in refused.json["error"]["message"]

    # In the studio: the form, then the whole picture (small, metadata-free) to click on.
    _, csrf = _studio(client, session, admin=False)
    client.post(
        "/studio/titles/show",
        data={"focus-csrf_token": csrf, "focus-artwork_id": artwork["id"],
              "focus-x": "0.2", "focus-y": "0.9"},
    )
    page = client.get("/studio/titles/show").get_data(as_text=True)
    assert "Moved the focal point" in page and 'value="0.20"' in page
    preview = client.get(f"/studio/artworks/{artwork['id']}/preview.jpg")
    assert preview.status_code == 200 and preview.mimetype == "image/jpeg"
    image = Image.open(io.BytesIO(preview.data))
    assert max(image.size) <= 720 and not image.info.get("exif")
    etag = preview.headers["ETag"]
    assert client.get(
        f"/studio/artworks/{artwork['id']}/preview.jpg", headers={"If-None-Match": etag}
    ).status_code == 304
    out_of_range = client.post(
        "/studio/titles/show",
        data={"focus-csrf_token": csrf, "focus-artwork_id": artwork["id"],
              "focus-x": "2", "focus-y": "0.5"},
        follow_redirects=True,
    )
    assert "Focus x (0–1)" in out_of_range.get_data(as_text=True)
    edge = client.post(
        "/studio/titles/show",
        data={"focus-csrf_token": csrf, "focus-artwork_id": artwork["id"],
              "focus-x": "0", "focus-y": "1"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Moved the focal point" in edge and 'value="0.00"' in edge


def test_results_verdicts_and_the_policy_page(
    client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    for n, composition in enumerate(("portrait", "group")):
        upload(client, editor_headers, "show", poster_bytes("Show", composition, seed=n),
               label=composition)
    for n in range(30):
        answer = client.post(
            "/api/v1/decisions",
            json={"user": f"v{n}", "context": {"segment": "teens"}, "titles": ["show"]},
        ).json["decisions"][0]
        if n % 3 == 0:
            client.post("/api/v1/events", json={"events": [
                {"event_id": answer["event_id"], "type": "click"}]})
    results = client.get("/api/v1/titles/show/results", headers=editor_headers).json
    assert sum(r["impressions"] for r in results["rows"]) == 30
    assert sum(r["clicks"]["count"] for r in results["rows"]) == 10
    assert [v["segment"] for v in results["verdicts"]] == ["teens"]
    assert sum(len(a["share"]) for a in results["timeline"]["actions"].values()) >= 1
    _studio(client, session, admin=False)
    page = client.get("/studio/titles/show/results").get_data(as_text=True)
    assert results["verdicts"][0]["verdict"].split(" (")[0] in page
    policy = client.get("/studio/policy").get_data(as_text=True)
    assert "Titles: apprentice or policy" in policy and "No offline evaluation yet" in policy
    assert "No lineage yet" in policy
    # After a learner pass the page lists the lineage that serves, with its settings.
    settings = runtime(client.application).settings
    later = utcnow() + timedelta(hours=1)
    learn_once(session, settings.vw_args, settings.reward_config(), now=later)
    policy = client.get("/studio/policy").get_data(as_text=True)
    assert "<td>serving</td>" in policy and "first lineage" in policy
    assert settings.vw_args in policy


def _traffic(html: str) -> dict[str, int]:
    """The titles page's traffic column, by title id."""
    rows = re.findall(
        r'<div class="muted">([\w-]+)</div></td>.*?<td class="num">([\d,]+)</td>', html, re.S
    )
    return {title: int(count.replace(",", "")) for title, count in rows}


def test_the_titles_page_counts_each_titles_own_recent_traffic(
    client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    # Every listed title's traffic is read by one query over the log: each decision must
    # still land on its own title's row, and only the last seven days count.
    for n, title in enumerate(("alpha", "beta", "gamma", "delta")):
        client.post("/api/v1/titles", json={"id": title, "name": title}, headers=editor_headers)
        upload(client, editor_headers, title, poster_bytes(title, "portrait", seed=n))
    pages = [["alpha", "beta"]] * 3 + [["alpha"]] * 4 + [["gamma"]] * 2
    for n, titles in enumerate(pages):
        answer = client.post("/api/v1/decisions", json={"user": f"v{n}", "titles": titles})
        assert answer.status_code == 200
    session.execute(
        update(Decision)
        .where(Decision.slot == "gamma")
        .values(created_at=utcnow() - timedelta(days=8))
    )
    session.commit()
    _studio(client, session, admin=False)
    page = client.get("/studio/").get_data(as_text=True)
    assert _traffic(page) == {"alpha": 7, "beta": 3, "gamma": 0, "delta": 0}


def test_only_admins_manage_editors(
    client: FlaskClient, session: Session, editor_headers: dict[str, str]
) -> None:
    # editor_headers is a plain editor's token.
    refused = client.get("/api/v1/editors", headers=editor_headers)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "admin_required"
    assert client.post(
        "/api/v1/editors", json={"email": "x@example.com"}, headers=editor_headers
    ).status_code == 403
    _, token = create_editor(session, "boss@example.com", is_admin=True)
    session.commit()
    boss = {"Authorization": f"Bearer {token}"}
    made = client.post(
        "/api/v1/editors", json={"email": "new@example.com", "password": "long enough"},
        headers=boss,
    )
    assert made.status_code == 201 and made.json["token"].startswith("ka_")
    new_headers = {"Authorization": f"Bearer {made.json['token']}"}
    assert client.get("/api/v1/titles", headers=new_headers).status_code == 200
    emails = [e["email"] for e in client.get("/api/v1/editors", headers=boss).json["editors"]]
    assert emails == ["boss@example.com", "editor@example.com", "new@example.com"]
    bad = client.post("/api/v1/editors", json={"email": "x@y.local"}, headers=boss)
    assert bad.status_code == 422 and "not an email address" in bad.json["error"]["message"]
    editor_id = made.json["id"]
    issued = client.post(f"/api/v1/editors/{editor_id}/token", headers=boss)
    assert issued.status_code == 201
    assert client.get("/api/v1/titles", headers=new_headers).status_code == 401
    newer = {"Authorization": f"Bearer {issued.json['token']}"}
    assert client.get("/api/v1/titles", headers=newer).status_code == 200
    assert client.delete(f"/api/v1/editors/{editor_id}/token", headers=boss).status_code == 204
    assert client.get("/api/v1/titles", headers=newer).status_code == 401
    assert client.delete("/api/v1/editors/9999/token", headers=boss).status_code == 404


def test_the_editors_page_is_for_admins(client: FlaskClient, session: Session) -> None:
    _studio(client, session, admin=False)
    assert client.get("/studio/editors").status_code == 403
    assert "/studio/editors" not in client.get("/studio/").get_data(as_text=True)


def test_an_admin_manages_editors_in_the_studio(client: FlaskClient, session: Session) -> None:
    _, csrf = _studio(client, session, admin=True)
    made = client.post(
        "/studio/editors",
        data={"new-csrf_token": csrf, "new-email": "pal@example.com",
              "new-password": "a pal's password"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Created pal@example.com. API token (shown once): ka_" in made
    pal = re.search(r'name="editor-editor_id" value="(\d+)"[^<]*<input type="hidden" '
                    r'name="editor-action" value="password">\s*<div class="field"><label '
                    r'for="pw-\d+">New password for pal@example.com', made)
    assert pal, made
    reset = client.post(
        "/studio/editors",
        data={"editor-csrf_token": csrf, "editor-editor_id": pal[1], "editor-action": "password",
              "editor-password": "short"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "New password: Field must be between 8 and 200 characters long." in reset
    revoked = client.post(
        "/studio/editors",
        data={"editor-csrf_token": csrf, "editor-editor_id": pal[1], "editor-action": "revoke"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "Revoked the API token of pal@example.com" in revoked
