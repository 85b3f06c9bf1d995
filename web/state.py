"""The per-process runtime the views work with, and the request's database session."""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from artwork.ingest import IngestLimits
from artwork.isolation import PipelineProcess
from artwork.store import BlobStore
from bandit.config import ExplorationConfig
from bandit.decision_log import GroupCommitLog
from bandit.decisions import DecisionService
from bandit.rewards import RewardConfig
from bandit.snapshots import ServingPolicy
from web.config import Settings
from web.serving_catalog import CatalogReader, ServingCatalog

log = logging.getLogger(__name__)


class FallbackState:
    """Whether this process is answering decisions from its catalog snapshot, since when and
    why: started by a fallback answer, ended by the next logged decision (`/readyz` tells)."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.reason: str | None = None
        self._lock = threading.Lock()

    def started(self, reason: str) -> None:
        with self._lock:
            self.reason = reason
            if self.since is None:
                self.since = time.time()
                log.warning("answering decisions from the catalog snapshot: %s", reason)

    def ended(self) -> None:
        if self.since is None:  # every logged decision comes here: one read when all is well
            return
        with self._lock:
            if self.since is not None:
                log.warning(
                    "decisions are logged again, after %.1f s of fallback answers",
                    time.time() - self.since,
                )
                self.since = None

    def describe(self) -> dict[str, Any]:
        since = self.since
        if since is None:
            return {"active": False}
        return {
            "active": True,
            "since": datetime.fromtimestamp(since, UTC).isoformat(),
            "reason": self.reason,
        }


@dataclass
class Runtime:
    """The long-lived parts one process serves with, built once by `create_app`."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    store: BlobStore
    policy: ServingPolicy
    rewards: RewardConfig
    limits: IngestLimits
    rng: random.Random
    # Where decisions are written (group commit).
    decision_log: GroupCommitLog
    # Runs the artwork pipeline for uploads in a child process; None: in this process.
    pipeline: PipelineProcess | None = None
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    # The catalog as decision serving sees it, cached for this database.
    catalog: ServingCatalog = field(default_factory=ServingCatalog)
    fallback: FallbackState = field(default_factory=FallbackState)

    @property
    def decisions(self) -> DecisionService:
        """The decision service over this process's catalog, policy, log and settings (built
        per use, two small objects, so that a test swapping one part is heard)."""
        return DecisionService(
            CatalogReader(self.catalog, self.engine),
            self.policy,
            self.decision_log,
            self.exploration,
            self.rng,
        )


def runtime() -> Runtime:
    return current_app.extensions["keyart"]


def db() -> Session:
    """This request's session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = runtime().sessions()
    return g.db_session
