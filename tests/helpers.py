"""Small helpers the tests share."""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from artwork.demo import poster
from bandit.config import ExplorationConfig
from bandit.decision_log import GroupCommitLog
from bandit.decisions import DecisionRequest, DecisionService, ListedCandidates, Slot
from bandit.models import Decision
from bandit.policy import Policy
from web.state import Runtime

ROOT = Path(__file__).resolve().parents[1]


def runtime(app: Flask) -> Runtime:
    return app.extensions["keyart"]


def poster_bytes(
    name: str,
    composition: str = "portrait",
    palette: str = "dark",
    seed: int = 1,
    fmt: str = "JPEG",
) -> bytes:
    """A real poster image, drawn by the demo generator, encoded as `fmt`."""
    buffer = io.BytesIO()
    poster(name, composition, palette, seed).save(buffer, fmt)
    return buffer.getvalue()


def upload(client: FlaskClient, headers: dict[str, str], title: str, data: bytes, **form: str):  # type: ignore[no-untyped-def]
    return client.post(
        f"/api/v1/titles/{title}/artworks",
        data={"file": (io.BytesIO(data), "poster.jpg"), **form},
        headers=headers,
        content_type="multipart/form-data",
    )


class _Fixed:
    current: Policy

    def __init__(self, policy: Policy) -> None:
        self.current = policy


def decide(
    session: Session,
    policy: Policy,
    requests: Sequence[DecisionRequest],
    rng: random.Random,
    *,
    exploration: ExplorationConfig | None = None,
    now: datetime | None = None,
) -> list[Decision]:
    """Each request decided by the decision service and logged by the group-commit log, as
    a server would; the logged rows, read back in `session` (which is committed first, so
    that the log's writer is not kept waiting behind it)."""
    session.commit()
    log = GroupCommitLog(session.get_bind())
    event_ids = []
    try:
        for request in requests:
            slot = Slot(request.slot, request.candidates, request.default_id, request.slot_features)
            service = DecisionService(
                ListedCandidates([slot]),
                _Fixed(policy),
                log,
                exploration or ExplorationConfig(),
                rng,
            )
            decided = service.decide(
                [request.slot],
                request.context,
                user=request.user,
                deferred=request.deferred,
                now=now,
            )
            event_ids += [d.event_id for d in decided.decisions]
    finally:
        log.stop(timeout=30)
    found = {
        d.event_id: d
        for d in session.scalars(select(Decision).where(Decision.event_id.in_(event_ids)))
    }
    return [found[e] for e in event_ids]


def until(check: Callable[[], Any], seconds: float, what: str) -> Any:
    """`check()`'s first true answer, asked every tenth of a second for up to `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


def learner_env(cli_env: dict[str, str], **extra: str) -> dict[str, str]:
    """The environment of a `keyart learn` process on the test database: this worktree's
    code, a short learning interval, rewards joined as soon as a decision is logged, and
    JSON log lines at INFO; `extra` on top."""
    env = {
        **os.environ,
        **cli_env,
        "PYTHONPATH": str(ROOT),
        "KEYART_LEARN_INTERVAL": "0.2",
        "KEYART_REWARD_WAIT": "0",
        "KEYART_REWARD_SETTLE": "0",
        "KEYART_LOG_LEVEL": "INFO",
        **extra,
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


class Learners:
    """`keyart learn` processes on one database, each logging JSON lines to a file."""

    def __init__(self, env: dict[str, str], tmp: Path) -> None:
        self.env = env
        self.tmp = tmp
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        path = self.tmp / f"learner-{len(self.processes)}.log"
        with path.open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", "web.cli", "learn"],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        process.log_path = path  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    @staticmethod
    def lines(process: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
        text_ = process.log_path.read_text()  # type: ignore[attr-defined]
        return [json.loads(line) for line in text_.splitlines() if line.startswith("{")]

    def passes(self, process: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
        return [line for line in self.lines(process) if "learned" in line and "lag_seconds" in line]

    @staticmethod
    def kill(process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the learner and its VW worker (its process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in self.processes:
            self.kill(process)
