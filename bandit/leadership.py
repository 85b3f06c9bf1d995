"""One learner at a time, however many processes and hosts run one: who leads, the lock
that decides it, how far behind the log the learner is, and the loop a long-running
learner runs (lead or stand by, learn, log each pass, back off while the database is out).

On PostgreSQL the leader holds a session-level advisory lock on a connection of its own:
the server drops the lock the moment that connection ends (the process died, even by
SIGKILL; its host lost the network, found by TCP keepalives within the takeover time), and
a standby, trying every third of the takeover time, takes it. On SQLite (one host) the
leader holds an exclusive `flock` on a file beside the database, which the kernel drops
with the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, create_engine, exc, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from bandit.learner import RETRAIN_DAYS, LearnReport, learn_once
from bandit.models import Decision, PolicySnapshot, utcnow
from bandit.rewards import RewardConfig
from bandit.snapshots import serving_lineage

log = logging.getLogger(__name__)

# pg_try_advisory_lock(int, int): "keya" and 1. Advisory locks are per database, so keyart
# databases sharing one server do not contend.
LOCK_CLASS = int.from_bytes(b"keya", "big")
LOCK_ID = 1
# What the leader's lock connection calls itself (pg_stat_activity.application_name).
_APPLICATION = "keyart-learner"


@dataclass(frozen=True)
class Leader:
    """The process that learns: its host and process id, and since when it leads."""

    host: str
    pid: int
    since: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["since"] = self.since.isoformat() + "Z" if self.since else None
        return out


def this_process() -> Leader:
    return Leader(socket.gethostname(), os.getpid(), utcnow())


class LearnerLock(Protocol):
    """Leadership: try to take it; `held` stays true until it is released or lost."""

    @property
    def held(self) -> bool: ...

    def try_acquire(self) -> bool: ...

    def release(self) -> None: ...


class PostgresLearnerLock:
    """The advisory lock, on a connection of its own (not pooled, autocommit: a session
    lock outlives transactions, and an idle transaction could be ended by the server).

    While held, a thread checks every `takeover/3` seconds that the connection is alive
    and still holds the lock; if not, `held` turns false (the learner stops after its
    current batch) and the connection is closed."""

    def __init__(self, url: str, takeover_seconds: float = 30.0) -> None:
        self._takeover = takeover_seconds
        self.me = this_process()
        # Keepalives on both ends, so a lost host is found out within about two thirds of
        # the takeover time: by the server (which then drops the lock) and by the leader
        # (which then stops learning). tcp_user_timeout covers unacknowledged writes.
        idle = max(1, int(takeover_seconds / 3))
        interval = max(1, int(takeover_seconds / 9))
        self._keepalive = {"idle": idle, "interval": interval, "count": 3}
        self._engine = create_engine(
            url,
            poolclass=NullPool,
            connect_args={
                "application_name": f"{_APPLICATION} {self.me.pid}@{self.me.host}"[:63],
                "connect_timeout": max(2, int(takeover_seconds / 3)),
                "keepalives": 1,
                "keepalives_idle": idle,
                "keepalives_interval": interval,
                "keepalives_count": 3,
                "tcp_user_timeout": int(takeover_seconds * 1000 * 2 / 3),
            },
        )
        self._connection: Connection | None = None
        self._held = threading.Event()
        self._watch: threading.Thread | None = None
        self._stop_watch = threading.Event()

    @property
    def held(self) -> bool:
        return self._held.is_set()

    def try_acquire(self) -> bool:
        if self.held:
            return True
        connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            for name, value in self._keepalive.items():
                connection.execute(text(f"SET tcp_keepalives_{name} = {int(value)}"))
            connection.execute(text(f"SET tcp_user_timeout = {int(self._takeover * 667)}"))
            got = connection.scalar(
                text("SELECT pg_try_advisory_lock(:c, :o)"), {"c": LOCK_CLASS, "o": LOCK_ID}
            )
        except BaseException:
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self._connection = connection
        self.me = this_process()
        self._held.set()
        self._stop_watch.clear()
        self._watch = threading.Thread(target=self._keep_watch, name="keyart-lease", daemon=True)
        self._watch.start()
        return True

    def _keep_watch(self) -> None:
        while not self._stop_watch.wait(self._takeover / 3):
            connection = self._connection
            if connection is None:
                return
            try:
                mine = connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND pid = pg_backend_pid() AND classid = :c AND objid = :o"
                        " AND objsubid = 2 AND granted"
                    ),
                    {"c": LOCK_CLASS, "o": LOCK_ID},
                )
            except exc.DBAPIError as error:
                log.warning("learner lock connection lost: %s", str(error).splitlines()[0])
                mine = 0
            if not mine:
                self._lose()
                return

    def _lose(self) -> None:
        self._held.clear()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.invalidate()
                connection.close()

    def release(self) -> None:
        self._stop_watch.set()
        watch = self._watch
        if watch is not None and watch is not threading.current_thread():
            watch.join(timeout=self._takeover)
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.execute(
                    text("SELECT pg_advisory_unlock(:c, :o)"), {"c": LOCK_CLASS, "o": LOCK_ID}
                )
        self._lose()

    def close(self) -> None:
        self.release()
        self._engine.dispose()


class FileLearnerLock:
    """An exclusive `flock` on a file beside the SQLite database, which also says who holds
    it. The kernel drops the lock when the process ends, however it ends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.me = this_process()
        self._file: Any = None

    @property
    def held(self) -> bool:
        return self._file is not None

    def try_acquire(self) -> bool:
        if self.held:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self.me = this_process()
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(self.me.to_json()))
        handle.flush()
        self._file = handle
        return True

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            handle.close()  # closing the file drops the lock

    def close(self) -> None:
        self.release()


def sqlite_lock_path(url: str) -> Path | None:
    """The leader's lock file of an SQLite database; None for one in memory."""
    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database).resolve().with_name(Path(database).name + ".learner.lock")


def learner_lock(url: str, takeover_seconds: float) -> PostgresLearnerLock | FileLearnerLock | None:
    """The lock that makes one learner of all those on this database (None: an in-memory
    SQLite database, which only one process can see anyway)."""
    if make_url(url).get_backend_name() == "postgresql":
        return PostgresLearnerLock(url, takeover_seconds)
    path = sqlite_lock_path(url)
    return FileLearnerLock(path) if path is not None else None


def current_leader(session: Session) -> Leader | None:
    """Who learns on the session's database now, or None if no learner leads."""
    bind = session.get_bind()
    assert isinstance(bind, Engine | Connection)
    url = bind.engine.url
    if url.get_backend_name() == "postgresql":
        row = session.execute(
            text(
                "SELECT a.application_name, a.backend_start FROM pg_locks l"
                " JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'advisory' AND l.classid = :c AND l.objid = :o"
                " AND l.objsubid = 2 AND l.granted"
                " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"c": LOCK_CLASS, "o": LOCK_ID},
        ).first()
        if row is None:
            return None
        name, started = row
        _, _, who = (name or "").partition(" ")
        pid, _, host = who.partition("@")
        # Naive UTC, as every timestamp keyart stores.
        since = started.astimezone(UTC).replace(tzinfo=None) if started else None
        return Leader(host or "?", int(pid) if pid.isdigit() else 0, since)
    path = sqlite_lock_path(url.render_as_string())
    return _file_leader(path) if path is not None else None


def _file_leader(path: Path) -> Leader | None:
    try:
        handle = path.open()
    except FileNotFoundError:
        return None
    with handle:
        try:
            # A shared lock we can take means no exclusive one is held: nobody leads.
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return None
        try:
            about = json.loads(handle.read() or "{}")
        except ValueError:
            about = {}
    since = about.get("since")
    return Leader(
        str(about.get("host", "?")),
        int(about.get("pid", 0)),
        datetime.fromisoformat(since.removesuffix("Z")) if since else None,
    )


def learner_lag_seconds(
    session: Session, rewards: RewardConfig, now: datetime | None = None
) -> float:
    """How long the oldest decision the serving lineage has not yet learned has been ready
    to learn: the time since its reward window (and the settle time) closed. 0 when the
    learner is caught up."""
    now = now or utcnow()
    lineage = serving_lineage(session)
    cursor = session.scalar(
        select(PolicySnapshot.cursor)
        .where(PolicySnapshot.lineage_id == (lineage.id if lineage is not None else None))
        .order_by(PolicySnapshot.version.desc())
        .limit(1)
    )
    oldest = session.scalar(
        select(Decision.created_at)
        .where(Decision.id > (cursor or 0))
        .order_by(Decision.id)
        .limit(1)
    )
    if oldest is None:
        return 0.0
    ready = oldest + timedelta(seconds=rewards.wait_seconds + rewards.settle_seconds)
    return max(0.0, (now - ready).total_seconds())


# Longest wait between attempts while the database is unreachable.
MAX_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True)
class LearnerSteps:
    """What the learner does around each `learn_once` pass, wherever a loop learns as
    `keyart learn` does (`lead_and_learn`, the simulator): `settings(session)` gives the pass
    its VW arguments and rewards, read afresh each pass so that settings stored meanwhile
    start a lineage on the next; `after_pass(session, now)`, if any, runs after the pass
    (automatic optimisation)."""

    settings: Callable[[Session], tuple[str, RewardConfig]]
    after_pass: Callable[[Session, datetime], object] | None = None


def lead_and_learn(
    session_factory: Callable[[], Session],
    lock: LearnerLock | None,
    learning: Callable[[Session], tuple[str, RewardConfig]],
    interval_seconds: float,
    takeover_seconds: float,
    should_stop: Callable[[], bool] = lambda: False,
    on_pass: Callable[[LearnReport, float], None] | None = None,
    sleep: Callable[[float], None] | None = None,
    retrain_days: float = RETRAIN_DAYS,
    after_pass: Callable[[Session, datetime], object] | None = None,
) -> None:
    """Learn every `interval_seconds` while this process leads; stand by (trying for the
    lead every third of `takeover_seconds`) while another does. Each pass is logged with
    what it learned, the lag behind the log, its seconds and the policy version. While the
    database is out, attempts back off (doubling up to a minute) with one warning, not a
    traceback per attempt, and one line when it is back.

    `learning(session)` gives each pass its settings (VW arguments, rewards), so settings
    stored while the learner runs (`PUT /api/v1/policy`) start a lineage on the next pass;
    `after_pass(session, now)` runs after each pass (automatic optimisation): the two
    `LearnerSteps`."""
    rng = random.Random()
    failures = 0
    leading = False

    def wait(seconds: float) -> None:
        # In slices: a stop asked for (SIGTERM) need not wait out the interval.
        deadline = time.monotonic() + seconds
        while not should_stop() and (left := deadline - time.monotonic()) > 0:
            (sleep or time.sleep)(min(left, 0.25))

    try:
        while not should_stop():
            try:
                if lock is not None and not lock.held:
                    if leading:
                        log.warning("learner lost the lead; standing by")
                        leading = False
                    if not lock.try_acquire():
                        _recovered(failures)
                        failures = 0
                        wait(takeover_seconds / 3)
                        continue
                if not leading:
                    leading = True
                    me = getattr(lock, "me", this_process())
                    log.info("learner leads", extra={"leader": me.to_json()})
                started = time.monotonic()
                with session_factory() as session:
                    vw_args, rewards = learning(session)
                    stopping = lambda: should_stop() or (lock is not None and not lock.held)  # noqa: E731
                    report = learn_once(
                        session, vw_args, rewards, should_stop=stopping, retrain_days=retrain_days
                    )
                    lag = learner_lag_seconds(session, rewards)
                    if after_pass is not None and not stopping():
                        after_pass(session, utcnow())
                seconds = time.monotonic() - started
                _recovered(failures)
                failures = 0
                log.info(
                    "learning pass: learned %d decisions, lag %.1f s, %.2f s, policy version %s",
                    report.learned,
                    lag,
                    seconds,
                    report.version if report.version is not None else "unchanged",
                    extra={
                        "learned": report.learned,
                        "skipped": report.skipped,
                        "cursor": report.cursor,
                        "lag_seconds": round(lag, 3),
                        "seconds": round(seconds, 3),
                        "version": report.version,
                    },
                )
                if on_pass is not None:
                    on_pass(report, lag)
                wait(interval_seconds)
            except (exc.OperationalError, exc.InterfaceError, exc.TimeoutError) as error:
                failures += 1
                delay = min(MAX_BACKOFF_SECONDS, interval_seconds * 2 ** min(failures, 10))
                delay *= 0.5 + rng.random() / 2  # jitter: standbys do not retry in step
                if failures == 1:
                    reason = getattr(error, "orig", None) or error
                    log.warning(
                        "database unavailable, learner backing off: %s",
                        str(reason).strip().splitlines()[0] if str(reason).strip() else error,
                        extra={"retry_seconds": round(delay, 1)},
                    )
                wait(delay)
            except Exception:
                failures += 1
                log.exception("learning pass failed")
                wait(min(MAX_BACKOFF_SECONDS, interval_seconds * 2 ** min(failures, 10)))
    finally:
        if lock is not None:
            lock.release()


def _recovered(failures: int) -> None:
    if failures:
        log.info("database reachable again after %d failed attempts; learning", failures)
