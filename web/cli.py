"""The `keyart` command line. Each command builds what it needs from the environment's
settings; a bad setting or argument exits non-zero with a one-line reason."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from typing import Any

import click

from web.config import ConfigError, Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """keyart: personalised artwork, chosen by a contextual bandit."""


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Migrate the configured database to the latest schema."""
    from web.db import make_engine, upgrade

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    click.echo(f"database at {engine.url.render_as_string(hide_password=True)} is up to date")


@main.command()
@click.option("--once", is_flag=True, help="One pass over the log, then exit.")
def learn(once: bool) -> None:
    """Teach the policy from decisions whose reward window has closed."""
    from bandit.learner import RewardConfig, learn_forever, learn_once
    from web.db import make_engine, make_sessionmaker

    settings = _settings()
    sessions = make_sessionmaker(make_engine(settings.database_url))
    rewards = RewardConfig(
        dict(settings.reward_values),
        settings.reward_wait,
        settings.reward_aggregation,
        settings.reward_settle,
    )
    if once:
        with sessions() as session:
            report = learn_once(session, settings.vw_args, rewards)
        click.echo(
            f"learned {report.learned} decisions, skipped {report.skipped}; "
            f"cursor {report.cursor}; policy version {report.version or 'unchanged'}"
        )
        return
    stopping = False

    def _stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    every, wait = settings.learn_interval_seconds, settings.reward_wait
    click.echo(f"learning every {every:g}s (reward wait {wait:g}s)")
    learn_forever(
        sessions, settings.vw_args, rewards, settings.learn_interval_seconds, lambda: stopping
    )


@main.group()
def editor() -> None:
    """Editor accounts."""


@editor.command("create")
@click.argument("email")
@click.option("--admin", is_flag=True, help="May manage other editors.")
@click.option("--password-stdin", is_flag=True, help="Read a studio password from standard input.")
def editor_create(email: str, admin: bool, password_stdin: bool) -> None:
    """Create an editor; prints its API token on the last line."""
    from web.auth import create_editor
    from web.db import make_engine, make_sessionmaker

    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if len(password) < 8:
            raise click.ClickException("the password must be at least 8 characters")
    settings = _settings()
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        try:
            created, token = create_editor(session, email, password=password, is_admin=admin)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        session.commit()
        click.echo(f"editor {created.email} created")
    click.echo(token)


DEMO_EDITOR = "demo@keyart.local"


@main.command()
def demo() -> None:
    """Load the demo catalog (titles that already exist are left alone) and reset the demo
    editor's password and token, printing them."""
    from sqlalchemy import delete

    from artwork import catalog
    from artwork.demo import demo_catalog
    from artwork.errors import ArtworkError
    from artwork.models import Title
    from artwork.store import BlobStore
    from web.auth import create_editor
    from web.db import make_engine, make_sessionmaker
    from web.models import Editor

    settings = _settings()
    store = BlobStore(settings.media_dir)
    added = 0
    with make_sessionmaker(make_engine(settings.database_url))() as session:
        for title in demo_catalog():
            if session.get(Title, title.id) is not None:
                continue
            catalog.create_title(session, title.id, title.name, title.genres)
            for variant in title.variants:
                try:
                    catalog.add_artwork(
                        session,
                        store,
                        title.id,
                        catalog.Upload(variant.jpeg, variant.label, variant.tags),
                        presets=settings.presets,
                    )
                except ArtworkError as error:
                    raise click.ClickException(f"{title.id}: {error.message}") from None
            session.commit()
            added += 1
            click.echo(f"  {title.id}: {len(title.variants)} variants")
        password = secrets.token_urlsafe(9)
        session.execute(delete(Editor).where(Editor.email == DEMO_EDITOR))
        _, token = create_editor(session, DEMO_EDITOR, password=password, is_admin=True)
        session.commit()
    click.echo(f"demo catalog: {added} titles added")
    click.echo(f"demo editor: {DEMO_EDITOR}  password: {password}")
    click.echo(f"demo editor API token: {token}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--threads",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Threads per worker: concurrent requests share decision-log commits.",
)
@click.option("--no-learner", is_flag=True, help="Serve only; run `keyart learn` elsewhere.")
@click.option("--dev", is_flag=True, help="Flask's reloading development server.")
def serve(host: str, port: int, workers: int, threads: int, no_learner: bool, dev: bool) -> None:
    """Serve the API, the studio and media (gunicorn), with an embedded learner."""
    settings = _settings()
    # Each gunicorn worker writes its metrics here; /metrics sums them.
    metrics_dir = settings.var_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())

    learner = None
    if not no_learner:
        learner = subprocess.Popen([sys.executable, "-m", "web.cli", "learn"])
    try:
        click.echo(f"keyart serving on http://{host}:{port}/ (studio at /studio/)")
        if dev:
            from web import create_app

            create_app(settings).run(host=host, port=port, debug=True, use_reloader=False)
        else:
            _gunicorn(host, port, workers, threads)
    finally:
        if learner is not None:
            learner.terminate()
            learner.wait(timeout=30)


def _gunicorn(host: str, port: int, workers: int, threads: int = 1) -> None:
    from gunicorn.app.base import BaseApplication
    from prometheus_client import multiprocess

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            # Threaded workers, so a process's concurrent requests share group commits.
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("accesslog", None)
            self.cfg.set(
                "child_exit", lambda _server, worker: multiprocess.mark_process_dead(worker.pid)
            )

        def load(self) -> Any:
            # Runs in each worker after the fork: its own engine, VW model and RNG.
            from web import create_app

            return create_app()

    Server().run()


if __name__ == "__main__":
    main()
