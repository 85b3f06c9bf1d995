"""The `keyart` command line against a real database."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import text

from tests.conftest import POSTGRES_URL
from tests.live import LiveServer, free_port
from web.cli import main
from web.db import alembic_config, make_engine, scratch_database


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


def assert_one_line_error(result, *words: str) -> None:  # type: ignore[no-untyped-def]
    """The command stopped as click stops it, exit 1 and one `Error:` line, not on an
    uncaught exception (which CliRunner would hold in `result.exception`)."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for word in words:
        assert word in lines[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KEYART_REWARD_WAIT", "ten minutes"),
        ("KEYART_REWARD_WAIT", "-5"),
        ("KEYART_REWARD_WAIT", "1e15"),  # the learner's datetime arithmetic overflowed
        ("KEYART_REWARD_SETTLE", "1e15"),
        ("KEYART_DATABASE_URL", "mysql://somewhere/db"),
        ("KEYART_DATABASE_URL", "postgresqlfoo://somewhere/db"),
        ("KEYART_DATABASE_URL", "postgresql+psycopg2://somewhere/db"),
        ("KEYART_DATABASE_URL", "postgresql+psycopg_async://somewhere/db"),
        ("KEYART_DATABASE_URL", "not a url"),
        ("KEYART_VW_ARGS", "--cb_adf"),
        ("KEYART_SECRET_KEY", "short"),
        ("KEYART_POLICY_POLL", "0"),
        # The poller busy-looped on these, or its thread died of an OverflowError.
        ("KEYART_POLICY_POLL", "nan"),
        ("KEYART_POLICY_POLL", "inf"),
        ("KEYART_POLICY_POLL", "1e-300"),
        # Never checked: the learner spun between passes.
        ("KEYART_LEARN_INTERVAL", "nan"),
        ("KEYART_LEARN_INTERVAL", "-1"),
        ("KEYART_LEARN_INTERVAL", "0"),
        # Start-up died of OverflowError / ValueError converting to int.
        ("KEYART_MAX_UPLOAD_BYTES", "nan"),
        ("KEYART_MAX_UPLOAD_BYTES", "inf"),
        ("KEYART_MAX_UPLOAD_BYTES", "1e400"),
        # Every upload was refused "within nan seconds".
        ("KEYART_PIPELINE_TIMEOUT", "nan"),
        # Every decision with a `user` was a 500 (OverflowError seeding the draw).
        ("KEYART_STICKY_PERIOD", "1e-300"),
        ("KEYART_STICKY_PERIOD", "inf"),
        ("KEYART_DECISION_COMMIT_DELAY", "nan"),
        # Every page would fall back (0), or wait as long as a hung database (inf).
        ("KEYART_DECISION_TIMEOUT", "0"),
        ("KEYART_DECISION_TIMEOUT", "inf"),
        ("KEYART_DECISION_TIMEOUT", "nan"),
        ("KEYART_PROBABILITY_FLOOR", "inf"),
        ("KEYART_PIN_WORKERS", "sometimes"),
    ],
)
def test_bad_settings_stop_with_their_name(
    cli_env: dict[str, str], variable: str, value: str
) -> None:
    result = run({**cli_env, variable: value}, "learn", "--once")
    assert_one_line_error(result, variable)


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    """Settings on their own: no secret key (so one is written into the var directory)."""
    return {
        "KEYART_VAR_DIR": str(tmp_path / "var"),
        "KEYART_DATABASE_URL": f"sqlite:///{tmp_path / 'keyart.db'}",
        "KEYART_SECRET_KEY": "",
        **values,
    }


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("KEYART_VAR_DIR", "{file}"),
        ("KEYART_VAR_DIR", "{file}/var"),
        ("KEYART_MEDIA_DIR", "{file}"),  # uploads were 500s: NotADirectoryError
        ("KEYART_DATABASE_URL", "sqlite:///{file}/keyart.db"),
        ("KEYART_DATABASE_URL", "sqlite:///{directory}"),
    ],
)
def test_paths_that_cannot_be_used_stop_with_their_name(
    tmp_path: Path, variable: str, value: str
) -> None:
    (tmp_path / "a-file").write_text("not a directory")
    (tmp_path / "a-directory").mkdir()
    value = value.format(file=tmp_path / "a-file", directory=tmp_path / "a-directory")
    for args in (("db", "upgrade"), ("learn", "--once")):
        assert_one_line_error(run(_env(tmp_path, **{variable: value}), *args), variable)


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    env = _env(tmp_path, KEYART_DATABASE_URL="postgresql+psycopg://keyart@127.0.0.1:1/keyart")
    for args in (("db", "upgrade"), ("learn", "--once"), ("demo",)):
        assert_one_line_error(run(env, *args), "database error", "127.0.0.1", "port 1")


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_an_unmigrated_database_says_to_upgrade_it(
    request: pytest.FixtureRequest, tmp_path: Path, backend: str
) -> None:
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'empty.db'}"
        else:
            request.getfixturevalue("postgres_server")  # skips (or fails) without a server
            url = stack.enter_context(scratch_database(POSTGRES_URL, "keyart_test"))
        env = _env(tmp_path, KEYART_DATABASE_URL=url)
        for args in (("learn", "--once"), ("demo",), ("editor", "create", "a@example.com")):
            assert_one_line_error(run(env, *args), "no keyart schema", "keyart db upgrade")
        assert run(env, "db", "upgrade").exit_code == 0
        assert run(env, "learn", "--once").exit_code == 0


def test_a_database_behind_the_schema_says_to_upgrade_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    with engine.begin() as connection:
        config = alembic_config(url)
        config.attributes["connection"] = connection
        command.upgrade(config, "0005")
    engine.dispose()
    env = _env(tmp_path, KEYART_DATABASE_URL=url)
    assert_one_line_error(run(env, "learn", "--once"), "older schema", "keyart db upgrade")
    assert run(env, "db", "upgrade").exit_code == 0
    # A revision this keyart does not know is a newer release's: let through.
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'from-the-future'"))
    engine.dispose()
    assert run(env, "learn", "--once").exit_code == 0


def test_serve_answers_and_its_metrics_add_up_every_worker(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    # A real `keyart serve`: its gunicorn workers write their metrics to files that /metrics
    # adds up, which works only if no metric exists before the CLI names the directory.
    import json
    import urllib.request

    assert run(cli_env, "db", "upgrade").exit_code == 0
    serve = ("--no-learner", "--workers", "2")
    with LiveServer(cli_env, tmp_path / "serve.log", serve) as server:
        body = json.dumps({"titles": ["no-such-title"]}).encode()
        for _ in range(6):  # over fresh connections: the kernel spreads them over workers
            decide = urllib.request.Request(
                f"{server.base}/api/v1/decisions", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(decide, timeout=10) as answer:
                assert json.load(answer)["decisions"][0]["error"]["code"] == "unknown_title"
        with urllib.request.urlopen(f"{server.base}/metrics", timeout=10) as scraped:
            metrics = scraped.read().decode()
        assert 'keyart_decisions_total{outcome="unknown_title"} 6.0' in metrics, metrics
        assert 'keyart_request_seconds_count{endpoint="api.decisions"} 6.0' in metrics


# The address rule does not depend on the database, and loading the demo catalog takes a while.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_demo_editor_keyart_demo_prints_can_sign_in_to_the_studio(
    cli_env: dict[str, str], client: FlaskClient
) -> None:
    # `make run` once printed demo@keyart.local, which the sign-in form's email check refuses.
    # (One small preset: the renditions are beside the point here.)
    result = run({**cli_env, "KEYART_PRESETS": "boxart=2:3@342"}, "demo")
    assert result.exit_code == 0, result.output
    found = re.search(r"demo editor: (\S+)\s+password: (\S+)", result.output)
    assert found, result.output
    email, password = found.groups()
    page = client.get("/studio/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
    assert csrf
    response = client.post(
        "/studio/login", data={"email": email, "password": password, "csrf_token": csrf[1]}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    assert "Signed in as " + email in client.get("/studio/").get_data(as_text=True)


@pytest.mark.parametrize("email", ["someone@keyart.local", "someone@host.test", "no-at-sign"])
def test_editor_create_refuses_an_address_the_studio_would_refuse(
    cli_env: dict[str, str], email: str
) -> None:
    result = run(cli_env, "editor", "create", email)
    assert result.exit_code != 0 and "is not an email address" in result.output, result.output


def _children(pid: int) -> dict[int, str]:
    """The processes whose parent is `pid`, with their command lines (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_demo_traffic_runs_beside_the_server_and_stops_with_it(
    cli_env: dict[str, str], database_url: str
) -> None:
    """`make run`: the demo catalog, then `keyart serve --demo-traffic`, whose simulated
    audience asks the public API for artwork, clicks, and the embedded learner learns."""
    import urllib.request

    from sqlalchemy import create_engine, func, select

    from bandit.models import Decision, PolicySnapshot, Reward

    env = {
        **cli_env,
        "KEYART_PRESETS": "boxart=2:3@342",
        "KEYART_REWARD_WAIT": "1",
        "KEYART_REWARD_SETTLE": "0",
        "KEYART_LEARN_INTERVAL": "0.5",
    }
    assert run(env, "db", "upgrade").exit_code == 0
    assert run(env, "demo").exit_code == 0
    port = free_port()
    serve = ["serve", "--workers", "1", "--port", str(port), "--demo-traffic"]
    process = subprocess.Popen(
        [sys.executable, "-m", "web.cli", *serve],
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = create_engine(database_url)
    try:
        deadline = time.monotonic() + 120
        while True:
            with engine.connect() as connection:
                decisions = connection.scalar(select(func.count()).select_from(Decision))
                clicks = connection.scalar(select(func.count()).select_from(Reward))
                learned = connection.scalar(select(func.max(PolicySnapshot.version)))
            if decisions and clicks and learned:
                break
            assert time.monotonic() < deadline and process.poll() is None, (decisions, learned)
            time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as ready:
            assert ready.status == 200
        audience = [pid for pid, cmd in _children(process.pid).items() if "--traffic" in cmd]
        assert len(audience) == 1
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        finally:
            process.kill()
            engine.dispose()
    assert not Path(f"/proc/{audience[0]}").exists(), "the audience outlived the server"
