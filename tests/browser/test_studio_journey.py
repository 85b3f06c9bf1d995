"""The editor's journey through the studio in a real browser (Debian's Chromium)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Server, check_page, sign_in

pytestmark = pytest.mark.browser


def test_the_demo_editor_keyart_demo_prints_signs_in(
    server: Server, page: Any, artifacts: Path
) -> None:
    # Exactly what `make run` prints: `keyart demo` once printed demo@keyart.local, which
    # the sign-in form refused.
    printed = server.keyart("demo")
    found = re.search(r"demo editor: (\S+)\s+password: (\S+)", printed)
    assert found, printed
    page.goto(f"{server.base}/studio/login")
    check_page(page, artifacts, "sign-in")
    sign_in(page, server.base, found[1], found[2])
    assert page.get_by_text(f"Signed in as {found[1]}").is_visible()
