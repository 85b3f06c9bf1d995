"""Faults under load, on a real PostgreSQL server of the test's own: the server is stopped and
started while several client processes ask for pages and send clicks, and a serving worker
is SIGKILLed. Then: no 5xx but the documented 503s, fallback answers (never with an event id)
during the outage, logged answers again after it without a restart, every answer with an
event id in the log exactly once, every accepted event stored exactly once, and the model
learned through all of it equal to one learned from the same log in a single pass.

The leading learner is SIGKILLed too, while a standby `keyart learn` runs beside the
server's own: the other takes over, and the model still equals the single pass.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, func, select, text

from bandit.leadership import Leader, current_leader
from bandit.models import Decision, Reward
from bandit.snapshots import load_latest, serving_lineage
from tests.bandit.world import weights
from tests.conftest import REQUIRE_POSTGRES
from tests.live import ROOT, LiveServer
from tests.private_postgres import PrivateCluster, private_cluster, server_binaries
from web.db import make_sessionmaker

TITLES_PER_PAGE = 4
CLIENTS = 3
# Longer than the outage, so a click retried through it still falls in its window.
REWARD_WAIT = 12.0


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    bin_dir = server_binaries()
    if bin_dir is None:
        message = "no PostgreSQL server binaries under /usr/lib/postgresql to start a cluster"
        if REQUIRE_POSTGRES:
            pytest.fail(message)
        pytest.skip(message)
    with private_cluster(bin_dir) as running:
        yield running


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "web.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _call(url: str, body: Any) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


# What a worker killed with a request in it looks like to its client: a refused or reset
# connection, or an answer cut off after its headers (`http.client.IncompleteRead`).
CUT_OFF = (OSError, http.client.HTTPException)


def client(base: str, titles: list[str], stop: Any, ready: Any, out: Any, seed: int) -> None:
    """One client process: pages of titles for a few viewers, a click on about a third of
    the decisions it is shown, each click retried until it is accepted (a 503 says when)."""
    rng = random.Random(seed)
    answers: list[dict[str, Any]] = []
    failures: list[str] = []
    events: list[dict[str, Any]] = []
    clicks: list[str] = []

    def send_clicks() -> None:
        if not clicks:
            return
        try:
            status, headers, body = _call(
                f"{base}/api/v1/events",
                {"events": [{"event_id": e, "type": "click"} for e in clicks]},
            )
        except CUT_OFF as error:
            failures.append(f"events: {type(error).__name__}")
            return
        events.append({"status": status, "retry_after": headers.get("Retry-After")})
        if status == 202:
            for result in body["events"]:
                events.append({"event_id": result["event_id"], "result": result["status"]})
            clicks.clear()

    while not stop.is_set():
        page = {
            "titles": rng.sample(titles, TITLES_PER_PAGE),
            "context": {"segment": rng.choice(["a", "b", "c"])},
            "user": f"viewer-{rng.randrange(40)}",
        }
        started = time.time()
        try:
            status, headers, body = _call(f"{base}/api/v1/decisions", page)
        except CUT_OFF as error:  # a worker killed with the request in it
            failures.append(f"decisions: {type(error).__name__}")
            continue
        answers.append(
            {
                "started": started,
                "ended": time.time(),
                "status": status,
                "fallback": headers.get("Keyart-Fallback"),
                "decisions": body.get("decisions") if status == 200 else body,
            }
        )
        if len(answers) == 1:
            ready.put(seed)
        if status == 200:
            clicks.extend(
                d["event_id"]
                for d in body["decisions"]
                if d.get("event_id") and rng.random() < 0.35
            )
        send_clicks()
        time.sleep(0.01)
    deadline = time.time() + 60
    while clicks and time.time() < deadline:
        send_clicks()
        time.sleep(0.2)
    out.put({"answers": answers, "failures": failures, "events": events, "unsent": clicks})


def _leader(url: str) -> Leader | None:
    engine = create_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return current_leader(session)
    finally:
        engine.dispose()


def _learners(pid: int) -> list[int]:
    """The learner `keyart serve` runs beside its workers."""
    return [p for p, learns in _children(pid) if learns]


def _serving_children(pid: int) -> list[int]:
    """The gunicorn workers under `keyart serve` (not its learner)."""
    return [p for p, learns in _children(pid) if not learns]


def _children(pid: int) -> list[tuple[int, bool]]:
    """Each child of `pid`, and whether it is a learner."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            children.append((int(entry.name), b"learn" in command))
    return children


def test_a_database_outage_and_a_killed_worker_under_load(
    cluster: PrivateCluster, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "KEYART_DATABASE_URL": cluster.url,
        "KEYART_VAR_DIR": str(tmp_path / "var"),
        "KEYART_SECRET_KEY": "outage-test-secret-0123456789",
        # A stopped server refuses connections at once, so the outage falls back whatever
        # this is; longer than production's, so a slow commit on a loaded CI machine is not.
        "KEYART_DECISION_TIMEOUT": "2",
        "KEYART_POLICY_POLL": "0.5",
        "KEYART_LEARN_INTERVAL": "0.5",
        "KEYART_REWARD_WAIT": str(REWARD_WAIT),
        "KEYART_REWARD_SETTLE": "0.5",
        "KEYART_APPRENTICE_EXAMPLES": "0",
        # One rendition per variant: the demo catalog loads in seconds, not a minute and more.
        "KEYART_PRESETS": "boxart=2:3@342",
        "KEYART_LEARNER_TAKEOVER": "3",
    }
    _cli(env, "db", "upgrade")
    _cli(env, "demo")
    engine = create_engine(cluster.url)
    with engine.connect() as connection:
        titles = list(connection.scalars(text("SELECT id FROM titles ORDER BY id")))
    engine.dispose()
    assert len(titles) >= TITLES_PER_PAGE

    server = LiveServer(env, tmp_path / "serve.log", ("--workers", "2"))
    base = server.base
    spawn = multiprocessing.get_context("spawn")
    stop, ready, out = spawn.Event(), spawn.Queue(), spawn.Queue()
    clients = [
        spawn.Process(target=client, args=(base, titles, stop, ready, out, seed))
        for seed in range(CLIENTS)
    ]
    standby = None
    try:
        server.start()
        # A second learner, standing by while the server's own leads.
        with (tmp_path / "standby.log").open("wb") as standby_log:
            standby = subprocess.Popen(
                [sys.executable, "-m", "web.cli", "learn"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=standby_log,
                start_new_session=True,
            )
        # Every worker reads every title before the outage (connections are spread across
        # workers by the kernel: enough of them reach both).
        warm_up = []
        for _ in range(30):
            status, _, body = _call(f"{base}/api/v1/decisions", {"titles": titles})
            assert status == 200
            warm_up += [d["event_id"] for d in body["decisions"]]
        for process in clients:
            process.start()
        for _ in clients:
            ready.get(timeout=120)  # started (spawned processes take seconds to import)
        time.sleep(2)
        cluster.stop()
        stopped = time.time()
        time.sleep(4)
        starting = time.time()
        cluster.start()
        time.sleep(4)
        workers = _serving_children(server.pid)
        assert len(workers) == 2, workers
        os.kill(workers[0], signal.SIGKILL)
        killed = time.time()
        time.sleep(3)
        # The leading learner killed too: the other one takes over.
        leader = _leader(cluster.url)
        assert leader is not None
        os.kill(leader.pid, signal.SIGKILL)
        deadline = time.monotonic() + 4 * 3
        while (now_leads := _leader(cluster.url)) is None or now_leads.pid == leader.pid:
            assert time.monotonic() < deadline, "no learner took over from the one killed"
            time.sleep(0.2)
        assert now_leads.pid in (standby.pid, *_learners(server.pid))
        time.sleep(3)
        stop.set()
        reports = [out.get(timeout=120) for _ in clients]
        for process in clients:
            process.join(timeout=60)
    finally:
        stop.set()
        for process in clients:
            if process.is_alive():
                process.kill()
        server.stop()
        if standby is not None and standby.poll() is None:
            standby.terminate()
            standby.wait(timeout=60)

    answers = [a for r in reports for a in r["answers"]]
    # Only a worker's SIGKILL may cut a request off, and only the few that were in it.
    failures = [f for r in reports for f in r["failures"]]
    assert len(failures) <= 2 * 8 * CLIENTS, failures
    assert {a["status"] for a in answers} == {200}, [a for a in answers if a["status"] != 200][:3]
    during = [a for a in answers if a["started"] > stopped + 0.5 and a["ended"] < starting]
    assert during, [
        (round(a["started"] - stopped, 2), round(a["ended"] - a["started"], 2), a["fallback"])
        for a in answers
        if stopped - 1 < a["started"] < starting + 1
    ]
    for answer in during:
        assert answer["fallback"] == "1"
        assert all(d["event_id"] is None and d["mode"] == "fallback" for d in answer["decisions"])
    # Recovered without a restart: logged answers again, from both workers' replacements.
    after = [a for a in answers if a["started"] > killed + 2]
    assert after and all(a["fallback"] is None for a in after)
    assert any(a["fallback"] is None and a["ended"] < stopped for a in answers)
    for answer in answers:
        logged = [d["event_id"] is not None for d in answer["decisions"]]
        assert all(logged) or not any(logged)  # a page is logged whole, or not at all
        assert (answer["fallback"] == "1") == (not any(logged))

    events = [e for r in reports for e in r["events"]]
    assert {e["status"] for e in events if "status" in e} <= {202, 503}
    assert all(e["retry_after"] for e in events if e.get("status") == 503)
    assert not [c for r in reports for c in r["unsent"]], "clicks were never accepted"
    accepted = [e["event_id"] for e in events if e.get("result") == "accepted"]
    assert {e.get("result") for e in events if "result" in e} <= {"accepted", "duplicate"}

    answered = warm_up + [d["event_id"] for a in answers for d in a["decisions"] if d["event_id"]]
    engine = create_engine(cluster.url)
    with engine.connect() as connection:
        logged = set(connection.scalars(select(Decision.event_id)))
        stored = list(connection.scalars(select(Reward.event_id).where(Reward.type == "click")))
    engine.dispose()  # now, not after the asserts: a connection left to the collector warns
    assert len(answered) == len(set(answered))
    assert set(answered) <= logged
    # Logged but unanswered: only decisions in the killed worker, cut off before answering.
    assert len(logged - set(answered)) <= len(failures) * TITLES_PER_PAGE
    # Every click stored exactly once: those accepted, and those stored by a call whose
    # answer the killed worker never sent, which the client sent again and was told were
    # duplicates.
    duplicates = {e["event_id"] for e in events if e.get("result") == "duplicate"}
    assert len(stored) == len(set(stored))
    assert set(stored) == set(accepted) | duplicates
    assert len(accepted) == len(set(accepted)) and not set(accepted) & duplicates
    assert not duplicates or any(f.startswith("events:") for f in failures)

    # The learner rode out the outage; once every window has closed, it learns the rest.
    time.sleep(REWARD_WAIT + 1)
    _cli(env, "learn", "--once")
    try:
        with make_sessionmaker(engine)() as session:
            lineage = serving_lineage(session)
            assert lineage is not None
            policy, snapshot = load_latest(session, lineage.settings["vw_args"], lineage)
            assert snapshot is not None
            assert snapshot.examples_learned == len(logged)
            learned = weights(policy)
            vw_args = lineage.settings["vw_args"]
    finally:
        engine.dispose()

    # The same log learned in one uninterrupted pass, in a copy of the database.
    admin = create_engine(cluster.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("CREATE DATABASE replay TEMPLATE postgres"))
    admin.dispose()
    replay_url = cluster.url.rsplit("/", 1)[0] + "/replay"
    replay = create_engine(replay_url)
    with replay.begin() as connection:
        connection.execute(text("DELETE FROM policy_snapshots"))
        connection.execute(text("DELETE FROM policy_lineages"))
    _cli({**env, "KEYART_DATABASE_URL": replay_url}, "learn", "--once")
    try:
        with make_sessionmaker(replay)() as session:
            lineage = serving_lineage(session)
            assert lineage is not None and lineage.settings["vw_args"] == vw_args
            policy, snapshot = load_latest(session, vw_args, lineage)
            assert snapshot is not None and snapshot.examples_learned == len(logged)
            assert np.array_equal(weights(policy), learned)
            count = session.scalar(select(func.count()).select_from(Decision))
            assert count == len(logged)
    finally:
        replay.dispose()
