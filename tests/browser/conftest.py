"""Browser tests: Playwright for Python driving Debian's Chromium against a real `keyart
serve` on a loopback port, with its own SQLite database and media directory.

Chromium comes from Debian (`apt-get install chromium`), never from Playwright's own download.
Where /usr/bin/chromium (or Playwright) is missing these tests are skipped with a message,
unless KEYART_REQUIRE_BROWSER=1 (as in CI), where they fail. Screenshots go to
KEYART_BROWSER_ARTIFACTS if set, else to the test run's temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.live import LiveServer

CHROMIUM = Path(os.environ.get("KEYART_CHROMIUM", "/usr/bin/chromium"))
REQUIRE_BROWSER = os.environ.get("KEYART_REQUIRE_BROWSER") == "1"
ROOT = Path(__file__).resolve().parents[2]
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
HOW_TO_RUN = (
    "install Debian's Chromium (`apt-get install -y chromium`) to run the browser tests; "
    "`.ci/run` does, and makes them mandatory"
)
# The two widths every page is captured and checked at: a phone and a desktop.
WIDTHS = {"phone": (390, 844), "desktop": (1280, 900)}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "Playwright for Python is not installed (pip install -e '.[dev]')"
    if missing is None and not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing: {HOW_TO_RUN}"
    if missing is not None:
        if REQUIRE_BROWSER:
            pytest.fail(missing)
        pytest.skip(missing)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            # No sandbox: CI runs as root, where Chromium's sandbox refuses to start.
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@dataclass
class Server:
    """A running `keyart serve` and the environment its CLI commands need."""

    base: str
    env: dict[str, str]

    def keyart(self, *args: str, stdin: str | None = None) -> str:
        """Run a `keyart` command on the server's database; answer its standard output."""
        result = subprocess.run(
            [sys.executable, "-m", "web.cli", *args],
            cwd=ROOT,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr + result.stdout
        return result.stdout

    def post_json(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            json.dumps(body).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, browser: Any) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("server")
    env = {
        **os.environ,
        "KEYART_DATABASE_URL": f"sqlite:///{tmp / 'keyart.db'}",
        "KEYART_VAR_DIR": str(tmp / "var"),
        "KEYART_MEDIA_DIR": str(tmp / "media"),
        "KEYART_SECRET_KEY": "browser-test-secret-key-0123456789",
        # Two presets keep uploads quick; the journey sees a crop in each.
        "KEYART_PRESETS": "boxart=2:3@342;billboard=16:9@640",
        # Rewards are joined two seconds after their decision, so the journey can learn.
        "KEYART_REWARD_WAIT": "2",
        "KEYART_REWARD_SETTLE": "0",
        # The policy serves from the first decision (an untrained one spreads traffic evenly),
        # so a short journey shows every active variant often enough for a verdict.
        "KEYART_APPRENTICE_EXAMPLES": "0",
        "KEYART_POLICY_POLL": "0.2",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    live = LiveServer(env, tmp / "serve.log", ("--no-learner", "--workers", "1"))
    served = Server(live.base, env)
    served.keyart("db", "upgrade")
    with live:
        yield served


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    named = os.environ.get("KEYART_BROWSER_ARTIFACTS")
    if named:
        path = Path(named)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("browser-artifacts")


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def check_page(page: Any, artifacts: Path, name: str) -> None:
    """Capture the page at phone and desktop widths and fail on any serious or critical
    axe-core violation (axe is vendored and injected into the page, never served)."""
    for width, height in WIDTHS.values():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(artifacts / f"{name}-{width}.png"), full_page=True)
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, f"{name} scrolls sideways by {overflow}px at {width}px"
        if not page.evaluate("typeof window.axe !== 'undefined'"):
            page.add_script_tag(path=str(AXE))
        result = page.evaluate(
            "axe.run(document, {runOnly: {type: 'tag', values: "
            "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})"
        )
        serious = [
            f"{v['id']} ({v['impact']}): {v['help']} — "
            + "; ".join(n["target"][0] if n["target"] else "?" for n in v["nodes"][:5])
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert not serious, f"{name} at {width}px: " + "\n".join(serious)
    page.set_viewport_size({"width": 1280, "height": 900})


def sign_in(page: Any, base: str | None, email: str, password: str) -> None:
    """Sign in through the form: at /studio/login, or where the page is if `base` is None."""
    if base is not None:
        page.goto(f"{base}/studio/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/studio/(?!login).*"))
