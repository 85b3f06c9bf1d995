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
from bandit.learner import RewardConfig
from bandit.snapshots import ServingPolicy
from web.config import Settings
from web.serving_catalog import ServingCatalog


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
    # Runs the artwork pipeline for uploads in a child process; None: in this process.
    pipeline: PipelineProcess | None = None
    exploration: ExplorationConfig = field(default_factory=ExplorationConfig)
    # Where decisions are written (group commit); None writes them in a session of their own.
    decision_log: GroupCommitLog | None = None
    # The catalog as decision serving sees it, cached for this database.
    catalog: ServingCatalog = field(default_factory=ServingCatalog)


def runtime() -> Runtime:
    return current_app.extensions["keyart"]


def db() -> Session:
    """This request's session, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = runtime().sessions()
    return g.db_session
