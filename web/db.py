"""Engines, sessions and schema migration for the configured database."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

import migrations

MIGRATIONS_DIR = Path(migrations.__file__).parent


def make_engine(url: str) -> Engine:
    """An engine with the pragmas keyart relies on when the database is SQLite."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
            cursor = dbapi_connection.cursor()
            # WAL lets readers proceed while the learner or a request writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    # A server that accepts the connection and then says nothing (a stalled host, a
    # half-open network path) would hold a request for the OS's TCP timeout, minutes.
    timeout = (
        {} if "connect_timeout" in make_url(url).query else {"connect_timeout": CONNECT_TIMEOUT}
    )
    engine = create_engine(url, pool_size=5, max_overflow=10, connect_args=timeout)
    _ping_idle_connections(engine)
    return engine


# Seconds to wait for PostgreSQL to answer a new connection, unless the URL sets its own
# `connect_timeout`.
CONNECT_TIMEOUT = 10


# A pooled connection idle longer than this is pinged before use.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """`pool_pre_ping`, but only for connections that sat idle in the pool: a connection
    handed back a moment ago is alive, and pinging it on every checkout was a round trip
    per request (a sixth of a decision's time). A dead one is replaced, as pre_ping does."""

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(str(error)) from error
        if not alive:
            raise exc.DisconnectionError("connection failed its ping")


class ReadUnavailable(RuntimeError):
    """The database could not answer a plain read (see `plain_reads`)."""


@contextmanager
def plain_reads(engine: Engine) -> Iterator[Any]:
    """A DB-API cursor on a pooled connection, for a hot path's plain SELECTs.

    No ORM session or Core execution around the query: on the decision path they cost ten
    times the query itself on SQLite. No transaction either: SQLite's driver begins one only
    before a write, and PostgreSQL's connection is put in autocommit for the duration, so a
    read is one round trip, with no BEGIN or ROLLBACK. A driver error is raised as
    `ReadUnavailable`, and the connection is discarded rather than pooled again.
    """
    errors = engine.dialect.loaded_dbapi.Error
    try:
        connection = engine.raw_connection()
    except (errors, exc.TimeoutError) as error:  # down, full, or the pool is exhausted
        raise ReadUnavailable(f"the database did not answer ({type(error).__name__})") from error
    driver: Any = connection.driver_connection
    postgres = engine.dialect.name == "postgresql"
    try:
        if postgres:
            driver.autocommit = True
        cursor = driver.cursor()
        try:
            yield cursor
        finally:
            cursor.close()
    except errors as error:
        connection.invalidate()
        raise ReadUnavailable(f"the database did not answer ({type(error).__name__})") from error
    finally:
        if postgres and connection.is_valid:
            try:
                driver.autocommit = False  # as the pool's other users expect it
            except errors:
                connection.invalidate()
        connection.close()


@contextmanager
def scratch_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, empty database on the PostgreSQL server at `server_url` (for a test run or a
    benchmark): its URL is yielded, and it is dropped afterwards, connections and all."""
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception:
        admin.dispose()
        raise
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(engine: Engine) -> None:
    """Migrate the database behind `engine` to the latest schema."""
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
