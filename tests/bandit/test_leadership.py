"""One learner at a time, with real `keyart learn` processes: one leads and learns, the
other stands by; SIGKILL the leader (or cut its lock connection, on PostgreSQL) and the
standby takes over within KEYART_LEARNER_TAKEOVER seconds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from bandit.leadership import Leader, current_leader
from bandit.models import Decision, PolicySnapshot
from tests.helpers import Learners, learner_env, poster_bytes, until, upload

TAKEOVER = 3.0


@pytest.fixture
def learners(cli_env: dict[str, str], tmp_path: Path) -> Iterator[Learners]:
    running = Learners(learner_env(cli_env, KEYART_LEARNER_TAKEOVER=str(TAKEOVER)), tmp_path)
    yield running
    running.stop()


def _leader(session: Session) -> Leader | None:
    session.rollback()  # a new snapshot of pg_locks / the lock file each time
    return current_leader(session)


def _decide(client: FlaskClient, count: int) -> None:
    for index in range(count):
        answer = client.post(
            "/api/v1/decisions", json={"titles": ["show"], "user": f"viewer-{index}"}
        )
        assert answer.status_code == 200 and "event_id" in answer.json["decisions"][0]


def _learned_through(session: Session) -> int:
    session.rollback()
    return (
        session.scalar(
            select(PolicySnapshot.cursor).order_by(PolicySnapshot.version.desc()).limit(1)
        )
        or 0
    )


def _last_decision(session: Session) -> int:
    session.rollback()
    return session.scalar(select(func.max(Decision.id))) or 0


def test_one_learner_leads_and_a_standby_takes_over_when_it_is_killed(
    learners: Learners, client: FlaskClient, editor_headers: dict[str, str], session: Session
) -> None:
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    for composition in ("portrait", "landscape"):
        assert (
            upload(client, editor_headers, "show", poster_bytes("L", composition)).status_code
            == 201
        )
    first, second = learners.start(), learners.start()
    leader = until(lambda: _leader(session), 60, "a learner leads")
    assert leader.pid in (first.pid, second.pid)
    leading, standby = (first, second) if leader.pid == first.pid else (second, first)

    _decide(client, 30)
    until(lambda: _learned_through(session) >= _last_decision(session), 60, "leader learns")
    time.sleep(TAKEOVER)  # the standby has had several chances to take the lock meanwhile
    assert _leader(session).pid == leading.pid
    assert learners.passes(leading) and not learners.passes(standby)
    assert sum(p["learned"] for p in learners.passes(leading)) == 30

    # /api/v1/policy names the leader.
    policy = client.get("/api/v1/policy", headers=editor_headers).json
    assert policy["leader"]["pid"] == leading.pid and policy["learner_lag_seconds"] == 0
    scraped = client.get("/metrics").get_data(as_text=True)
    assert f'keyart_learner_leader{{host="{leader.host}",pid="{leading.pid}"}} 1.0' in scraped

    os.killpg(leading.pid, signal.SIGKILL)
    killed = time.monotonic()
    taken = until(
        lambda: (found := _leader(session)) is not None and found.pid == standby.pid,
        TAKEOVER * 3,
        "the standby leads",
    )
    assert taken
    # Within the takeover time; a loaded test machine's scheduler gets as much again.
    assert time.monotonic() - killed <= TAKEOVER * 2
    _decide(client, 20)
    until(lambda: _learned_through(session) >= _last_decision(session), 60, "standby learns")
    # Its log line follows the pass's commit: wait for it too.
    until(
        lambda: sum(p["learned"] for p in learners.passes(standby)) == 20,
        30,
        "the standby logs the 20 decisions it learned",
    )
    assert any(line["message"] == "learner leads" for line in learners.lines(standby))


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # its lock connection
def test_a_leader_that_loses_its_connection_stops_and_another_leads(
    learners: Learners, session: Session
) -> None:
    first, second = learners.start(), learners.start()
    leader = until(lambda: _leader(session), 60, "a learner leads")
    leading = first if leader.pid == first.pid else second
    # The server ends the leader's lock connection, as a lost network link would.
    session.execute(
        text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name LIKE :name"
        ),
        {"name": f"keyart-learner {leading.pid}@%"},
    )
    session.commit()
    until(
        lambda: any(
            line["message"] == "learner lost the lead; standing by"
            for line in learners.lines(leading)
        ),
        TAKEOVER * 2,
        "the old leader notices",
    )
    assert until(lambda: _leader(session), TAKEOVER * 2, "a learner leads again")
    assert first.poll() is None and second.poll() is None  # both still running


def test_learn_once_refuses_while_another_learner_leads(
    learners: Learners, cli_env: dict[str, str], session: Session
) -> None:
    leading = learners.start()
    until(lambda: _leader(session), 60, "the learner leads")
    result = subprocess.run(
        [sys.executable, "-m", "web.cli", "learn", "--once"],
        env=learners.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"{leading.pid}@" in result.stderr and "is the learner now" in result.stderr
    os.killpg(leading.pid, signal.SIGKILL)
    leading.wait(timeout=30)
    until(lambda: _leader(session) is None, TAKEOVER * 2, "no learner leads")
    again = subprocess.run(
        [sys.executable, "-m", "web.cli", "learn", "--once"],
        env=learners.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr


def test_the_learner_backs_off_quietly_while_the_database_is_out(
    learners: Learners, session: Session
) -> None:
    # Nothing listens on port 1: every attempt is refused at once.
    learners.env["KEYART_DATABASE_URL"] = "postgresql+psycopg://postgres@127.0.0.1:1/test"
    learners.env["KEYART_LEARN_INTERVAL"] = "0.05"
    learner = learners.start()

    def warnings() -> list[dict[str, Any]]:
        return [line for line in learners.lines(learner) if line["level"] == "WARNING"]

    until(warnings, 60, "the learner warns")
    time.sleep(3)  # dozens of attempts at the interval, a handful when backing off
    assert learner.poll() is None
    raw = learner.log_path.read_text()  # type: ignore[attr-defined]
    assert "Traceback" not in raw
    assert len(learners.lines(learner)) == len(raw.splitlines())  # JSON, every line
    assert [line["message"].split(":")[0] for line in warnings()] == [
        "database unavailable, learner backing off"
    ]
    assert warnings()[0]["retry_seconds"] > 0
