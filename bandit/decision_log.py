"""Group commit for the decision log: many requests' decisions share one transaction, and
each request still returns only once its own decisions are durable.

A commit costs a round trip (PostgreSQL) or a WAL sync (SQLite) however few rows it carries,
so one per request caps throughput at the database's commit rate. Here request threads hand
their rows to one writer thread per process and wait; the writer takes everything queued
since its last commit, inserts it in one statement and commits once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import operator
import os
import re
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Dialect, Engine, PoolProxiedConnection
from sqlalchemy.types import TypeEngine

from bandit.models import CandidateSet, Decision, utcnow

log = logging.getLogger(__name__)

_COLUMNS = [c.key for c in Decision.__table__.columns if c.key != "id"]
_JSON_COLUMNS = frozenset(c.key for c in Decision.__table__.columns if isinstance(c.type, JSON))
_SET_ID = _COLUMNS.index("candidate_set_id")  # where a row holds its candidate set's id


def _json_text(value: Any) -> str:
    # `bandit.decisions.JSONList`/`JSONDict` carry their text, encoded once for many rows; the
    # text of anything else is what SQLAlchemy's JSON type would have written.
    text = getattr(value, "json_text", None)
    return text if text is not None else json.dumps(value)


def _array_type(column_type: TypeEngine[Any], dialect: Dialect) -> str:
    """PostgreSQL's array of a column's type, without its length: an explicit cast to
    VARCHAR(64) would cut a longer value short, where inserting it into the column refuses
    it."""
    return re.sub(r"\(\d+\)", "", column_type.compile(dialect=dialect)) + "[]"


def _has_spoken(connection: PoolProxiedConnection) -> bool:
    """Whether an idle PostgreSQL connection has anything waiting to be read (asked
    nothing, the server sends nothing until it closes the connection)."""
    poller = select.poll()
    poller.register(connection.driver_connection.pgconn.socket, select.POLLIN)  # type: ignore[union-attr]
    return bool(poller.poll(0))


def _last_of(step: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`step`, remembering its last answer: a page's decisions share one timestamp, and
    SQLite's datetime formatting was a tenth of encoding a row."""
    last: tuple[Any, Any] = (object(), None)

    def process(value: Any) -> Any:
        nonlocal last
        seen = last  # one read: another thread may replace it meanwhile
        if seen[0] is value:
            return seen[1]
        encoded = step(value)
        last = (value, encoded)
        return encoded

    return process


def _row_encoder(dialect: Dialect) -> Callable[[Any], tuple[Any, ...]]:
    """A function from a decision to its row as the DB-API driver takes it: JSON columns as
    their text, other values through SQLAlchemy's own bind processors for this dialect (so
    the stored values are the ones an ORM insert would store)."""
    steps: list[Callable[[Any], Any] | None] = []
    for key in _COLUMNS:
        if key in _JSON_COLUMNS:
            steps.append(_json_text)
        else:
            column_type = Decision.__table__.c[key].type
            step = column_type.dialect_impl(dialect).bind_processor(dialect)
            if step is not None and isinstance(column_type, DateTime):
                step = _last_of(step)
            elif isinstance(column_type, Boolean) and dialect.name == "sqlite":
                # SQLAlchemy's processor is int(); sqlite3 binds a bool as the int it is.
                step = None
            steps.append(step)
    values = operator.attrgetter(*_COLUMNS)
    converted = [(i, step) for i, step in enumerate(steps) if step is not None]

    def encode(decision: Any) -> tuple[Any, ...]:
        row = list(values(decision))
        for i, step in converted:
            row[i] = step(row[i])
        return tuple(row)

    return encode


# How often SQLite's WAL is copied back into the database while a writer runs
# (`GroupCommitLog._checkpoints`): with `synchronous=NORMAL`, how much a power cut can lose.
_CHECKPOINT_SECONDS = 0.05
# How long the WAL may grow (in frames: pages of 4 KB) before a checkpoint also takes the
# writers' lock to finish the copy, so that the next commit starts the WAL from the top; and
# how large the WAL file may stay after.
_RESTART_FRAMES = 4096
_WAL_KEEP_BYTES = 64 * 1024 * 1024


class DecisionLogError(RuntimeError):
    """The decisions could not be made durable; the request must not claim they were logged."""


class StaleWrite(DecisionLogError):
    """The log's guard has moved on from the value the decisions were made with (for keyart:
    the catalog changed under them). They were not logged; decide again with `current`."""

    def __init__(self, current: Any) -> None:
        super().__init__(f"decided with a stale view (the guard is now {current!r})")
        self.current = current


@dataclass(slots=True, eq=False)
class _Entry:
    """One `write()`: its rows, the lock its caller waits on (held until the writer answers:
    a bare lock rather than a `concurrent.futures.Future`, whose condition variable cost a
    tenth of a worker's time under page load), and the guard value it was decided with
    (None: unguarded)."""

    rows: list[tuple[Any, ...]]
    done: threading.Lock
    expect: Any = None
    # What the writer answered: None for committed.
    error: Exception | None = None
    # Candidate sets its rows name that the writer had not stored yet: id → JSON text.
    sets: dict[str, str] | None = None


def decision_row(decision: Any) -> dict[str, Any]:
    """The row for a `Decision` or a `bandit.decisions.DecisionRecord`."""
    return {key: getattr(decision, key) for key in _COLUMNS}


class GroupCommitLog:
    """Durable, batched writes of decisions through `engine`.

    `write()` blocks until the commit that carries its rows has returned (or raises
    `DecisionLogError`). At most `max_rows` rows go into one commit, so a burst is split
    rather than building one huge transaction. The writer thread starts on first use, in
    the process that uses it (a thread never crosses a fork). Give it an engine of its own:
    if it shared a pool with the threads waiting on it, they could hold every connection.

    `guard` is a query of one value (from one row, on PostgreSQL: the row is locked
    `FOR SHARE`) that the statement inserting a write's rows checks: a write made
    `expect`ing another value is refused with `StaleWrite` and the rest are written.
    Whatever the guard watches (keyart: the catalog version) can then be cached by the
    callers: anything decided after the watched thing changed is refused.
    """

    def __init__(
        self,
        engine: Engine,
        max_rows: int = 2000,
        timeout_seconds: float = 30.0,
        *,
        idle_seconds: float = 5.0,
        owns_engine: bool = False,
        guard: str | None = None,
        delay_seconds: float = 0.0,
        synchronous: str = "NORMAL",
    ):
        if max_rows < 1:
            raise ValueError("max_rows must be at least 1")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be NORMAL or FULL")
        # SQLite only: how its writer syncs the WAL (see `_connect`).
        self._synchronous = synchronous
        self._engine = engine
        # After this long without work the writer closes its connection and exits (the next
        # write starts it again); with `owns_engine` it also disposes of the engine's pool.
        self._idle = idle_seconds
        # When the last commit was shared, the writer waits up to this long before taking the
        # next batch, so more requests join it (PostgreSQL's commit_delay with
        # commit_siblings): each commit's fixed cost, and each wake-up of the writer, is then
        # shared by more. It stops waiting once as many wait as shared the last (`_take`).
        self._delay = delay_seconds
        self._last_batch = 0
        self._gathering = False  # the writer is waiting out the delay (`_take`)
        self._writer_idle = False
        self._owns_engine = owns_engine
        self._max_rows = max_rows
        self._timeout = timeout_seconds
        self._condition = threading.Condition()
        self._pending: list[_Entry] = []
        self._guard = guard
        self.guarded: Any = None  # the guard's value at the last commit
        self.refused = 0  # writes refused as stale, for tests and metrics
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = False
        self._in_flight = 0
        self.commits = 0  # how many transactions carried decisions, for tests and metrics
        dialect = engine.dialect
        self._encode = _row_encoder(dialect)
        self._sqlite = dialect.name == "sqlite"
        # Straight to the driver: building ORM or Core parameter sets per row cost more
        # than the database's own work. SQLite's INSERTs by (rows, guarded):
        self._statements: dict[tuple[int, bool], str] = {}
        self._rows_per_statement: int | None = None
        # Candidate sets this writer has committed: rows naming them need not send them again.
        self._stored_sets: set[str] = set()
        created_at = CandidateSet.__table__.c.created_at.type
        self._encode_time = created_at.dialect_impl(dialect).bind_processor(dialect)
        # A set another process (or an earlier writer) stored already is left as it is.
        self._sets_statement = (
            "INSERT OR IGNORE INTO candidate_sets (id, candidates, created_at) VALUES (?, ?, ?)"
            if self._sqlite
            else "INSERT INTO candidate_sets (id, candidates, created_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING"
        )
        if not self._sqlite and (dialect.name, dialect.driver) != ("postgresql", "psycopg"):
            raise ValueError(f"no decision log for {dialect.name}+{dialect.driver}")
        # PostgreSQL's INSERTs, unguarded and guarded (`_insert_postgres`): each column as
        # one array, bound in binary, so one statement whatever the rows, prepared once. The
        # guard's row is locked FOR SHARE: a change to it in progress is waited for and then
        # read (READ COMMITTED reads a locked row's newest version), and none can commit
        # until these rows have.
        self._inserts: dict[bool, str] = {}
        if not self._sqlite:
            arrays = ", ".join(
                f"%b::{_array_type(Decision.__table__.c[key].type, dialect)}" for key in _COLUMNS
            )
            # Names and types from the model, the guard from the code that built this log.
            insert = f"INSERT INTO decisions ({', '.join(_COLUMNS)}) SELECT * FROM unnest({arrays})"  # noqa: S608
            self._inserts[False] = insert
            if guard is not None:
                self._inserts[True] = f"{insert} WHERE ({guard} FOR SHARE) = %s"
        database = engine.url.database
        self._lock_path = (
            f"{database}-writer.lock"
            if self._sqlite and database and database != ":memory:"
            else None
        )
        self._lock_file: Any = None
        self._lock_pid = 0
        # SQLite's checkpoints, in a thread of their own beside the writer (`_checkpoints`).
        self._checkpointer: threading.Thread | None = None
        self._checkpoints_stop = threading.Event()

    def _statement_for(self, count: int, guarded: bool) -> str:
        statement = self._statements.get((count, guarded))
        if statement is None:
            values = ", ".join(
                "(" + ", ".join("?" for _ in _COLUMNS) + ")" for _ in range(count)
            )
            # Names from the model, the guard from the code that built this log, and
            # placeholders: nothing from outside.
            rows = f"SELECT * FROM (VALUES {values}) WHERE ({self._guard}) = ?"  # noqa: S608
            statement = f"INSERT INTO decisions ({', '.join(_COLUMNS)}) " + (
                rows if guarded else f"VALUES {values}"
            )
            self._statements[(count, guarded)] = statement
        return statement

    def _connect(self) -> PoolProxiedConnection:
        # A DB-API connection of the engine's pool, used directly: SQLAlchemy's transaction
        # and execution layers cost more per commit than SQLite's own work.
        connection = self._engine.raw_connection()
        driver: Any = connection.driver_connection
        # A commit gives up when the write's own timeout is up (a lock held elsewhere, a
        # stalled server), so a request waiting on one is answered 503 with nothing logged,
        # rather than waiting as long as the database does.
        limit = max(1, int(self._timeout * 1000))
        if not self._sqlite:
            driver.autocommit = True
            driver.execute(f"SET statement_timeout = {limit}")
        else:
            # Transactions begun by `_insert` itself, and only when a commit needs more than
            # one statement: a lone INSERT is its own transaction.
            driver.isolation_level = None
            driver.execute(f"PRAGMA busy_timeout = {limit}")
            # NORMAL (the default): a commit is in the WAL, in the OS's cache, when it
            # returns, so it survives the process crashing or being killed; the WAL reaches
            # the disk at each checkpoint (`_checkpoint`, every 50 ms under load). A
            # power cut can lose the commits since the last one. FULL also syncs every
            # commit, which cost 0.3 to 6 ms each on the benchmark's machine (as other work's
            # I/O came and went): up to most of a single title's latency.
            driver.execute(f"PRAGMA synchronous={self._synchronous}")
            # Checkpoints run after a commit is answered (`_checkpoint`), not inside
            # whichever commit crosses SQLite's threshold, where one request waited for the
            # whole copy.
            driver.execute("PRAGMA wal_autocheckpoint=0")
            driver.execute(f"PRAGMA journal_size_limit={_WAL_KEEP_BYTES}")
        return connection

    def _checkpoint(
        self, connection: PoolProxiedConnection, lock: Any = None, *, restart: bool = False
    ) -> None:
        """Copy the WAL back into the database (and sync both), while writers go on
        appending. Once the WAL holds `_RESTART_FRAMES` (or with `restart`), copy what they
        appended meanwhile too, holding the writers' lock (`lock`: a file of the caller's
        own, as flock does not keep apart two holders of one file), so that the next commit
        starts the WAL from the top: writers outrun a checkpoint that never holds the lock,
        and the WAL grows without end. All of every checkpoint under the lock (before), every
        writer waited out each copy, 50 ms apart in each process, and under 40-title pages
        the machine was idle an eighth of the time (`benchmarks/README.md`). PASSIVE: it
        never waits for readers. A failure is logged, not raised: the commits are safe, and
        the next checkpoint catches up."""
        if not self._sqlite:
            return
        driver: Any = connection.driver_connection
        try:
            _, frames, _ = driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if restart or frames >= _RESTART_FRAMES:
                with self._writer_lock(lock):
                    driver.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            log.exception("WAL checkpoint failed")

    def _start_checkpoints(self) -> None:
        if self._lock_path is None:
            return  # not a SQLite file: no WAL to copy back
        self._checkpoints_stop.set()  # a thread left from before, should there be one
        stop = threading.Event()  # the thread's own: one stopped may still be finishing
        self._checkpoints_stop = stop
        self._checkpointer = threading.Thread(
            target=self._checkpoints, args=(stop,), name="keyart-wal-checkpoints", daemon=True
        )
        self._checkpointer.start()

    def _stop_checkpoints(self) -> None:
        """Stop the checkpoints' thread and wait for it to have closed its connection."""
        thread, self._checkpointer = self._checkpointer, None
        if thread is not None:
            self._checkpoints_stop.set()
            if thread is not threading.current_thread():
                thread.join(self._timeout)

    def _checkpoints(self, stop: threading.Event) -> None:
        """SQLite: a checkpoint (`_checkpoint`) every `_CHECKPOINT_SECONDS` while the writer
        runs, on a connection of its own and in a thread of its own, so that the writer
        commits meanwhile (the SQLite library lets go of the GIL while it copies)."""
        connection: PoolProxiedConnection | None = None
        lock = None
        failing = False
        try:
            while not stop.wait(_CHECKPOINT_SECONDS):
                if connection is None:
                    # Tried again at the next turn should it fail: under steady load the writer
                    # never goes idle to start a new thread, and the WAL would grow unchecked.
                    try:
                        connection = self._connect()
                    except Exception as error:
                        if not failing:  # once, not every 50 ms
                            log.warning("the WAL's checkpoints cannot connect: %s", error)
                        failing = True
                        continue
                    failing = False
                    lock = open(str(self._lock_path), "a")  # noqa: SIM115 - kept open
                self._checkpoint(connection, lock)
        finally:
            if connection is not None:
                connection.invalidate()
                connection.close()
            if lock is not None:
                lock.close()

    def _insert(
        self, connection: PoolProxiedConnection, taken: list[_Entry], sets: dict[str, str]
    ) -> list[_Entry]:
        """Commit the rows of `taken`, and before them the candidate sets they name that are
        new; return the entries refused as stale. Each write goes in only if the guard still
        reads what it expects: the check is part of the statement that inserts its rows, so
        no change to what the guard reads can commit between the two."""
        # Writes grouped by the guard value they expect (after a catalog change, a batch can
        # hold both); each group's rows are checked against it and go in or stay out whole.
        groups: dict[Any, list[tuple[Any, ...]]] = {}
        for entry in taken:
            groups.setdefault(entry.expect, []).extend(entry.rows)
        driver: Any = connection.driver_connection
        cursor = driver.cursor()
        try:
            if self._sqlite:
                with self._writer_lock():
                    refused = self._insert_sqlite(driver, cursor, groups, sets)
            else:
                refused = self._insert_postgres(driver, cursor, groups, sets)
        finally:
            cursor.close()
        if refused:
            return [entry for entry in taken if entry.expect in refused]
        if self._guard is not None and (expect := next(iter(groups))) is not None:
            self.guarded = expect  # what the guard read as these rows went in
        return []

    def _insert_postgres(
        self,
        driver: Any,
        cursor: Any,
        groups: dict[Any, list[tuple[Any, ...]]],
        sets: dict[str, str],
    ) -> set[Any]:
        """Each group in one statement (`_inserts`) in autocommit: one round trip and the
        WAL flush. A read of the guard before an autocommit COPY took three round trips and
        let a change commit between them; the read locked in a transaction with the COPY
        took four, and cost singles more than this does (README, "Performance: serving
        cost"). Groups after the first (only just after a catalog change) share a
        transaction, so a failure leaves none of them in."""
        # Their own autocommit statement: should the rows then fail, the sets stay, which is
        # harmless (a set is keyed by its content and never changes).
        self._insert_sets(cursor, sets)
        refused: set[Any] = set()
        with driver.transaction() if len(groups) > 1 else contextlib.nullcontext():
            for expect, rows in groups.items():
                guarded = self._guard is not None and expect is not None
                values: list[Any] = [list(column) for column in zip(*rows, strict=True)]
                if guarded:
                    values.append(expect)
                cursor.execute(self._inserts[guarded], values, prepare=True)
                if guarded and cursor.rowcount == 0:
                    refused.add(expect)  # the guard has moved on: none of this group
        return refused

    def _insert_sqlite(
        self,
        driver: Any,
        cursor: Any,
        groups: dict[Any, list[tuple[Any, ...]]],
        sets: dict[str, str],
    ) -> set[Any]:
        """The rows in as few statements as SQLite allows (`_statement_for`), in one
        transaction. One statement of many rows rather than `executemany`, and no BEGIN or
        COMMIT of their own when one statement holds the commit: SQLite's driver lets go of
        the GIL for every statement it steps through, and under load each hand-back costs
        the writer a wait behind the request threads."""
        if self._rows_per_statement is None:
            limit = 999  # SQLite's own default before 3.32
            if hasattr(driver, "getlimit"):
                limit = driver.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._rows_per_statement = max(1, min(500, (limit - 1) // len(_COLUMNS)))
        step = self._rows_per_statement
        alone = not sets and len(groups) == 1 and len(next(iter(groups.values()))) <= step
        refused: set[Any] = set()
        if not alone:
            driver.execute("BEGIN IMMEDIATE")
        try:
            self._insert_sets(cursor, sets)
            for expect, rows in groups.items():
                guarded = self._guard is not None and expect is not None
                for start in range(0, len(rows), step):
                    chunk = rows[start : start + step]
                    values = [value for row in chunk for value in row]
                    if guarded:
                        values.append(expect)
                    cursor.execute(self._statement_for(len(chunk), guarded), values)
                    if guarded and cursor.rowcount == 0:
                        refused.add(expect)  # the guard has moved on: none of this group
                        break
            if not alone:
                driver.execute("COMMIT")
        except BaseException:
            if driver.in_transaction:
                driver.execute("ROLLBACK")
            raise
        return refused

    def _insert_sets(self, cursor: Any, sets: dict[str, str]) -> None:
        if not sets:
            return
        now = utcnow()
        when = self._encode_time(now) if self._encode_time is not None else now
        cursor.executemany(self._sets_statement, [(key, text, when) for key, text in sets.items()])

    @contextlib.contextmanager
    def _writer_lock(self, handle: Any = None) -> Iterator[None]:
        """SQLite has one writer at a time per database; each process's writer waits its turn
        on a file lock. Left to SQLite, a writer that finds the database busy sleeps and
        retries (1, 2, 5, 10 ms...), and the sleeps, not the writes, set the pace. `handle`:
        the lock file opened by the caller (the checkpoints' thread), else the writer's."""
        if self._lock_path is None:
            yield
            return
        # Opened once per process and kept (opening it per commit was 4% of a worker's
        # time under page load); a forked child opens its own.
        if handle is None:
            if self._lock_file is None or self._lock_pid != os.getpid():
                self._lock_file = open(self._lock_path, "a")  # noqa: SIM115 - kept open
                self._lock_pid = os.getpid()
            handle = self._lock_file
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

    def write(self, decisions: Sequence[Any], expect: Any = None) -> None:
        """Log `decisions` durably, or raise; `expect` is the guard value they were made
        with (see the class)."""
        if not decisions:
            return
        done = threading.Lock()
        done.acquire()
        entry = _Entry([self._encode(d) for d in decisions], done, expect)
        stored = self._stored_sets
        for decision, row in zip(decisions, entry.rows, strict=True):
            key = row[_SET_ID]  # worked out once, by the encoder
            if key not in stored:
                if entry.sets is None:
                    entry.sets = {}
                entry.sets[key] = _json_text(decision.candidates)
        with self._condition:
            self._ensure_thread()
            self._pending.append(entry)
            # While the writer gathers a batch, waking it for less than it waits for would
            # only cost.
            if self._writer_idle or (self._gathering and len(self._pending) >= self._last_batch):
                self._condition.notify()
        if not done.acquire(timeout=self._timeout):
            with self._condition:
                queued = [i for i, e in enumerate(self._pending) if e is entry]
                if queued:
                    # Never written: withdraw it, so no decision is logged that was not served.
                    del self._pending[queued[0]]
                    raise DecisionLogError("the decision log did not commit in time")
            # Already in the commit under way: its outcome is this request's.
            done.acquire()
        if entry.error is not None:
            raise entry.error

    @property
    def queued(self) -> int:
        """Requests waiting for the next commit."""
        with self._condition:
            return len(self._pending)

    @property
    def waiting(self) -> int:
        """Requests not answered yet: queued, or in the commit under way."""
        with self._condition:
            return len(self._pending) + self._in_flight

    @property
    def running(self) -> bool:
        """Whether a writer thread (and its connection) is up."""
        with self._condition:
            return self._thread is not None

    def stop(self, timeout: float | None = None) -> None:
        """Ask the writer to finish; with `timeout`, wait up to that long for it to have
        closed its connection (before the engine is disposed of, say)."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
            thread = self._thread
            if thread is None:
                # Started without a writer (`benchmarks/decision_log.py`); under the condition,
                # so as not to stop those of a writer a write starts meanwhile.
                self._stop_checkpoints()
        if thread is not None and timeout is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            return
        self._stopping = False
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="keyart-decision-log", daemon=True)
        self._thread.start()
        self._start_checkpoints()

    def _take(self) -> list[_Entry] | None:
        with self._condition:
            while not self._pending and not self._stopping:
                self._writer_idle = True
                woke = self._condition.wait(self._idle)
                self._writer_idle = False
                if not woke and not self._pending:
                    break
            if not self._pending:
                return None
            if self._delay > 0 and self._last_batch > 1 and not self._stopping:
                # Until the delay is up, or as many requests wait as shared the last commit:
                # in a steady stream those are the same requests back again, and waiting on
                # adds latency, not company.
                deadline = time.monotonic() + self._delay
                self._gathering = True
                while (
                    len(self._pending) < self._last_batch
                    and (left := deadline - time.monotonic()) > 0
                    and not self._stopping
                ):
                    self._condition.wait(left)
                self._gathering = False
            taken, rows = [], 0
            # Whole requests only: a request's decisions are committed together.
            while self._pending and (
                not taken or rows + len(self._pending[0].rows) <= self._max_rows
            ):
                entry = self._pending.pop(0)
                taken.append(entry)
                rows += len(entry.rows)
            self._in_flight = self._last_batch = len(taken)
            return taken

    def _run(self) -> None:
        # The writer keeps a connection of its own: borrowing from the pool the requests use
        # could starve it while every request thread holds a connection and waits for it.
        connection: PoolProxiedConnection | None = None
        while True:
            taken = self._take()
            if taken is None:
                # Not under the condition: the checkpoints may wait for another process's
                # writer, and writes arriving meanwhile must still be able to queue.
                self._stop_checkpoints()
                if connection is not None:
                    self._checkpoint(connection, restart=True)  # the last, as it goes idle
                with self._condition:
                    if self._pending and not self._stopping:
                        self._start_checkpoints()
                        continue  # a write came in meanwhile
                    if connection is not None:
                        # Not back to the pool: it has the writer's own timeout set.
                        connection.invalidate()
                        connection.close()
                    if self._owns_engine:
                        self._engine.dispose()
                    if self._lock_file is not None:
                        self._lock_file.close()
                        self._lock_file = None
                    # Under the lock: the next write sees no thread and starts one.
                    self._thread = None
                    return
            written = False
            try:
                if connection is None:
                    connection = self._connect()
                elif not self._sqlite and _has_spoken(connection):
                    # An idle connection has nothing to read unless the server said something
                    # unasked: most often that it is closing it (restarted, or the backend
                    # was ended). Found out by the batch's INSERT, the failure could leave in
                    # doubt whether the rows went in; a read first settles it, and a new
                    # connection takes the batch rather than the first requests after an
                    # outage failing on the old one. No round trip when nothing was said.
                    try:
                        connection.driver_connection.execute("SELECT 1")  # type: ignore[union-attr]
                    except Exception:
                        log.warning("the decision log's connection was lost; reconnecting")
                        connection.invalidate()
                        connection.close()
                        connection = None  # should connecting fail, nothing left to close
                        connection = self._connect()
                sets = {
                    key: text
                    for entry in taken
                    if entry.sets
                    for key, text in entry.sets.items()
                    if key not in self._stored_sets
                }
                stale = self._insert(connection, taken, sets)
                self._stored_sets.update(sets)
                if stale:
                    # The others are committed: nothing here may fail them.
                    try:
                        self.guarded = self._read_guard(connection)
                    except Exception:
                        log.warning("reading the guard after a refused write failed")
                    self.refused += len(stale)
                    self._answer(stale, StaleWrite(self.guarded))
                    taken = [entry for entry in taken if entry not in stale]
                written = bool(taken)
            except Exception as error:  # every waiting request hears of it
                # One line, not a traceback: in an outage this happens at every commit.
                log.warning(
                    "writing %d decisions failed: %s: %s",
                    sum(len(entry.rows) for entry in taken),
                    type(error).__name__,
                    str(error).strip().splitlines()[0] if str(error).strip() else "",
                )
                # Whatever it was, the sets this writer remembers storing are in doubt (the
                # database may have been restored or emptied): from now on, send them again.
                self._stored_sets.clear()
                if connection is not None:
                    connection.invalidate()
                    connection.close()
                    connection = None
                failure = DecisionLogError(
                    f"the decision log is unavailable ({type(error).__name__})"
                )
                self._answer(taken, failure)
                continue
            if written:
                self.commits += 1
            self._answer(taken, None)

    def _read_guard(self, connection: PoolProxiedConnection) -> Any:
        cursor: Any = connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(self._guard)
            (value,) = cursor.fetchone()
        finally:
            cursor.close()
        return value

    def _answer(self, taken: list[_Entry], error: Exception | None) -> None:
        with self._condition:
            self._in_flight = max(0, self._in_flight - len(taken))
        for entry in taken:
            entry.error = error
            entry.done.release()
