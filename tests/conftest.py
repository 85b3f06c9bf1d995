"""Fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from KEYART_TEST_POSTGRES_URL (default: the local server at
127.0.0.1:5432, database `test`, user `postgres`). Where it cannot be reached its tests are
skipped with a message, unless KEYART_REQUIRE_POSTGRES=1 (as in CI), where they fail.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from artwork.renditions import Preset
from tests.helpers import runtime
from web import create_app
from web.auth import create_editor
from web.config import Settings
from web.db import make_engine, scratch_database, upgrade

POSTGRES_URL = os.environ.get(
    "KEYART_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REQUIRE_POSTGRES = os.environ.get("KEYART_REQUIRE_POSTGRES") == "1"
# CI sets this: a missing moto server fails the S3 tests rather than skipping them.
REQUIRE_S3 = os.environ.get("KEYART_REQUIRE_S3") == "1"

# Two small presets keep uploads in tests quick; the full set is tested in artwork tests.
TEST_PRESETS = (Preset("boxart-342", 342, 513), Preset("billboard-640", 640, 360))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A fresh database on the PostgreSQL server for this test run, dropped afterwards."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_database(POSTGRES_URL, "keyart_test"))
        except Exception as error:
            message = (
                f"PostgreSQL not reachable at {make_url(POSTGRES_URL).render_as_string()}: "
                f"{type(error).__name__}. Start it or set KEYART_TEST_POSTGRES_URL to run "
                "these tests."
            )
            if REQUIRE_POSTGRES:
                pytest.fail(message)
            pytest.skip(message)
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url


def _truncate(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        tables = ", ".join(
            f'"{t}"'
            for t in (
                "renditions",
                "artworks",
                "titles",
                "decisions",
                "candidate_sets",
                "rewards",
                "policy_snapshots",
                "policy_lineages",
                "policy_settings",
                "editors",
                "evaluations",
                "personalizer_settings",
                "personalizer_evaluations",
            )
        )
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'keyart.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        return url
    url = request.getfixturevalue("postgres_server")
    _truncate(url)
    return url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        var_dir=tmp_path,
        database_url=database_url,
        media_dir=tmp_path / "media",
        secret_key="test-secret-key-0123456789",
        reward_wait=600.0,
        # Tests refresh the policy explicitly rather than wait for the poller.
        policy_poll_seconds=3600.0,
        presets=TEST_PRESETS,
        # A commit on a loaded test machine can take longer than production's half second,
        # and would be answered as a fallback; the fallback tests set their own.
        decision_timeout=10.0,
    )


@pytest.fixture
def cli_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running `keyart` commands against the test database."""
    return {
        "KEYART_DATABASE_URL": database_url,
        "KEYART_VAR_DIR": str(tmp_path / "var"),
        "KEYART_SECRET_KEY": "test-secret-key-0123456789",
        "KEYART_DECISION_TIMEOUT": "10",  # as `settings` above
    }


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings, {"TESTING": True})
    runtime(app).rng = random.Random(1234)
    yield app
    runtime(app).policy.stop()
    if runtime(app).decision_log is not None:
        runtime(app).decision_log.stop(timeout=30)
    runtime(app).engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def session(app: Flask) -> Iterator[Session]:
    with runtime(app).sessions() as session:
        yield session


@pytest.fixture
def engine(app: Flask) -> Engine:
    return runtime(app).engine


@pytest.fixture
def editor_headers(session: Session) -> dict[str, str]:
    _, token = create_editor(session, "editor@example.com", password="correct horse")
    session.commit()
    return {"Authorization": f"Bearer {token}"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto's standalone server) on a free loopback port,
    for the test run. Tests reach it over HTTP with boto3, as they would a real bucket."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as error:
        message = f"moto[server] is not installed ({error}): the S3 tests need it"
        if REQUIRE_S3:
            pytest.fail(message)
        pytest.skip(message)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "keyart-test",
    "AWS_SECRET_ACCESS_KEY": "keyart-test-secret",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """boto3's standard environment pointed at the test server (set in this process too)."""
    env = {**S3_ENV, "AWS_ENDPOINT_URL": s3_endpoint}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # No stray profile or config file on the machine may redirect the client.
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return env


@pytest.fixture
def s3_media_url(s3_env: dict[str, str]) -> str:
    """A new, empty bucket on the test server, as a KEYART_MEDIA_URL with a prefix."""
    import boto3

    bucket = f"keyart-{uuid.uuid4().hex[:16]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/media-test"
