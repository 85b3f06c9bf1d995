"""The `keyart` command line against a real database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from web.cli import main


def run(env: dict[str, str], *args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, list(args), env=env, input=stdin)


def test_db_upgrade_is_idempotent(cli_env: dict[str, str]) -> None:
    for _ in range(2):
        result = run(cli_env, "db", "upgrade")
        assert result.exit_code == 0, result.output
        assert "up to date" in result.output


def test_editor_create_prints_a_working_token(cli_env: dict[str, str], client: FlaskClient) -> None:
    result = run(
        cli_env, "editor", "create", "Ed@Example.com", "--password-stdin", stdin="long enough\n"
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    response = client.get("/api/v1/titles", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200

    again = run(cli_env, "editor", "create", "ed@example.com")
    assert again.exit_code != 0 and "already exists" in again.output
    short = run(cli_env, "editor", "create", "x@example.com", "--password-stdin", stdin="short\n")
    assert short.exit_code != 0 and "at least 8" in short.output
    assert run(cli_env, "editor", "create", "not-an-email").exit_code != 0


def test_learn_once_reports_its_pass(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "learn", "--once")
    assert result.exit_code == 0, result.output
    assert "learned 0 decisions" in result.output


def test_the_learner_stops_soon_after_sigterm_between_passes(cli_env: dict[str, str]) -> None:
    # A minute between passes: before, a stop waited that out (`keyart serve` waits for it).
    env = {**os.environ, **cli_env, "KEYART_LEARN_INTERVAL": "60"}
    process = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "learn"],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert "learning every 60s" in process.stdout.readline()
        time.sleep(1)  # its first pass (an empty log) is over: it waits for the next
        stopped = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, process.stderr.read() if process.stderr else ""
        assert time.monotonic() - stopped < 5
    finally:
        process.kill()
        process.communicate()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KEYART_REWARD_WAIT", "ten minutes"),
        ("KEYART_REWARD_WAIT", "-5"),
        ("KEYART_DATABASE_URL", "mysql://somewhere/db"),
        ("KEYART_VW_ARGS", "--cb_adf"),
        ("KEYART_SECRET_KEY", "short"),
        ("KEYART_POLICY_POLL", "0"),
    ],
)
def test_bad_settings_stop_with_their_name(
    cli_env: dict[str, str], variable: str, value: str
) -> None:
    result = run({**cli_env, variable: value}, "learn", "--once")
    assert result.exit_code != 0
    assert variable in result.output
    assert "Traceback" not in result.output
