"""Small helpers the tests share."""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from datetime import datetime

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
