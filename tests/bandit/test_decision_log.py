"""Group commit: requests' decisions share commits, and each write returns only once its
own rows are committed."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, func, select, text
from sqlalchemy.orm import Session

from bandit import decision_log
from bandit.decision_log import DecisionLogError, GroupCommitLog, StaleWrite
from bandit.decisions import DecisionRecord, DecisionRequest, choose
from bandit.features import Candidate
from bandit.models import CandidateSet, Decision
from bandit.policy import Policy
from tests.helpers import poster_bytes, runtime, upload
from web.auth import create_editor
from web.config import DEFAULT_VW_ARGS
from web.db import make_engine, upgrade

POLICY = Policy(DEFAULT_VW_ARGS)
CANDIDATES = [Candidate("a", {"tag": ["x"]}), Candidate("b", {"tag": ["y"]})]


def _page(titles: int, seed: int) -> list[DecisionRecord]:
    requests = [DecisionRequest(f"title-{n}", CANDIDATES) for n in range(titles)]
    return choose(POLICY, requests, random.Random(seed))


def _hold_write_lock(engine: Engine):  # type: ignore[no-untyped-def]
    """A connection that keeps every other writer of `decisions` waiting until rolled back."""
    connection = engine.connect()
    if engine.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.execute(text("LOCK TABLE decisions IN EXCLUSIVE MODE"))
    return connection


def _named_writer(server: str, guard: str) -> tuple[str, GroupCommitLog]:
    """A log on `server` whose writer's connection carries a name of its own, to find it by
    in `pg_stat_activity`."""
    name = f"keyart-writer-{random.randrange(1 << 30)}"
    writer = make_engine(f"{server}?application_name={name}")
    return name, GroupCommitLog(writer, guard=guard, owns_engine=True)


def _wait_for(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


@pytest.mark.parametrize(("max_rows", "commits"), [(2000, 2), (25, 6)])
def test_waiting_requests_share_commits(
    app: Flask, session: Session, max_rows: int, commits: int
) -> None:
    engine = runtime(app).engine
    log = GroupCommitLog(engine, max_rows=max_rows)
    pages = [_page(10, seed) for seed in range(10)]
    returned: dict[int, list[str]] = {}

    def request(n: int) -> None:
        log.write(pages[n])
        # Returned means committed: a fresh session sees every row of this request.
        with runtime(app).sessions() as fresh:
            returned[n] = list(
                fresh.scalars(
                    select(Decision.event_id).where(
                        Decision.event_id.in_([d.event_id for d in pages[n]])
                    )
                )
            )

    lock = _hold_write_lock(engine)
    threads = [threading.Thread(target=request, args=(n,)) for n in range(10)]
    threads[0].start()
    _wait_for(lambda: log.queued == 0)  # the writer took request 0 and waits on the lock
    for thread in threads[1:]:
        thread.start()
    _wait_for(lambda: log.queued == 9)
    assert not returned  # nobody returns before the commit that carries them
    lock.rollback()
    lock.close()
    for thread in threads:
        thread.join(timeout=30)
    log.stop(timeout=30)

    assert log.commits == commits
    assert {n: len(ids) for n, ids in returned.items()} == {n: 10 for n in range(10)}
    assert session.scalar(select(Decision).where(Decision.event_id == pages[3][0].event_id))


def test_a_failed_commit_fails_every_request_in_it(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'no-schema.db'}")  # no decisions table
    log = GroupCommitLog(engine)
    with pytest.raises(DecisionLogError, match="unavailable"):
        log.write(_page(3, 1))
    log.stop(timeout=30)
    engine.dispose()


def test_a_write_too_large_for_one_statement_goes_in_whole_or_not_at_all(
    app: Flask, session: Session
) -> None:
    # 1,200 rows take SQLite several statements; the last row repeats the first's event id,
    # so the last statement fails, and the ones before it must not stay committed.
    log = GroupCommitLog(runtime(app).engine, guard=GUARD)
    page = _page(600, 1) + _page(600, 2)
    page[-1].event_id = page[0].event_id
    expect = session.scalar(text(GUARD))
    with pytest.raises(DecisionLogError, match="unavailable"):
        log.write(page, expect=expect)
    ids = [d.event_id for d in page]
    assert session.scalar(select(func.count()).where(Decision.event_id.in_(ids))) == 0
    # The same rows with ids of their own then go in, all of them.
    page[-1].event_id = uuid.uuid4().hex
    log.write(page, expect=expect)
    log.stop(timeout=30)
    ids = [d.event_id for d in page]
    assert session.scalar(select(func.count()).where(Decision.event_id.in_(ids))) == 1200


def test_decisions_api_falls_back_when_the_log_is_down(app: Flask, client: FlaskClient) -> None:
    broken = make_engine("sqlite:///" + str(Path(runtime(app).settings.var_dir) / "empty.db"))
    runtime(app).decision_log = GroupCommitLog(broken)

    with runtime(app).sessions() as session:
        _, token = create_editor(session, "e@example.com", password="correct horse")
        session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    assert (
        client.post("/api/v1/titles", json={"id": "s", "name": "S"}, headers=headers).status_code
        == 201
    )
    assert upload(client, headers, "s", poster_bytes("S")).status_code == 201
    response = client.post("/api/v1/decisions", json={"titles": ["s"]})
    # The title was read; only its decision could not be logged: the editor's default is
    # shown, marked as not logged (tests/web/test_fallback.py has the rest).
    assert response.status_code == 200
    assert response.headers["Keyart-Fallback"] == "1"
    (answer,) = response.json["decisions"]
    assert answer["mode"] == "fallback" and answer["event_id"] is None
    broken.dispose()


def test_more_concurrent_requests_than_pooled_connections(
    app: Flask, client: FlaskClient, editor_headers: dict[str, str]
) -> None:
    """Regression: request threads waiting on the writer held every pooled connection, so the
    writer could not get one for its next commit and they all timed out together."""
    client.post("/api/v1/titles", json={"id": "s", "name": "S"}, headers=editor_headers)
    for palette in ("dark", "bright"):
        response = upload(client, editor_headers, "s", poster_bytes("S", palette=palette))
        assert response.status_code == 201
    statuses: list[int] = []

    def request() -> None:
        with app.test_client() as own:
            statuses.append(own.post("/api/v1/decisions", json={"titles": ["s"]}).status_code)

    # Hold the database's write lock so every request is in flight at once: more of them
    # (24) than the request pool has connections (5 + 10 overflow).
    lock = _hold_write_lock(runtime(app).engine)
    threads = [threading.Thread(target=request) for _ in range(24)]
    for thread in threads:
        thread.start()
    _wait_for(lambda: runtime(app).decision_log.waiting == 24)
    lock.rollback()
    lock.close()
    for thread in threads:
        thread.join(timeout=60)
    assert statuses == [200] * 24


def test_a_write_that_cannot_commit_in_time_fails_and_is_not_logged(
    app: Flask, session: Session
) -> None:
    engine = runtime(app).engine
    log = GroupCommitLog(engine, timeout_seconds=0.5)
    first, late = _page(2, 1), _page(2, 2)
    lock = _hold_write_lock(engine)
    errors: list[Exception] = []

    def write(page: list[DecisionRecord]) -> None:
        try:
            log.write(page)
        except DecisionLogError as error:
            errors.append(error)

    started = time.monotonic()
    holder = threading.Thread(target=write, args=(first,))
    holder.start()
    _wait_for(lambda: log.queued == 0 and log.waiting == 1)  # `first` is in the blocked commit
    waiter = threading.Thread(target=write, args=(late,))
    waiter.start()
    # Both give up while the lock is still held: the one queued behind the blocked commit is
    # withdrawn, and the blocked commit itself gives up at the write's timeout (PostgreSQL's
    # statement_timeout, SQLite's busy timeout) rather than waiting as long as the lock does.
    waiter.join(timeout=30)
    holder.join(timeout=30)
    waited = time.monotonic() - started
    assert len(errors) == 2 and waited < 5, (errors, waited)
    lock.rollback()
    lock.close()
    logged = set(session.scalars(select(Decision.event_id)))
    assert not {d.event_id for d in first + late} & logged
    # Once the lock is gone the same writer commits again.
    again = _page(1, 3)
    log.write(again)
    log.stop(timeout=30)
    session.expire_all()
    assert {d.event_id for d in again} <= set(session.scalars(select(Decision.event_id)))


def test_an_idle_writer_lets_go_of_its_connection_and_comes_back(
    app: Flask, session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    log = GroupCommitLog(runtime(app).engine, idle_seconds=0.05)
    log.write(_page(2, 1))
    _wait_for(lambda: not log.running)  # exited, its connection closed
    log.write(_page(2, 2))  # a new writer starts
    assert log.commits == 2
    log.stop(timeout=30)
    assert session.scalar(select(func.count()).select_from(Decision)) == 4
    # Going idle is quiet (a WAL checkpoint sent to PostgreSQL once failed there, logged).
    assert [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")] == []


def test_an_idle_writer_wakes_for_the_next_write_at_once(app: Flask, session: Session) -> None:
    # The writer sleeps up to `idle_seconds` waiting for work; a write must wake it, however
    # the two meet (before it sleeps or while it does), or the page waits out the sleep.
    log = GroupCommitLog(runtime(app).engine, idle_seconds=120)
    for seed in range(1, 6):
        later = threading.Thread(target=log.write, args=(_page(2, seed),))
        later.start()
        later.join(timeout=30)
        assert not later.is_alive(), f"write {seed} waited for the idle writer"
        if seed % 2:
            time.sleep(0.05)  # asleep by now, rather than still answering the last
    assert log.commits == 5
    log.stop(timeout=30)
    assert not log.running
    assert session.scalar(select(func.count()).select_from(Decision)) == 10


def test_candidates_are_stored_once_per_set_whoever_writes_them(
    app: Flask, session: Session
) -> None:
    engine = runtime(app).engine
    other = [Candidate("c", {"tag": ["z"]}), *CANDIDATES]
    pages = [
        _page(3, 1),
        choose(POLICY, [DecisionRequest("title-9", other)], random.Random(2)),
        _page(2, 3),
    ]
    first = GroupCommitLog(engine)
    for page in pages[:2]:
        first.write(page)
    first.stop(timeout=30)
    # A second writer (another process, or this one restarted) knows none of them stored.
    second = GroupCommitLog(engine)
    second.write(pages[2])
    second.stop(timeout=30)

    sets = session.scalars(select(CandidateSet)).all()
    assert sorted(len(s.candidates) for s in sets) == [2, 3]
    for page in pages:
        for record in page:
            decision = session.scalar(select(Decision).where(Decision.event_id == record.event_id))
            assert decision is not None
            assert decision.candidates == list(record.candidates)


def _running_sqlite_log(tmp_path: Path) -> tuple[Path, Engine, GroupCommitLog]:
    """A log on a SQLite file, its writer running after a first page."""
    path = tmp_path / "keyart.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    log = GroupCommitLog(engine)
    log.write(_page(2, 1))
    return path, engine, log


def test_checkpoints_take_the_writers_lock(tmp_path: Path) -> None:
    """An idle writer's last checkpoint finishes while no other process's writer is appending
    to the WAL, so it reaches the WAL's end (and the next commit starts the WAL again from
    the top)."""
    path, engine, log = _running_sqlite_log(tmp_path)
    with open(f"{path}-writer.lock", "a") as other_writer:
        fcntl.flock(other_writer, fcntl.LOCK_EX)
        log.stop(timeout=0.5)  # an idle writer checkpoints before it exits
        assert log.running, "the checkpoint went ahead while another writer held the lock"
        fcntl.flock(other_writer, fcntl.LOCK_UN)
    _wait_for(lambda: not log.running)
    with engine.connect() as connection:
        busy, frames, copied = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
    assert busy == 0 and frames == copied
    engine.dispose()


def _append_marker(path: Path) -> bytes:
    """Commit a row into the WAL as another process's writer would (a candidate set whose id
    is new), without checkpointing it; its id, to look for in the database file."""
    marker = uuid.uuid4().hex
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA wal_autocheckpoint=0")
        connection.execute(
            "INSERT INTO candidate_sets (id, candidates, created_at) VALUES (?, '[]', ?)",
            (marker, "2026-12-08 00:00:00.000000"),
        )
    finally:
        connection.close()
    return marker.encode()


def _copied(path: Path, marker: bytes) -> bool:
    """Whether the database file itself (not its WAL) holds `marker`: checkpointed."""
    return marker in path.read_bytes()


@pytest.mark.parametrize("restart_frames", [4096, 1])
def test_checkpoints_copy_the_wal_while_other_writers_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restart_frames: int
) -> None:
    """While a writer runs, a thread of its own copies the WAL back into the database every
    50 ms without waiting for the writers' lock, held here as another process's writer
    holds it; only once the WAL has grown to `_RESTART_FRAMES` does a checkpoint also wait
    for the lock, to finish the copy so that the next commit starts the WAL from the top."""
    monkeypatch.setattr(decision_log, "_RESTART_FRAMES", restart_frames)
    path, engine, log = _running_sqlite_log(tmp_path)
    with open(f"{path}-writer.lock", "a") as other_writer:
        fcntl.flock(other_writer, fcntl.LOCK_EX)
        first = _append_marker(path)
        _wait_for(lambda: _copied(path, first), timeout=3)
        second = _append_marker(path)
        if restart_frames > 1:
            _wait_for(lambda: _copied(path, second), timeout=3)
        else:
            time.sleep(0.3)  # six checkpoints' time
            assert not _copied(path, second), "a checkpoint due to restart the WAL did not wait"
        fcntl.flock(other_writer, fcntl.LOCK_UN)
    _wait_for(lambda: _copied(path, second), timeout=3)
    log.stop(timeout=30)
    assert not log.running
    assert "keyart-wal-checkpoints" not in [t.name for t in threading.enumerate()]
    engine.dispose()


def test_checkpoints_that_cannot_connect_try_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Under steady load the writer never goes idle to start a new checkpoints' thread, so one
    that cannot connect (here: its engine's pool is all held) tries again at its next turn."""
    path = tmp_path / "keyart.db"
    setup = make_engine(f"sqlite:///{path}")
    upgrade(setup)
    setup.dispose()
    engine = create_engine(f"sqlite:///{path}", pool_size=2, max_overflow=0, pool_timeout=0.05)
    held = engine.raw_connection()  # the writer takes the pool's other connection
    log = GroupCommitLog(engine)
    log.write(_page(2, 1))
    _wait_for(lambda: "the WAL's checkpoints cannot connect" in caplog.text)
    held.close()  # back to the pool, for the checkpoints' next turn
    with open(f"{path}-writer.lock", "a") as other_writer:
        fcntl.flock(other_writer, fcntl.LOCK_EX)
        marker = _append_marker(path)
        _wait_for(lambda: _copied(path, marker), timeout=3)
        fcntl.flock(other_writer, fcntl.LOCK_UN)
    log.stop(timeout=30)
    engine.dispose()


GUARD = "SELECT version FROM catalog_version WHERE id = 1"


def _behind_a_held_commit(
    log: GroupCommitLog, engine: Engine, threads: list[threading.Thread]
) -> None:
    """Run `threads` (each one write) so that the first's commit is held up by a lock while
    the others queue, then let it go: the others are taken as one batch."""
    lock = _hold_write_lock(engine)
    threads[0].start()
    _wait_for(lambda: log.queued == 0 and log.waiting == 1)
    for thread in threads[1:]:
        thread.start()
    _wait_for(lambda: log.queued == len(threads) - 1)
    lock.rollback()
    lock.close()
    for thread in threads:
        thread.join(timeout=30)


def test_a_write_made_with_a_stale_guard_value_is_refused_and_the_rest_are_logged(
    app: Flask, session: Session
) -> None:
    engine = runtime(app).engine
    log = GroupCommitLog(engine, guard=GUARD)
    current = session.scalar(text(GUARD))
    first, fresh, stale = _page(2, 1), _page(3, 2), _page(4, 3)
    outcomes: dict[str, object] = {}

    def request(name: str, page: list[DecisionRecord], expect: int) -> None:
        try:
            log.write(page, expect=expect)
            outcomes[name] = "logged"
        except StaleWrite as refused:
            outcomes[name] = refused.current

    # The fresh and the stale write wait together behind the first, so one batch holds both.
    _behind_a_held_commit(
        log,
        engine,
        [
            threading.Thread(target=request, args=("first", first, current)),
            threading.Thread(target=request, args=("fresh", fresh, current)),
            threading.Thread(target=request, args=("stale", stale, current - 1)),
        ],
    )
    log.stop(timeout=30)

    assert outcomes == {"first": "logged", "fresh": "logged", "stale": current}
    assert log.refused == 1 and log.guarded == current
    logged = set(session.scalars(select(Decision.event_id)))
    assert {d.event_id for d in first + fresh} <= logged
    assert not {d.event_id for d in stale} & logged


@pytest.mark.postgres
def test_decisions_logged_as_the_catalog_changes_wait_for_the_change_and_are_refused(
    postgres_server: str,
) -> None:
    # An editor's change has bumped the catalog version but not committed when a batch
    # decided from the old catalog is written. Read before the write, the version still
    # looked current, and the rows went in after the change had committed: decisions from
    # the old catalog logged, and answered, after it. Checked in the INSERT, the rows wait
    # for the change and are refused.
    name, log = _named_writer(postgres_server, GUARD)
    admin = make_engine(postgres_server)
    page = _page(3, 1)
    outcome: list[object] = []

    def request(expect: int) -> None:
        try:
            log.write(page, expect=expect)
            outcome.append("logged")
        except StaleWrite as refused:
            outcome.append(refused.current)

    with admin.connect() as editor:
        before = editor.execute(text(GUARD)).scalar_one()
        editor.execute(text("UPDATE catalog_version SET version = version + 1 WHERE id = 1"))
        thread = threading.Thread(target=request, args=(before,))
        thread.start()
        with admin.connect() as watcher:

            def writer_waits_for_a_lock() -> bool:
                return bool(
                    watcher.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                            " :name AND wait_event_type = 'Lock'"
                        ),
                        {"name": name},
                    ).scalar_one()
                )

            _wait_for(writer_waits_for_a_lock)
        assert thread.is_alive()
        editor.commit()
    thread.join(timeout=30)
    log.stop(timeout=30)
    with admin.connect() as connection:
        logged = connection.execute(
            select(func.count())
            .select_from(Decision)
            .where(Decision.event_id.in_([d.event_id for d in page]))
        ).scalar_one()
    admin.dispose()
    assert outcome == [before + 1]
    assert logged == 0
    assert log.refused == 1 and log.guarded == before + 1


@pytest.mark.postgres
def test_a_catalog_change_holds_decision_logging_up_only_while_it_commits(
    postgres_server: str,
) -> None:
    # An editor's transaction has changed the catalog and not committed yet (a reprocess
    # still uploading renditions, say). Decisions are logged meanwhile: the version is bumped
    # as the change commits, not as it is made, so only its commit holds the writer up.
    # Once it has committed, a write decided before it is refused.
    admin = make_engine(postgres_server)
    log = GroupCommitLog(
        make_engine(postgres_server), guard=GUARD, owns_engine=True, timeout_seconds=3
    )
    meanwhile, after = _page(2, 1), _page(2, 2)
    title = f"title-{uuid.uuid4().hex}"
    try:
        with admin.connect() as editor:
            before = editor.execute(text(GUARD)).scalar_one()
            editor.execute(
                text(
                    "INSERT INTO titles (id, name, genres, created_at)"
                    " VALUES (:id, 'New', '[]', now())"
                ),
                {"id": title},
            )
            # Held up until the editor commits, it would time out (DecisionLogError).
            log.write(meanwhile, expect=before)
            editor.commit()
        with pytest.raises(StaleWrite) as refused:
            log.write(after, expect=before)
    finally:
        log.stop(timeout=30)
    with admin.connect() as connection:
        logged = set(
            connection.execute(
                select(Decision.event_id).where(
                    Decision.event_id.in_([d.event_id for d in meanwhile + after])
                )
            ).scalars()
        )
        connection.execute(text("DELETE FROM titles WHERE id = :id"), {"id": title})
        connection.commit()
    admin.dispose()
    assert refused.value.current == before + 1
    assert logged == {d.event_id for d in meanwhile}


def test_a_value_too_long_for_its_column_is_never_cut_short(app: Flask, session: Session) -> None:
    # Whatever way a commit sends its rows, the column's own check must refuse the page
    # (nothing of it logged) rather than store the value cut to fit (a one-statement commit
    # from arrays cast to VARCHAR(n)[] did: see the README's performance section).
    engine = runtime(app).engine
    log = GroupCommitLog(engine)
    page = _page(3, 7)
    page[1].chosen_id = "x" * 300  # the column holds 256
    ids = [d.event_id for d in page]
    if engine.dialect.name == "sqlite":  # which keeps strings whole whatever their type says
        log.write(page)
        stored = session.scalar(select(Decision.chosen_id).where(Decision.event_id == ids[1]))
        assert stored == "x" * 300
    else:
        with pytest.raises(DecisionLogError):
            log.write(page)
        assert session.scalar(select(func.count()).where(Decision.event_id.in_(ids))) == 0
    log.stop(timeout=30)


def test_after_a_shared_commit_the_writer_waits_for_more_to_join_the_next(
    app: Flask, session: Session
) -> None:
    engine = runtime(app).engine
    log = GroupCommitLog(engine, delay_seconds=60.0)
    log.write(_page(1, 1))  # alone: no wait before it, and it was not shared
    assert log.commits == 1

    # Two requests queued behind one held up by a lock share the next commit...
    _behind_a_held_commit(
        log,
        engine,
        [threading.Thread(target=log.write, args=(_page(1, seed),)) for seed in (2, 3, 6)],
    )
    assert log.commits == 3

    # ...so the writer lets the next one wait for company: a request arriving while it
    # waits shares the commit rather than needing one of its own. With as many waiting as
    # shared the last commit, it stops waiting: both are answered long before the delay.
    second = [threading.Thread(target=log.write, args=(_page(1, seed),)) for seed in (4, 5)]
    second[0].start()
    _wait_for(lambda: log.queued == 1)
    second[1].start()
    for thread in second:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in second)
    assert log.commits == 4
    log.stop(timeout=30)
    assert not log.running


@pytest.mark.postgres
def test_a_connection_lost_while_idle_is_replaced_before_the_next_commit(
    postgres_server: str,
) -> None:
    # The server restarted, or the link dropped, between two commits: the writer notices
    # before the batch's INSERT and takes a new connection, so no request fails for it.
    name, log = _named_writer(postgres_server, "SELECT 1")
    admin = make_engine(postgres_server)
    first, second = _page(2, 1), _page(2, 2)
    of_the_writer = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name")
    try:
        log.write(first)
        with admin.connect() as connection:
            killed = connection.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :name"
                ),
                {"name": name},
            ).scalar_one()
            connection.commit()
            assert killed == 1
            # pg_terminate_backend only signals: lost while idle means the backend is gone
            # (and has said so) before the next write, not still ending as it arrives.
            deadline = time.monotonic() + 10
            while connection.execute(of_the_writer, {"name": name}).scalar_one():
                assert time.monotonic() < deadline, "the writer's backend did not end"
                connection.commit()
                time.sleep(0.01)
        log.write(second)  # raised DecisionLogError: the first commit after it used the dead one
        with admin.connect() as connection:
            ids = {d.event_id for d in first + second}
            logged = connection.execute(
                select(func.count()).select_from(Decision).where(Decision.event_id.in_(ids))
            ).scalar_one()
    finally:
        log.stop(timeout=30)
        admin.dispose()
    assert logged == 4


_KILLED_AFTER_WRITE = """
import os, random, signal, sys
from bandit.decision_log import GroupCommitLog
from bandit.decisions import DecisionRequest, choose
from bandit.features import Candidate
from bandit.policy import Policy
from web.config import DEFAULT_VW_ARGS
from web.db import make_engine

candidates = [Candidate("a", {"tag": ["x"]}), Candidate("b", {"tag": ["y"]})]
requests = [DecisionRequest(f"title-{n}", candidates) for n in range(40)]
page = choose(Policy(DEFAULT_VW_ARGS), requests, random.Random(5))
log = GroupCommitLog(make_engine(sys.argv[1]))
log.write(page)  # returns once committed: the page would now be answered
print(" ".join(d.event_id for d in page), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no checkpoint, no clean close
"""


def test_an_answered_page_survives_the_process_being_killed(
    database_url: str, tmp_path: Path
) -> None:
    """On SQLite the writer syncs the WAL at checkpoints, not at every commit (NORMAL): a
    committed page is in the WAL when `write` returns, and a process that dies right after,
    before any checkpoint, loses none of it. (A power cut can lose the commits since the last
    checkpoint; README's performance section says so.)"""
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_AFTER_WRITE)
    done = subprocess.run(
        [sys.executable, str(script), database_url],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    answered = done.stdout.split()
    assert len(answered) == 40
    engine = make_engine(database_url)
    with engine.connect() as connection:
        logged = connection.execute(
            select(Decision.event_id).where(Decision.event_id.in_(answered))
        ).scalars()
        assert sorted(logged) == sorted(answered)
    engine.dispose()


@pytest.mark.parametrize(("asked", "pragma"), [({}, 1), ({"synchronous": "FULL"}, 2)])
def test_the_sqlite_writer_syncs_as_asked(
    tmp_path: Path, asked: dict[str, str], pragma: int
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'keyart.db'}")
    upgrade(engine)
    connection = GroupCommitLog(engine, **asked)._connect()  # type: ignore[arg-type]
    try:
        (value,) = connection.driver_connection.execute("PRAGMA synchronous").fetchone()  # type: ignore[union-attr]
    finally:
        connection.invalidate()
    engine.dispose()
    assert value == pragma
    with pytest.raises(ValueError, match="NORMAL or FULL"):
        GroupCommitLog(engine, synchronous="OFF")
