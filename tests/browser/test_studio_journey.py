"""The editor's journey through the studio in a real browser (Debian's Chromium), against a
real `keyart serve`: sign in, create a title, upload, set a focal point, choose the default,
pause, then traffic through the public API and the learner, and what the pages make of it."""

from __future__ import annotations

import base64
import random
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Server, check_page, sign_in
from tests.helpers import poster_bytes

pytestmark = pytest.mark.browser

# The simulated audience: click probability per (segment, variant label).
CLICK_RATES = {
    ("teen-scifi", "close-up"): 0.05,
    ("teen-scifi", "group"): 0.55,
    ("family", "close-up"): 0.20,
    ("family", "group"): 0.20,
}


@pytest.fixture(scope="module")
def demo_editor(server: Server) -> tuple[str, str]:
    """The demo editor's email and password, exactly as `keyart demo` (and so `make run`)
    prints them."""
    printed = server.keyart("demo")
    found = re.search(r"demo editor: (\S+)\s+password: (\S+)", printed)
    assert found, printed
    return found[1], found[2]


def test_the_demo_editor_keyart_demo_prints_signs_in(
    server: Server, demo_editor: tuple[str, str], page: Any, artifacts: Path
) -> None:
    # `keyart demo` once printed demo@keyart.local, which the sign-in form refused.
    email, password = demo_editor
    page.goto(f"{server.base}/studio/login")
    check_page(page, artifacts, "sign-in")
    sign_in(page, server.base, email, password)
    assert page.get_by_text(f"Signed in as {email}").is_visible()


def _drop(page: Any, selector: str, files: list[tuple[str, str, bytes]]) -> None:
    """Drop `files` (name, type, bytes) on `selector` as a person dragging them would."""
    transfer = page.evaluate_handle(
        """(files) => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, {type: f.type}));
            }
            return dt;
        }""",
        [{"name": n, "type": t, "b64": base64.b64encode(b).decode()} for n, t, b in files],
    )
    page.dispatch_event(selector, "dragenter", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def _submit(page: Any, button: Any) -> None:
    """Click a button that submits a form, and wait for the page it leads to."""
    with page.expect_navigation():
        button.click()


def _variant(page: Any, label: str) -> Any:
    return page.locator("section.variant").filter(has=page.get_by_role("heading", name=label))


def _crop_src(page: Any, label: str, preset: str) -> str:
    return _variant(page, label).locator(f"img.crop[data-preset='{preset}']").get_attribute("src")


def test_the_editors_journey(
    server: Server, demo_editor: tuple[str, str], page: Any, artifacts: Path
) -> None:
    base = server.base
    # 1. Sign in.
    sign_in(page, base, *demo_editor)

    # 2. Create a title.
    page.get_by_label("Id (used in the API)").fill("the-journey")
    page.get_by_label("Name", exact=True).fill("The Journey")
    page.get_by_label("Genres (comma-separated)").fill("sci-fi, family")
    page.get_by_role("button", name="Create title").click()
    page.wait_for_url(f"{base}/studio/titles/the-journey")
    assert page.get_by_role("heading", name="The Journey", level=1).is_visible()
    assert page.get_by_text("Live since").is_visible()

    # 3. Three files in one drop, one of them not an image: two variants and one error.
    page.get_by_label("Tags (comma-separated)").fill("journey")
    _drop(
        page,
        "#dropzone",
        [
            ("close-up.jpg", "image/jpeg", poster_bytes("The Journey", "close-up", "dark", 1)),
            ("group.jpg", "image/jpeg", poster_bytes("The Journey", "group", "bright", 2)),
            ("notes.jpg", "image/jpeg", b"these are notes, not a picture\n"),
        ],
    )
    uploads = page.locator("#uploads li")
    page.wait_for_function(
        "document.querySelectorAll('#uploads .done, #uploads .error').length === 3"
    )
    assert uploads.filter(has_text="close-up.jpg").locator(".done").is_visible()
    assert uploads.filter(has_text="group.jpg").locator(".done").is_visible()
    error = uploads.filter(has_text="notes.jpg").locator(".error").inner_text()
    assert error.startswith("Error: ") and "JPEG, PNG, WebP or AVIF" in error, error
    _submit(page, page.get_by_role("link", name="Show the new variants"))
    assert page.locator("section.variant").count() == 2
    # A third through the file chooser; every file answered, the gallery reloads with it.
    page.set_input_files(
        "#upload-file",
        [
            {
                "name": "landscape.jpg",
                "mimeType": "image/jpeg",
                "buffer": poster_bytes("The Journey", "landscape", "cool", 3),
            }
        ],
    )
    page.wait_for_function("document.querySelectorAll('section.variant').length === 3")
    # Each variant is named after its file; edit one's label and tags.
    names = page.locator("section.variant h3").all_inner_texts()
    assert sorted(n.split()[0] for n in names) == ["close-up", "group", "landscape"], names
    card = _variant(page, "landscape")
    card.get_by_label("Label").fill("landscape wide")
    card.get_by_label("Tags").fill("journey, wide")
    _submit(page, card.get_by_role("button", name="Save"))
    assert _variant(page, "landscape wide").get_by_label("Tags").input_value() == "journey, wide"
    check_page(page, artifacts, "gallery")

    # 4. Click the picture to set a focal point: the crops are cut again around it. (The
    # posters are 2:3, like the boxart preset, so it is the 16:9 billboard crop that moves.)
    before = _crop_src(page, "close-up", "billboard-640")
    picture = _variant(page, "close-up").locator(".picker img")
    box = picture.bounding_box()
    with page.expect_navigation():
        picture.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.1})
    assert page.get_by_text("Moved the focal point").is_visible()
    assert _crop_src(page, "close-up", "billboard-640") != before
    focus_y = float(_variant(page, "close-up").get_by_label("Focus y").input_value())
    assert focus_y == pytest.approx(0.1, abs=0.02)
    dot = _variant(page, "close-up").locator(".dot").get_attribute("style")
    assert re.search(r"top: (9|10|11)\.\d+%", dot), dot

    # 5. Make another variant the default (the first upload to finish is); pause one.
    close_up_is_default = _variant(page, "close-up").locator(".badge.default").count() == 1
    target = "group" if close_up_is_default else "close-up"
    _submit(page, _variant(page, target).get_by_role("button", name=f"Make default {target}"))
    assert _variant(page, target).locator(".badge.default").is_visible()
    assert page.get_by_text("Live since").is_visible()
    _submit(page, _variant(page, "landscape").get_by_role("button", name="Pause landscape wide"))
    assert _variant(page, "landscape").locator(".badge.paused").is_visible()

    # 6. Simulated traffic through the public API, then the learner.
    rng = random.Random(16)
    shown: Counter[tuple[str, str]] = Counter()
    clicked: Counter[tuple[str, str]] = Counter()
    # Variant id → label, from the editor API with the browser's studio session.
    title = page.request.get(f"{base}/api/v1/titles/the-journey").json()
    labels = {a["id"]: a["label"] for a in title["artworks"]}
    for viewer in range(400):
        segment = ("teen-scifi", "family")[viewer % 2]
        answer = server.post_json(
            "/api/v1/decisions",
            {
                "user": f"viewer-{viewer}",
                "context": {"segment": segment, "device": "tv"},
                "titles": ["the-journey"],
            },
        )["decisions"][0]
        label = labels[answer["artwork_id"]]
        assert label != "landscape wide", "a paused variant was served"
        shown[(segment, label)] += 1
        if rng.random() < CLICK_RATES[(segment, label)]:
            clicked[(segment, label)] += 1
            events = server.post_json(
                "/api/v1/events", {"events": [{"event_id": answer["event_id"], "type": "click"}]}
            )
            assert events["events"][0]["status"] == "accepted"
    assert shown[("teen-scifi", "close-up")] >= 20 and shown[("teen-scifi", "group")] >= 20
    time.sleep(2.5)  # the reward window (KEYART_REWARD_WAIT) closes
    learned = server.keyart("learn", "--once")
    assert "policy version 1" in learned, learned

    # 7. The results table, the chart and a verdict reflect it.
    page.goto(f"{base}/studio/titles/the-journey/results")
    rows = page.locator("#results-table tbody tr")
    for (segment, label), count in shown.items():
        row = rows.filter(has=page.locator("td", has_text=re.compile(f"^{segment}$"))).filter(
            has=page.locator("td", has_text=re.compile(f"^{label}"))
        )
        cells = row.locator("td").all_inner_texts()
        assert cells[2] == f"{count:,}" and cells[3] == str(clicked[(segment, label)]), cells
    verdicts = page.locator("#verdicts").inner_text()
    assert re.search(r"group beats close-up for teen-scifi: \+\d+\.\d points", verdicts), verdicts
    assert "for family" in verdicts
    assert page.locator("#chart-share canvas").count() == 1
    assert page.locator("#chart-rate canvas").count() == 1
    check_page(page, artifacts, "results")

    # 8. The policy page: the learner's snapshot is served (each process polls for it).
    page.goto(f"{base}/studio/policy")
    for _ in range(50):
        if page.locator("#serving-version").inner_text() == "1":
            break
        time.sleep(0.2)
        page.reload()
    assert page.locator("#serving-version").inner_text() == "1"
    assert int(page.locator("#examples-learned").inner_text().replace(",", "")) == sum(
        shown.values()
    )
    assert page.locator("#modes").get_by_text("The Journey").is_visible()
    check_page(page, artifacts, "policy")

    # The titles page and its search; the editors page, where an admin adds an editor.
    page.goto(f"{base}/studio/?q=journey")
    assert page.locator("tbody tr").count() == 1
    assert "2 active of 3 variants" in page.locator("tbody tr").inner_text()
    page.goto(f"{base}/studio/")
    check_page(page, artifacts, "titles")
    page.goto(f"{base}/studio/editors")
    page.get_by_label("Email").fill("plain@example.com")
    page.get_by_label("Password (8 or more characters)").fill("a plain password")
    _submit(page, page.get_by_role("button", name="Create editor"))
    flash = page.get_by_role("status").inner_text()
    assert "Created plain@example.com" in flash, flash
    plain_token = flash.rsplit(" ", 1)[-1]
    check_page(page, artifacts, "editors")

    # 9. Sign out.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/studio/login")

    # 10. Signed out, the studio sends the browser to sign in; a non-admin editor cannot
    # open the editors page, nor manage editors through the API.
    page.goto(f"{base}/studio/policy")
    assert page.url.startswith(f"{base}/studio/login?next=")
    sign_in(page, None, "plain@example.com", "a plain password")
    assert page.url == f"{base}/studio/policy"  # back where the visit was going
    assert page.get_by_role("link", name="Editors").count() == 0
    refused = page.goto(f"{base}/studio/editors")
    assert refused.status == 403
    assert "Only admin editors" in page.content()
    request = urllib.request.Request(
        f"{base}/api/v1/editors", headers={"Authorization": f"Bearer {plain_token}"}
    )
    with pytest.raises(urllib.error.HTTPError) as api_refused:
        urllib.request.urlopen(request, timeout=10)
    api_refused.value.close()
    assert api_refused.value.code == 403
