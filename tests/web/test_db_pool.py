"""The PostgreSQL pool replaces a connection that died while idle (the server restarted or
dropped it), though it no longer pings a connection on every checkout."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text

from web import db

# SQLite has no server to drop a connection: these run on PostgreSQL only.
pytestmark = pytest.mark.postgres


def test_a_connection_killed_while_idle_is_replaced(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.make_engine(postgres_server)
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            pid = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with admin.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        # Without the idle ping this checkout would hand out the dead connection.
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar_one() == 1
            assert connection.execute(text("SELECT pg_backend_pid()")).scalar_one() != pid
    finally:
        engine.dispose()
        admin.dispose()


def test_a_connection_used_a_moment_ago_is_not_pinged(
    postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = db.make_engine(postgres_server)
    pings = []
    monkeypatch.setattr(engine.dialect, "do_ping", lambda c: pings.append(c) or True)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    try:
        for _ in range(3):
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        assert pings == []
        monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert len(pings) == 1
    finally:
        engine.dispose()


def test_a_server_that_never_answers_is_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket
    import time

    from sqlalchemy.exc import OperationalError

    # Listening, so the connection is made, but never a word: a stalled server.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"postgresql+psycopg://postgres@127.0.0.1:{silent.getsockname()[1]}/none"
        monkeypatch.setattr(db, "CONNECT_TIMEOUT", 1)
        engine = db.make_engine(url)
        started = time.monotonic()
        with pytest.raises(OperationalError), engine.connect():
            pass
        assert time.monotonic() - started < 10
        engine.dispose()
        # A URL's own connect_timeout is kept.
        engine = db.make_engine(url + "?connect_timeout=2")
        started = time.monotonic()
        with pytest.raises(OperationalError), engine.connect():
            pass
        assert 1.5 < time.monotonic() - started < 10
        engine.dispose()
