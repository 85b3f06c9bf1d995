"""The `keyart` command line. Each command builds what it needs from the environment's
settings; a bad setting or argument exits non-zero with a one-line reason."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from artwork.store import StoreUnavailable
from web.config import ConfigError, Settings, load_settings
from web.errors import first_line

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from bandit.leadership import LearnerSteps
    from bandit.optimizer import Optimization
    from bandit.rewards import RewardConfig


def _stop_on_signals() -> Callable[[], bool]:
    """Whether SIGTERM or SIGINT has arrived since this was called (long-running commands
    finish what they are doing and exit, rather than die mid-write)."""
    stopped = False

    def _stop(*_: Any) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return lambda: stopped


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None


@contextmanager
def _sessions(settings: Settings, require_schema: bool = True) -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured database, its connections closed when the command ends.
    With `require_schema`, first stop unless the database has been migrated."""
    from web.db import make_engine, make_sessionmaker

    engine = make_engine(settings.database_url)
    try:
        if require_schema:
            _require_schema(engine)
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()


def _require_schema(engine: Engine) -> None:
    """Stop with a message if the database lacks keyart's schema or is behind it, rather than
    fail on the first missing table or column. A database ahead of this keyart's migrations
    (a newer release shares it) is let through."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from web.db import alembic_config

    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    where = engine.url.render_as_string(hide_password=True)
    scripts = ScriptDirectory.from_config(alembic_config(where))  # only read, never run
    known = {script.revision for script in scripts.walk_revisions()}
    if not current:
        raise click.ClickException(
            f"the database at {where} has no keyart schema: run `keyart db upgrade`"
        )
    if current <= known and current != set(scripts.get_heads()):
        raise click.ClickException(
            f"the database at {where} is at an older schema ({', '.join(sorted(current))}): "
            "run `keyart db upgrade`"
        )


class _Commands(click.Group):
    """keyart's command group: a database or file system failure in any command ends it
    with a one-line error and exit status 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SQLAlchemyError as error:
            # A driver's message (e.g. psycopg's "connection refused") without SQLAlchemy's
            # SQL, parameters and link, which run over several lines.
            reason = (error.orig if isinstance(error, DBAPIError) else None) or error
            raise click.ClickException(f"database error: {first_line(reason)}") from None
        except BrokenPipeError:
            raise  # click's own handling: standard output went away
        except StoreUnavailable as error:
            raise click.ClickException(f"media store error: {first_line(error)}") from None
        except OSError as error:
            if error.filename is not None and error.strerror:
                raise click.ClickException(f"{error.filename}: {error.strerror}") from None
            raise click.ClickException(first_line(error)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """keyart: personalised artwork, chosen by a contextual bandit."""
    from web.logs import configure_logging

    # One JSON object per log line on stderr. One-shot commands log warnings and worse
    # unless KEYART_LOG_LEVEL says otherwise (their output is their answer); `serve` and
    # `learn` log at KEYART_LOG_LEVEL (default INFO). A bad level is reported by
    # the command's own _settings().
    level = (os.environ.get("KEYART_LOG_LEVEL") or "WARNING").strip().upper()
    configure_logging(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "WARNING")


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
    """Teach the policy from decisions whose reward window has closed. One learner learns
    per database: others (on any host) stand by and take over when it dies."""
    from bandit.leadership import current_leader, lead_and_learn, learner_lock
    from bandit.learner import learn_once
    from web.logs import configure_logging

    settings = _settings()
    if not once:
        configure_logging(settings.log_level)
    steps = learner_steps(settings)

    lock = learner_lock(settings.database_url, settings.learner_takeover_seconds)
    if once:
        with _sessions(settings) as sessions:
            if lock is not None and not lock.try_acquire():
                with sessions() as session:
                    leader = current_leader(session)
                who = f"{leader.pid}@{leader.host}" if leader else "another process"
                raise click.ClickException(f"{who} is the learner now: not learning alongside it")
            try:
                with sessions() as session:
                    try:
                        vw_args, rewards = steps.settings(session)
                    except ConfigError as error:
                        raise click.ClickException(f"stored policy settings: {error}") from None
                    report = learn_once(
                        session, vw_args, rewards, retrain_days=settings.retrain_days
                    )
            finally:
                if lock is not None:
                    lock.close()
        click.echo(
            f"learned {report.learned} decisions, skipped {report.skipped}; "
            f"cursor {report.cursor}; policy version {report.version or 'unchanged'}"
        )
        if report.training is not None:
            trained = report.training
            state = "now serves" if report.switched else "is catching up"
            click.echo(
                f"lineage {trained.lineage_id} for the new settings learned {trained.learned} "
                f"decisions (cursor {trained.cursor}) and {state}"
            )
        return
    stopping = _stop_on_signals()
    every, wait = settings.learn_interval_seconds, settings.reward_wait
    click.echo(f"learning every {every:g}s (reward wait {wait:g}s)")
    # No schema check: the long-running learner (the one `keyart serve` starts) rides out a
    # database that is down or not yet migrated, backing off and trying again.
    try:
        with _sessions(settings, require_schema=False) as sessions:
            lead_and_learn(
                sessions,
                lock,
                steps.settings,
                every,
                settings.learner_takeover_seconds,
                stopping,
                retrain_days=settings.retrain_days,
                after_pass=steps.after_pass,
            )
    finally:
        if lock is not None:
            lock.close()


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

    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if len(password) < 8:
            raise click.ClickException("the password must be at least 8 characters")
    settings = _settings()
    with _sessions(settings) as sessions, sessions() as session:
        try:
            created, token = create_editor(session, email, password=password, is_admin=admin)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        session.commit()
        click.echo(f"editor {created.email} created")
    click.echo(token)


# `.example` is reserved for documentation (RFC 2606), so this is nobody's mailbox, and
# email-validator (behind the studio's sign-in form) accepts it, unlike `.local` or `.test`.
DEMO_EDITOR = "demo@keyart.example"


@main.command()
@click.option(
    "--traffic",
    is_flag=True,
    help="Instead: send a small simulated audience to the server at --url until stopped "
    "(what `keyart serve --demo-traffic` runs beside the server).",
)
@click.option(
    "--url",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="With --traffic: the server's address.",
)
@click.option(
    "--rate",
    default=4.0,
    show_default=True,
    type=click.FloatRange(min=0, min_open=True, max=1000),
    help="With --traffic: page views per second.",
)
def demo(traffic: bool, url: str, rate: float) -> None:
    """Load the demo catalog (titles that already exist are left alone) and reset the demo
    editor's password and token, printing them. With --traffic, send a simulated audience
    to a running server instead."""
    if traffic:
        _demo_traffic(url, rate)
        return
    from sqlalchemy import delete

    from artwork import catalog
    from artwork.demo import demo_catalog
    from artwork.errors import ArtworkError
    from artwork.models import Title
    from web.auth import create_editor
    from web.models import Editor

    settings = _settings()
    store = settings.blob_store()
    added = 0
    with _sessions(settings) as sessions, sessions() as session:
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
                        config=settings.pipeline_config(),
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


def _demo_traffic(url: str, rate: float) -> None:
    from urllib.parse import urlsplit

    from web.demo_traffic import Audience, demo_titles, run

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.ClickException(f"--url must be an http:// or https:// address, got {url!r}")
    stopping = _stop_on_signals()
    audience = Audience(url.rstrip("/"), demo_titles(), rate)
    click.echo(f"demo traffic: {rate:g} page views a second to {url} (stop with Ctrl-C)")
    made = run(audience, stopping, report=click.echo)
    click.echo(f"demo traffic: stopped after {made} decisions")


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
@click.option(
    "--demo-traffic",
    is_flag=True,
    help="Also run `keyart demo --traffic` against this server, stopped with it.",
)
def serve(
    host: str,
    port: int,
    workers: int,
    threads: int,
    no_learner: bool,
    dev: bool,
    demo_traffic: bool,
) -> None:
    """Serve the API, the studio and media (gunicorn), with an embedded learner."""
    from web.logs import configure_logging

    settings = _settings()
    try:
        settings.require_shared_secret()
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    configure_logging(settings.log_level)
    # Each gunicorn worker writes its metrics here; /metrics sums them.
    metrics_dir = settings.var_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir.resolve())

    children = []
    if not no_learner:
        children.append(subprocess.Popen([sys.executable, "-m", "web.cli", "learn"]))
    if demo_traffic:
        # The audience reaches the server as a client would, on the loopback if it listens
        # on every address.
        client_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
        url = f"http://{client_host}:{port}"
        command = [sys.executable, "-m", "web.cli", "demo", "--traffic", "--url", url]
        children.append(subprocess.Popen(command))  # noqa: S603 (keyart's own command line)
    try:
        click.echo(f"keyart serving on http://{host}:{port}/ (studio at /studio/)")
        if dev:
            from web import create_app

            create_app(settings).run(host=host, port=port, debug=True, use_reloader=False)
        else:
            _gunicorn(host, port, workers, threads)
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(timeout=30)


def _gunicorn(host: str, port: int, workers: int, threads: int = 1) -> None:
    from gunicorn.app.base import BaseApplication
    from prometheus_client import multiprocess

    from web.logs import JsonAccessLogger

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            # Threaded workers, so a process's concurrent requests share group commits.
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            # A listening socket per worker (SO_REUSEPORT): the kernel spreads connections
            # across workers. With one shared socket, whichever worker won the accept races
            # could keep most of a client's (or a proxy's) keep-alive connections while the
            # others idled: benchmarks/serve.py once measured its floor at 4,706 and then
            # 1,560 req/s within one run.
            self.cfg.set("reuse_port", True)
            # The access log as JSON lines on stderr, with each request's id (web/logs.py).
            self.cfg.set("accesslog", "-")
            self.cfg.set("logger_class", JsonAccessLogger)
            self.cfg.set(
                "child_exit", lambda _server, worker: multiprocess.mark_process_dead(worker.pid)
            )

        def load(self) -> Any:
            # Runs in each worker after the fork: its own engine, VW model and RNG.
            from web import create_app

            return create_app()

    Server().run()


def _log_filters(func: Any) -> Any:
    for option in reversed(
        (
            click.option("--title", help="Only this title's decisions."),
            click.option("--segment", help="Only decisions whose context segment is this."),
            click.option("--since", type=click.DateTime(), help="From this UTC time on."),
            click.option("--until", type=click.DateTime(), help="Before this UTC time."),
        )
    ):
        func = option(func)
    return func


@main.command()
@click.option(
    "--dsjson",
    "path",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the decision log to this file as VW DSJSON.",
)
@_log_filters
def export(
    path: Path,
    title: str | None,
    segment: str | None,
    since: datetime | None,
    until: datetime | None,
) -> None:
    """Export the decision log (decisions whose reward window has closed, with their
    rewards) as VW DSJSON lines."""
    from bandit.dsjson import write_dsjson
    from bandit.evaluation import logged_events

    settings = _settings()
    rewards = settings.reward_config()
    partial = path.with_name(path.name + ".partial")
    try:
        with _sessions(settings) as sessions, sessions() as session:
            try:
                # Checks its arguments when called, before any file is opened.
                events = logged_events(
                    session, rewards, since=since, until=until, slot=title, segment=segment
                )
            except ValueError as error:
                raise click.ClickException(str(error)) from None
            with partial.open("w", encoding="utf-8") as out:
                written = write_dsjson(events, out)
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise click.ClickException(f"cannot write {path}: {error.strerror}") from None
    # Written aside and moved into place, so a failed export never leaves half a file.
    partial.replace(path)
    click.echo(f"exported {written} decisions to {path}")


@main.command()
@click.option(
    "--dsjson",
    "path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Evaluate this DSJSON file instead of the SQL log.",
)
@click.option(
    "--vw-args",
    "vw_args",
    multiple=True,
    help="A candidate VW argument set, trained progressively over the log (repeatable; "
    "default: the configured KEYART_VW_ARGS).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_log_filters
@click.option("--clip", type=click.FloatRange(min=0, min_open=True), help="Clip weights at this.")
@click.option("--bootstrap", is_flag=True, help="Bootstrap intervals instead of normal ones.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap.")
@click.option(
    "--snapshot/--no-snapshot",
    default=None,
    help="Include the current policy snapshot (default: on for the SQL log, off for DSJSON).",
)
@click.option("--no-save", is_flag=True, help="Do not store the SQL log's evaluation.")
@click.option(
    "--each-title/--no-each-title",
    default=True,
    show_default=True,
    help="With the whole SQL log, also store each title's share of the evaluation.",
)
def evaluate(
    path: Path | None,
    vw_args: tuple[str, ...],
    as_json: bool,
    title: str | None,
    segment: str | None,
    since: datetime | None,
    until: datetime | None,
    clip: float | None,
    bootstrap: bool,
    seed: int,
    snapshot: bool | None,
    no_save: bool,
    each_title: bool,
) -> None:
    """Estimate offline what the logged policy, uniform random, the editor's default, the
    current snapshot and candidate VW settings earn on the logged traffic."""
    import json

    from bandit.dsjson import DsjsonError, read_dsjson
    from bandit.evaluation import (
        EvaluationConfig,
        evaluate_dsjson,
        evaluate_events,
        jsonable,
        logged_events,
        save_evaluation,
    )
    from bandit.snapshots import load_latest

    settings = _settings()
    try:
        config = EvaluationConfig(
            candidates=vw_args or (settings.vw_args,),
            clip=clip,
            interval="bootstrap" if bootstrap else "normal",
            seed=seed,
        )
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    try:
        if path is not None:
            if title or segment or since or until:
                raise click.ClickException("--title/--segment/--since/--until apply to the SQL log")
            lines = read_dsjson(path)
            policy = None
            if snapshot:
                with _sessions(settings) as sessions, sessions() as session:
                    policy, found = load_latest(session, settings.vw_args)
                    policy = policy if found else None
            result = evaluate_dsjson(lines, config, policy)
            result["source"] = str(path)
        else:
            with _sessions(settings) as sessions, sessions() as session:
                rewards = settings.reward_config()
                events = list(
                    logged_events(
                        session, rewards, since=since, until=until, slot=title, segment=segment
                    )
                )
                policy = None
                if snapshot is not False:
                    policy, found = load_latest(session, settings.vw_args)
                    policy = policy if found else None
                result = evaluate_events(
                    events,
                    config,
                    policy,
                    _default_artworks(session),
                    by_slot=each_title and title is None,
                )
                result["source"] = "sql"
                titles = result.pop("groups", {})
                if not no_save:
                    window = {"segment": segment, "since": since, "until": until}
                    saved = save_evaluation(session, result, slot=title, **window)
                    for slot, part in titles.items():
                        part["source"] = "sql"
                        part["scope"] = "this title's events; policies trained on the whole log"
                        save_evaluation(session, part, slot=slot, **window)
                    session.commit()
                    result["evaluation_id"] = saved.id
                    result["titles_saved"] = len(titles)
    except (DsjsonError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(jsonable(result), indent=2, default=str, allow_nan=False))
        return
    click.echo(_evaluation_table(result))


def _default_artworks(session: Any) -> dict[str, str]:
    from sqlalchemy import select

    from artwork.models import Title

    return {
        title_id: default
        for title_id, default in session.execute(select(Title.id, Title.default_artwork_id))
        if default
    }


def _evaluation_table(result: dict[str, Any]) -> str:
    if not result["events"]:
        return "0 events: nothing to estimate"
    lines = [
        f"{result['events']} events ({result['interval']} intervals"
        + (f", weights clipped at {result['clip']:g}" if result.get("clip") else "")
        + ")",
        f"{'policy':<52} {'estimator':<10} {'value':>8}  {'95% interval':<19} {'ESS':>8}",
    ]
    for policy in result["policies"]:
        for name, estimate in policy["estimates"].items():
            lower, upper = estimate["ci95"]
            lines.append(
                f"{policy['name'][:52]:<52} {name:<10} {estimate['value']:>8.4f}  "
                f"[{lower:>7.4f}, {upper:>7.4f}] {estimate['effective_sample_size']:>8.1f}"
            )
        if not policy["trustworthy"]:
            lines.append(f"{'':<52} (few effective events: not to be trusted)")
    return "\n".join(lines)


@main.command()
@click.option(
    "--world",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A world file (.json or .toml); default: the world shipped with keyart.",
)
@click.option("--decisions", default=100_000, show_default=True, type=click.IntRange(min=10))
@click.option("--vw-args", help="VW arguments for keyart's policy (default: KEYART_VW_ARGS).")
@click.option(
    "--database-url",
    help="An empty database to log to (default: a temporary SQLite file).",
)
@click.option(
    "--png",
    default="simulation-regret.png",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the regret curve.",
)
@click.option("--seed", type=int, help="Traffic seed (default: the world's).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def simulate(
    world: Path | None,
    decisions: int,
    vw_args: str | None,
    database_url: str | None,
    png: Path,
    seed: int | None,
    as_json: bool,
) -> None:
    """Drive a synthetic world through keyart's real loop and compare it with baselines."""
    import json
    import shlex
    import tempfile
    from dataclasses import replace

    from sqlalchemy import func, select

    from bandit.models import Decision
    from bandit.policy import Policy
    from bandit.simulator import SimulationConfig, format_table, loss_split, plot_regret
    from bandit.simulator import simulate as run_simulation
    from bandit.world import WorldError, load_world
    from web.db import make_engine, make_sessionmaker, upgrade

    settings = _settings()
    try:
        loaded = load_world(world)
        # The server's own settings: the simulation decides as `keyart serve` would.
        config = SimulationConfig(
            decisions=decisions,
            vw_args=vw_args or settings.vw_args,
            exploration=settings.exploration(),
            seed=seed,
        )
        if "--cb_explore_adf" not in shlex.split(config.vw_args):
            raise ValueError("--vw-args must include --cb_explore_adf")
        Policy(config.vw_args)  # fail here, not mid-run, if VW rejects the arguments
        if database_url and not database_url.startswith(("sqlite://", "postgresql")):
            raise ValueError("--database-url must be an sqlite:/// or postgresql+psycopg:// URL")
    except (WorldError, ValueError) as error:
        raise click.ClickException(str(error)) from None
    except RuntimeError as error:
        raise click.ClickException(f"VW rejected --vw-args: {error}") from None
    with tempfile.TemporaryDirectory(prefix="keyart-simulate-") as tmp:
        url = database_url or f"sqlite:///{tmp}/simulate.db"
        engine = make_engine(url)
        try:
            upgrade(engine)
            sessions = make_sessionmaker(engine)
            with sessions() as session:
                if session.scalar(select(func.count()).select_from(Decision)):
                    raise click.ClickException(
                        "the simulation database already holds decisions; give an empty one"
                    )

            def _progress(done: int) -> None:
                if not as_json and done % 10_000 < config.learn_every:
                    click.echo(f"  {done} decisions", err=True)

            # With KEYART_AUTO_OPTIMIZE on, the simulated learner optimises as `keyart learn`
            # would, with the simulation's own arguments and reward window.
            steps = None
            if settings.auto_optimize:
                steps = learner_steps(
                    replace(settings, vw_args=config.vw_args, reward_wait=config.reward_wait)
                )
            result = run_simulation(loaded, sessions, config, _progress, steps)
        finally:
            engine.dispose()
    plot_regret(result, png)
    if as_json:
        click.echo(json.dumps({"summary": result.summary(), "png": str(png)}, indent=2))
        return
    summary = result.summary()
    click.echo(format_table(summary))
    for line in filter(None, map(loss_split, summary)):
        click.echo(line)
    for run in summary[0].get("optimizations", []):
        click.echo(f"optimiser, after {run['decisions']} decisions: {run['verdict']}")
    click.echo(f"regret curve: {png}")


@main.command()
@click.option(
    "--candidate",
    "candidates",
    multiple=True,
    help="Exploration arguments to try (repeatable; default: the built-in grid).",
)
@click.option(
    "--budget",
    type=click.FloatRange(1, 86_400),
    default=600.0,
    show_default=True,
    help="Seconds to spend scoring candidates at most.",
)
@click.option("--dry-run", is_flag=True, help="Score and report, but adopt nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON.")
def optimize(candidates: tuple[str, ...], budget: float, dry_run: bool, as_json: bool) -> None:
    """Score candidate learning settings on the retained log; adopt one whose 95% lower
    bound beats the serving settings (a new lineage then trains from the log)."""
    import json

    from bandit.evaluation import jsonable
    from bandit.lineages import stored_settings

    settings = _settings()
    with _sessions(settings) as sessions, sessions() as session:
        try:
            run = optimize_settings(
                session, settings, candidates=candidates, budget=budget, adopt=not dry_run
            )
        except ValueError as error:
            raise click.ClickException(str(error)) from None
        stored = stored_settings(session)
    if as_json:
        click.echo(json.dumps(jsonable(run.as_result()), indent=2))
        return
    click.echo(
        f"{run.events} decisions of the retained log; doubly robust estimates, and each "
        "setting's gain over the serving one on the same events, 95%:\n"
    )
    click.echo(
        "| exploration | interactions | estimate | 95% interval | gain | 95% interval | ESS |"
    )
    click.echo("|---|---|---:|---|---:|---|---:|")
    for row in run.rows:
        low, high = row["ci95"]
        mark = " (serving)" if row["serving"] else ""
        gain_low, gain_high = row["gain_ci95"]
        gain = "" if row["serving"] else f"{row['gain']:+.4f} | {gain_low:+.4f} to {gain_high:+.4f}"
        click.echo(
            f"| `{row['exploration_args']}`{mark} | {row['interactions']} "
            f"| {row['estimate']:.4f} | {low:.4f} to {high:.4f} | {gain or ' | '} "
            f"| {row['effective_sample_size']:.0f} |"
        )
    click.echo(f"\n{run.verdict}")
    if run.adopt is not None:
        if dry_run:
            click.echo("dry run: nothing stored")
        else:
            click.echo(
                f"stored as the policy settings ({', '.join(sorted(stored))}); the "
                "learner trains a lineage for them and serves it once it has caught up"
            )


def learner_steps(settings: Settings) -> LearnerSteps:
    """What `keyart learn` does around each pass, for every loop that learns as it does (the
    simulator, the quality benchmark): the pass's settings, the stored ones over the
    environment's, and with KEYART_AUTO_OPTIMIZE on, `optimize_when_due` after it."""
    from bandit.leadership import LearnerSteps
    from bandit.lineages import stored_settings
    from web.config import learning_settings

    def learning(session: Session) -> tuple[str, RewardConfig]:
        return learning_settings(settings, stored_settings(session))

    def optimise(session: Session, now: datetime) -> Optimization | None:
        return optimize_when_due(session, settings, now=now)

    return LearnerSteps(learning, optimise if settings.auto_optimize else None)


def optimize_when_due(
    session: Session, settings: Settings, *, now: datetime | None = None
) -> Optimization | None:
    """Run `optimize_settings` if the last run is at least the optimisation interval old
    and the serving lineage has learned enough decisions since; the run, or None if it was
    not due."""
    from sqlalchemy import select

    from bandit.lineages import describe
    from bandit.models import Evaluation, utcnow
    from bandit.snapshots import serving_lineage

    now = now or utcnow()
    lineage = serving_lineage(session)
    if lineage is None:
        return None
    learned = describe(session, lineage)["examples_learned"]
    last = None
    for evaluation in session.scalars(select(Evaluation).order_by(Evaluation.id.desc())):
        if evaluation.result.get("kind") == "optimization":
            last = evaluation
            break
    if last is not None:
        age = (now - last.created_at).total_seconds()
        since = learned - int(last.result.get("examples_learned") or 0)
        if age < settings.optimize_interval_seconds or since < settings.optimize_min_events:
            return None
    elif learned < settings.optimize_min_events:
        return None
    return optimize_settings(session, settings, now=now)


def optimize_settings(
    session: Session,
    settings: Settings,
    *,
    candidates: tuple[str, ...] = (),
    budget: float = 600.0,
    adopt: bool = True,
    now: datetime | None = None,
) -> Optimization:
    """One optimisation run over the retained log (`bandit.optimizer`) as of `now` (default:
    the clock's time), stored as an evaluation; its choice, if any, stored as the policy
    settings (unless not `adopt`)."""
    from datetime import timedelta

    from bandit.evaluation import logged_events, save_evaluation
    from bandit.lineages import describe, store_settings, stored_settings
    from bandit.models import utcnow
    from bandit.optimizer import LearningCandidate, default_grid, optimize
    from bandit.snapshots import serving_lineage
    from web.config import learning_settings

    now = now or utcnow()
    vw_args, rewards = learning_settings(settings, stored_settings(session))
    serving, bits = LearningCandidate.from_vw_args(vw_args)
    since = now - timedelta(days=settings.retrain_days) if settings.retrain_days else None
    events = list(logged_events(session, rewards, since=since, now=now))
    if not events:
        raise ValueError("no decisions whose reward window has closed in the retained log")
    grid = (
        [LearningCandidate(c, serving.interactions) for c in candidates]
        if candidates
        else default_grid()
    )
    run = optimize(events, serving, hash_bits=bits, grid=grid, budget_seconds=budget)
    lineage = serving_lineage(session)
    learned = describe(session, lineage)["examples_learned"] if lineage is not None else 0
    stored_run = save_evaluation(
        session, {**run.as_result(), "examples_learned": learned}, since=since
    )
    stored_run.created_at = now  # the interval between runs is counted from here
    if adopt and run.adopt is not None:
        stored = dict(stored_settings(session))
        stored["KEYART_VW_ARGS"] = run.adopt.exploration_args
        stored["KEYART_INTERACTIONS"] = run.adopt.interactions
        learning_settings(settings, stored)  # checked as the environment would be
        store_settings(session, stored, now)
    session.commit()
    return run


@main.group()
def artwork() -> None:
    """Artwork variants: renditions and features."""


@artwork.command("reprocess")
@click.option(
    "--batch-size",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Variants whose features are computed together and committed together.",
)
def artwork_reprocess(batch_size: int) -> None:
    """Rebuild renditions, features and placeholders of every variant not yet made with the
    current presets and feature code. Committed batch by batch: an interrupted run resumes
    where it stopped."""
    from artwork.catalog import reprocess, stale_artworks

    settings = _settings()
    config = settings.pipeline_config()
    store = settings.blob_store()
    with _sessions(settings) as sessions:
        with sessions() as session:
            pending = stale_artworks(session, config)
        if not pending:
            click.echo("every variant is up to date")
            return
        failed: dict[str, str] = {}
        with click.progressbar(length=len(pending), label="reprocessing", show_pos=True) as bar:
            for start in range(0, len(pending), batch_size):
                chunk = pending[start : start + batch_size]
                with sessions() as session:
                    result = reprocess(session, store, chunk, config)
                    session.commit()
                failed.update(result.failed)
                bar.update(len(chunk))
    for artwork_id, reason in failed.items():
        click.echo(f"  {artwork_id}: {reason}", err=True)
    click.echo(f"reprocessed {len(pending) - len(failed)} variants, {len(failed)} failed")
    if failed:
        raise SystemExit(1)


@main.group()
def media() -> None:
    """The media store: renditions and originals."""


@media.command("migrate")
@click.option(
    "--to",
    "target",
    required=True,
    metavar="s3://BUCKET/PREFIX",
    help="The bucket (and prefix) to copy the local media directory into.",
)
def media_migrate(target: str) -> None:
    """Copy the local media directory (KEYART_MEDIA_DIR) into an S3-compatible bucket, with
    boto3's usual AWS_* settings. Blobs the bucket already holds are skipped, so an
    interrupted run resumes; then set KEYART_MEDIA_URL to the same URL on every host."""
    from artwork.store import MEDIA, ORIGINALS, LocalBlobStore, S3BlobStore, S3Location

    settings = _settings()
    try:
        location = S3Location.parse(target)
    except ValueError as error:
        raise click.ClickException(f"--to {error}") from None
    if not settings.media_dir.is_dir():
        raise click.ClickException(f"{settings.media_dir}: no local media directory to copy")
    source = LocalBlobStore(settings.media_dir)
    destination = S3BlobStore(location)
    # Keys are content hashes: one already in the bucket holds exactly these bytes.
    pending = [
        (kind, key)
        for kind in (MEDIA, ORIGINALS)
        for key in sorted(set(source.keys(kind)) - set(destination.keys(kind)))
    ]
    held = sum(1 for kind in (MEDIA, ORIGINALS) for _ in source.keys(kind)) - len(pending)
    if not pending:
        click.echo(f"{location} already holds all {held} blobs of {settings.media_dir}")
        return
    with click.progressbar(pending, label=f"copying to {location}", show_pos=True) as bar:
        for kind, key in bar:
            data = source.read_key(kind, key)
            if data is not None:  # a blob removed meanwhile is not ours to bring back
                destination.put_key(kind, key, data)
    click.echo(f"copied {len(pending)} blobs to {location} ({held} were already there)")


if __name__ == "__main__":
    main()
