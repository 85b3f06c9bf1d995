"""The per-process runtime the views work with, and the request's database session."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

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
