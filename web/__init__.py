"""HTTP for keyart: the app factory, one blueprint per audience, auth, validation, errors
and the `keyart` command line."""

from __future__ import annotations

import fcntl
import gc
import logging
import os
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, g, request

from artwork.isolation import shared_pipeline_process
from bandit.decision_log import GroupCommitLog
from bandit.snapshots import ServingPolicy
from web.config import Settings, load_settings
from web.db import ReadUnavailable, make_engine, make_sessionmaker
from web.errors import ApiError
from web.schemas import storable
from web.serving_catalog import CATALOG_VERSION, ServingCatalog
from web.state import Runtime

log = logging.getLogger(__name__)

# A serving process's GIL switch interval, in seconds (`create_app`).
SWITCH_INTERVAL = 0.0005

# Endpoints left out of `keyart_request_seconds`.
_UNTIMED = frozenset({"ops.healthz", "ops.readyz", "ops.prometheus"})


def make_decision_log(
    settings: Settings, kind: type[GroupCommitLog] = GroupCommitLog
) -> GroupCommitLog:
    """The group-commit log a serving process writes its decisions through."""
    return kind(
        # An engine (pool) of its own, so request threads can never starve the writer.
        make_engine(settings.database_url),
        settings.decision_commit_max,
        # A page not committed by then is withdrawn and answered from the catalog snapshot
        # instead (`web.personalize`).
        timeout_seconds=settings.decision_timeout,
        owns_engine=True,
        # Decisions made from a catalog older than the database's are refused (and made
        # again): what lets serving cache the catalog (web/serving_catalog.py).
        guard=CATALOG_VERSION,
        delay_seconds=settings.decision_commit_delay,
    )


def _batch_scheduling() -> None:
    """Make the calling thread, and the threads it starts from now on (gunicorn's request
    pool, the decision log's writer), batch threads (Linux's SCHED_BATCH): a thread woken
    by another (a request handed to the pool, rows to the writer, a commit to the requests
    waiting on it) then waits for a free core or its turn rather than preempting the
    waker, which holds the GIL and is about to let it go; preempting it only made the woken
    thread wait for the GIL while the holder sat descheduled. In four interleaved pairs per
    database, a single cost the workers 6-8% less CPU and a page decision 5-10% less, and
    on PostgreSQL pages rose from 1.33 to 1.54 times the hand-written peer's rate at 8
    connections (benchmarks/README.md). Left as it is where the system refuses it."""
    if not hasattr(os, "SCHED_BATCH"):
        return
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as error:
        log.info("serving threads keep the default scheduling: %s", error)


# A serving process's claim on its CPU: a lock held open for the process's life (`_one_cpu`).
_cpu_claims: list[int] = []


def _one_cpu(var_dir: Path) -> frozenset[int] | None:
    """Run this process, every thread it has and will start, on one CPU of those it may
    use, the first unclaimed by another serving process with this var dir (`var_dir/cpus/`:
    a lock per CPU and round, released as the process ends, so a replacement takes its
    place; more processes than CPUs share them round-robin). Returns the CPUs it could use
    before, or None where it stays as it was (one CPU, no affinity calls, no lock).

    A worker's threads hand work to each other all the time (gunicorn's pool, the log's
    writer, the GIL itself), and the GIL lets only one of them run at a time anyway. Waking
    a thread on another CPU cost the waker 10 µs in the lock release against 3 on its own
    CPU, and the round trip 46 µs of CPU against 16, on these virtual machines
    (benchmarks/wake.py). In three interleaved pairs of benchmarks/serve.py, single titles
    rose from 0.38 to 0.43 × the floor at 32 connections on SQLite and from 0.31 to 0.42 on
    PostgreSQL (higher in every pair); PostgreSQL's pages at 8 connections fell from 4.98 to
    4.67 × (benchmarks/README.md)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = frozenset(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return None
    try:
        claims = var_dir / "cpus"
        claims.mkdir(parents=True, exist_ok=True)
        for turn in range(64):
            for cpu in sorted(allowed):
                fd = os.open(claims / f"{cpu}.{turn}", os.O_CREAT | os.O_RDWR, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as error:
                    os.close(fd)
                    if isinstance(error, BlockingIOError):
                        continue  # another serving process holds this one
                    raise  # a file system without locks: stay as we are
                try:
                    _pin_threads(cpu)
                except OSError:
                    os.close(fd)  # not pinned after all: leave the CPU to another
                    raise
                _cpu_claims.append(fd)
                return allowed
    except OSError as error:
        log.info("serving threads keep every CPU: %s", error)
    return None


def _pin_threads(cpu: int) -> None:
    # Affinity is a thread's own: set it for each thread there is (new ones inherit it).
    tasks = "/proc/self/task"
    for thread in os.listdir(tasks) if os.path.isdir(tasks) else ["0"]:
        try:
            os.sched_setaffinity(int(thread), {cpu})
        except ProcessLookupError:
            continue  # it ended in the meantime


def create_app(
    settings: Settings | None = None, test_config: Mapping[str, Any] | None = None
) -> Flask:
    """Build the keyart app. `settings` defaults to the environment's; the database must
    already be migrated (`keyart db upgrade`)."""
    serving = settings is None
    unpinned: frozenset[int] | None = None
    if settings is None:  # not `serving`: type checkers narrow `settings` on this test
        settings = load_settings()
        # A server built from the environment (gunicorn's `web:create_app()` too) on
        # PostgreSQL must share its key with every other host.
        settings.require_shared_secret()
        # A thread that wants the GIL waits this long before the one running Python must
        # give it up (5 ms by default). The group commit's writer lets it go for each SQLite
        # step, and requests wait for its commit, so under load each hand-back could wait
        # out a request thread's turn. On SQLite, 0.5 ms took single titles from 0.36 to
        # 0.41 × the floor and pages from 3.96 to 5.37 at 8 connections (medians of six
        # interleaved pairs, benchmarks/README.md); PostgreSQL's moved within the noise.
        sys.setswitchinterval(SWITCH_INTERVAL)
        _batch_scheduling()
        unpinned = _one_cpu(settings.var_dir) if settings.pin_workers else None
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        # Flask refuses a longer body from its Content-Length, before reading it.
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + 64 * 1024,
        # The studio's cookie is not sent with other sites' cross-site posts at all (its
        # forms carry CSRF tokens as well). Not `Secure`: keyart may be served over plain
        # HTTP behind a proxy that terminates TLS.
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    if test_config:
        app.config.update(test_config)

    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    from web import metrics  # see below: after PROMETHEUS_MULTIPROC_DIR is set

    catalog = ServingCatalog(media_prefix=settings.media_prefix)

    def _after_poll(policy: ServingPolicy) -> None:
        metrics.observe_serving_policy(policy)
        # The snapshot fallback answers come from, kept as fresh as the policy.
        try:
            catalog.refresh(engine)
        except ReadUnavailable as error:
            log.warning("the catalog snapshot was not refreshed: %s", error)

    policy = ServingPolicy(
        sessions, settings.vw_args, settings.policy_poll_seconds, on_poll=_after_poll
    )
    app.extensions["keyart"] = Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        store=settings.blob_store(),
        catalog=catalog,
        policy=policy,
        rewards=settings.reward_config(),
        limits=settings.ingest_limits,
        # Seeded from the OS in each process (gunicorn workers build their own app).
        rng=random.Random(),
        # Uploads decode and measure images in a child, so this process never loads torch.
        # Uploads are processed on every CPU the process had before it was pinned.
        pipeline=shared_pipeline_process(settings.pipeline_timeout, cpus=unpinned)
        if settings.isolate_pipeline
        else None,
        exploration=settings.exploration(),
        decision_log=make_decision_log(settings),
    )

    @app.before_request
    def _start_policy_poller() -> None:
        # Started lazily so a thread never crosses a fork.
        policy.start()

    @app.before_request
    def _start_clock() -> None:
        # Probes and scrapes, every few seconds whatever the traffic, are not timed: they
        # would swamp a quiet service's latency figures.
        if request.endpoint not in _UNTIMED:
            g.request_started = time.perf_counter()

    @app.before_request
    def _refuse_unstorable_text() -> None:
        # Path segments, query values and form fields reach SQL as text (JSON bodies are
        # checked by their schemas): see `web.schemas.storable`. The path arrives decoded
        # and the query still percent-encoded, so most requests are cleared without parsing
        # either (an encoded surrogate decodes to U+FFFD, which is storable).
        fields = []
        if "\x00" in request.path:
            fields.append(("the URL path", request.path))
        if b"%00" in request.query_string:
            fields += [(f"query parameter {k!r}", k + v) for k, v in request.args.items(multi=True)]
        if request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            # A part without a name comes back with the name None (schemathesis found it).
            fields += [
                (f"form field {k!r}", (k or "") + v) for k, v in request.form.items(multi=True)
            ]
        for what, value in fields:
            try:
                storable(value)
            except ValueError as error:
                raise ApiError(400, "invalid_request", f"{what} {error}") from None

    # `web.metrics` is imported in here, not at the top: `keyart serve` must set
    # PROMETHEUS_MULTIPROC_DIR before prometheus_client makes any metric, and it imports
    # this package first.
    @app.teardown_request
    def _observe_latency(_exc: BaseException | None) -> None:
        started = g.get("request_started")
        if started is not None:
            # By Flask endpoint, not path: a bounded set of labels whatever clients ask for.
            endpoint = request.endpoint or "unmatched"
            metrics.REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - started)

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()

    from web import api, editor, errors, logs, media, ops, personalizer, studio

    logs.init_app(app)
    errors.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(editor.bp)
    app.register_blueprint(media.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(personalizer.bp)
    app.register_blueprint(studio.bp)
    if serving:
        # What exists now (modules, the app, its settings) lives as long as the process: out
        # of the collector's sight, a full collection no longer walks its ~121,000 objects.
        # Every request in flight waits out a collection. Under page load a worker's full
        # collections fell from 65-84 ms each to 1-2 ms (benchmarks/serve.py's
        # garbage-collection line), and in alternating ad hoc rounds a page's p99 at 8
        # connections fell by 3-4 ms (benchmarks/README.md).
        gc.freeze()
    return app
