"""What an operator reads: JSON log lines with request ids (the app's and gunicorn's access
log, from a real `keyart serve`), and the metrics of uploads, modes and serving policy."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.helpers import poster_bytes, upload
from tests.live import ROOT, LiveServer
from web import logs


def test_request_ids_are_taken_or_made_and_returned(client: FlaskClient) -> None:
    mine = client.get("/healthz", headers={"X-Request-ID": "trace-123.abc"})
    assert mine.headers["X-Request-ID"] == "trace-123.abc"
    made = client.get("/healthz")
    assert len(made.headers["X-Request-ID"]) == 32
    assert made.headers["X-Request-ID"] != client.get("/healthz").headers["X-Request-ID"]
    # Not an id we would put in every log line: replaced by one of ours.
    odd = client.get("/healthz", headers={"X-Request-ID": "a b\tc" + "x" * 200})
    assert odd.headers["X-Request-ID"] != "a b\tc" and len(odd.headers["X-Request-ID"]) == 32
    errors = client.get("/api/v1/titles/none/artwork", headers={"X-Request-ID": "on-error"})
    assert errors.status_code == 404 and errors.headers["X-Request-ID"] == "on-error"


def test_every_line_a_request_logs_carries_its_id(
    app: Flask, client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    @app.get("/test-logs")
    def _logs() -> str:
        logging.getLogger("keyart.test").warning("inside the request", extra={"n": 1})
        return "ok"

    logs.configure_logging("INFO")
    try:
        client.get("/test-logs", headers={"X-Request-ID": "req-42"})
        logging.getLogger("keyart.test").warning("outside any request")
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "_keyart", False)]:
            root.removeHandler(handler)
        root.setLevel(logging.WARNING)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    inside = next(line for line in lines if line["message"] == "inside the request")
    assert inside["request_id"] == "req-42" and inside["level"] == "WARNING"
    assert inside["n"] == 1 and inside["logger"] == "keyart.test" and "time" in inside
    outside = next(line for line in lines if line["message"] == "outside any request")
    assert "request_id" not in outside


def _sample(scraped: str, name: str) -> float:
    for line in scraped.splitlines():
        if line.startswith(name + " ") or (
            line.startswith(name + "{") and line.split(" ")[0] == name
        ):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_upload_outcomes_and_decision_modes_are_counted(
    client: FlaskClient, editor_headers: dict[str, str]
) -> None:
    def scrape() -> str:
        return client.get("/metrics").get_data(as_text=True)

    before = scrape()
    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    assert upload(client, editor_headers, "show", poster_bytes("M")).status_code == 201
    assert upload(client, editor_headers, "show", poster_bytes("M")).status_code == 409
    assert upload(client, editor_headers, "show", b"not an image").status_code == 415
    client.post("/api/v1/decisions", json={"titles": ["show"]})
    after = scrape()
    for outcome, more in (("created", 1), ("duplicate_artwork", 1)):
        name = f'keyart_uploads_total{{outcome="{outcome}"}}'
        assert _sample(after, name) - _sample(before, name) == more
    assert 'keyart_uploads_total{outcome="' in after and "unsupported" in after
    name = 'keyart_decision_modes_total{mode="single"}'
    assert _sample(after, name) - _sample(before, name) == 1
    assert "keyart_fallback_answers_total" in after
    assert "keyart_serving_policy_version" in after
    assert "keyart_learner_lag_seconds 0.0" in after
    # No learner runs in this test: no leader is named.
    assert "keyart_learner_leader{" not in after


def test_gunicorn_access_log_is_json_with_the_request_id(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**cli_env, "KEYART_LOG_LEVEL": "INFO"}
    log_path = tmp_path / "serve.log"
    # Ready when /healthz answers, asked as a load balancer would, with its request id.
    from_the_lb = {"X-Request-ID": "from-the-lb"}
    with LiveServer(env, log_path, ready_path="/healthz", ready_headers=from_the_lb) as server:
        request = urllib.request.Request(f"{server.base}/healthz", headers=from_the_lb)
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.headers["X-Request-ID"] == "from-the-lb"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = [
                json.loads(line)
                for line in log_path.read_text().splitlines()
                if line.startswith("{")
            ]
            access = [line for line in lines if line.get("logger") == "gunicorn.access"]
            if access:
                break
            time.sleep(0.2)
        assert access, log_path.read_text()
        line = access[0]
        assert line["request_id"] == "from-the-lb" and line["status"] == 200
        assert line["method"] == "GET" and line["path"] == "/healthz"
        # Nothing on stderr but JSON lines.
        assert all(text.startswith("{") for text in log_path.read_text().splitlines() if text)


def _printed_by(script: str, cli_env: dict[str, str]) -> list[str]:
    """What `script` prints, run as `python -c` in a process of its own (with the test's
    var dir and database URL as its arguments): what it changes is the whole process's."""
    env = {**os.environ, **cli_env, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", script, cli_env["KEYART_VAR_DIR"], cli_env["KEYART_DATABASE_URL"]],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()


def test_a_server_process_hands_the_gil_on_within_half_a_millisecond(
    cli_env: dict[str, str],
) -> None:
    # As gunicorn's workers build it (`web:create_app()`, settings from the environment), in
    # a process of its own: the interval is the whole interpreter's. An app built from
    # given settings (a test's, an embedding program's) leaves the interpreter's alone.
    script = (
        "import sys; from pathlib import Path; from web import create_app;"
        " from web.config import Settings; before = sys.getswitchinterval();"
        " create_app(Settings(var_dir=Path(sys.argv[1]), database_url=sys.argv[2]));"
        " given = sys.getswitchinterval(); create_app();"
        " print(before, given, sys.getswitchinterval())"
    )
    out = _printed_by(script, cli_env)
    assert [float(value) for value in out] == [0.005, 0.005, 0.0005]


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
def test_a_server_process_runs_its_threads_as_batch_threads(cli_env: dict[str, str]) -> None:
    # Threads started after the app is built (gunicorn's request pool, the log's writer)
    # inherit it; an app built from given settings leaves the process's scheduling alone.
    script = (
        "import os, sys, threading; from pathlib import Path; from web import create_app;"
        " from web.config import Settings; seen = [os.sched_getscheduler(0)];"
        " create_app(Settings(var_dir=Path(sys.argv[1]), database_url=sys.argv[2]));"
        " seen.append(os.sched_getscheduler(0)); create_app();"
        " seen.append(os.sched_getscheduler(0));"
        " thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)));"
        " thread.start(); thread.join(); print(*seen)"
    )
    out = _printed_by(script, cli_env)
    normal, batch = os.SCHED_OTHER, os.SCHED_BATCH
    assert [int(value) for value in out] == [normal, normal, batch, batch]


# What a process prints of the CPUs it may run on, as "0,1".
_SHOW_CPUS = "show = lambda cpus: ','.join(map(str, sorted(cpus)));"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_each_server_process_runs_on_a_cpu_of_its_own(cli_env: dict[str, str]) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    every = ",".join(map(str, cpus))
    # A serving process that holds its CPU until its stdin closes, as a worker holds it for
    # its life; built from given settings first, which leaves the process's CPUs alone.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys; from pathlib import Path; from web import create_app;"
            " from web.config import Settings;" + _SHOW_CPUS + " seen = [];"
            " create_app(Settings(var_dir=Path(sys.argv[1]), database_url=sys.argv[2]));"
            " seen.append(show(os.sched_getaffinity(0))); create_app();"
            " print(*seen, show(os.sched_getaffinity(0)), flush=True); sys.stdin.read()",
            cli_env["KEYART_VAR_DIR"],
            cli_env["KEYART_DATABASE_URL"],
        ],
        env={**os.environ, **cli_env, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        given, held = holder.stdout.readline().split()
        # Another, while the first lives: the next CPU, for it and the threads it starts;
        # its upload pipeline's child runs on every CPU the process had.
        script = (
            "import os, sys, threading; from web import create_app;"
            " from artwork.pipeline import PipelineConfig; from artwork.renditions import Preset;"
            " from tests.artwork import samples;" + _SHOW_CPUS + " app = create_app();"
            " seen = [show(os.sched_getaffinity(0))];"
            " thread = threading.Thread(target=lambda: seen.append(show(os.sched_getaffinity(0))));"
            " thread.start(); thread.join(); pipeline = app.extensions['keyart'].pipeline;"
            " pipeline(samples.encoded(samples.scene(seed=3), 'JPEG'),"
            " PipelineConfig((Preset('boxart-200', 200, 300),)), None);"
            " (child,) = pipeline._pool._processes; seen.append(show(os.sched_getaffinity(child)));"
            " pipeline.close(); print(*seen)"
        )
        second = _printed_by(script, cli_env)
        unpinned = _printed_by(script, {**cli_env, "KEYART_PIN_WORKERS": "0"})
    finally:
        holder.communicate("", timeout=60)
    # Once the first has ended, its CPU is free again: the next process takes it.
    script = "import os; from web import create_app;" + _SHOW_CPUS + " create_app();"
    (third,) = _printed_by(script + " print(show(os.sched_getaffinity(0)))", cli_env)
    assert given == every
    if len(cpus) < 2:
        assert [held, *second, third] == [every] * 5  # nothing to choose between
        return
    first, next_one = str(cpus[0]), str(cpus[1])
    assert held == first
    assert second == [next_one, next_one, every]
    assert unpinned == [every, every, every]
    assert third == first


def test_a_server_process_keeps_what_it_starts_with_out_of_the_collectors_sight(
    cli_env: dict[str, str],
) -> None:
    # Built from the environment, a serving process freezes what it has made by then (the
    # modules, the app), so full collections do not walk it; built from given settings,
    # the app leaves the interpreter's collector alone.
    script = (
        "import gc, sys; from pathlib import Path; from web import create_app;"
        " from web.config import Settings;"
        " create_app(Settings(var_dir=Path(sys.argv[1]), database_url=sys.argv[2]));"
        " given = gc.get_freeze_count(); app = create_app();"
        " print(given, gc.get_freeze_count(), any(o is app for o in gc.get_objects()))"
    )
    given, served, tracked = _printed_by(script, cli_env)
    assert int(given) == 0
    assert int(served) > 10_000
    assert tracked == "False"  # frozen, the app is no longer among the collected


def test_the_served_policy_version_and_age_are_reported(
    app: Flask, client: FlaskClient, editor_headers: dict[str, str], session
) -> None:  # type: ignore[no-untyped-def]
    from datetime import timedelta

    from bandit.learner import RewardConfig, learn_once
    from bandit.models import utcnow
    from tests.helpers import runtime

    client.post("/api/v1/titles", json={"id": "show", "name": "Show"}, headers=editor_headers)
    for composition in ("portrait", "landscape"):
        assert (
            upload(client, editor_headers, "show", poster_bytes("V", composition)).status_code
            == 201
        )
    client.post("/api/v1/decisions", json={"titles": ["show"]})
    report = learn_once(
        session, runtime(app).settings.vw_args, RewardConfig(), now=utcnow() + timedelta(days=1)
    )
    assert report.version == 1
    runtime(app).policy.refresh()
    scraped = client.get("/metrics").get_data(as_text=True)
    assert "keyart_serving_policy_version 1.0" in scraped
    age = _sample(scraped, "keyart_serving_policy_age_seconds")
    assert 0 < age < 3600  # 0.0 exactly would be the gauge never set
