"""Policy snapshots: saving a learned model with its log cursor, loading the newest sound
one of a lineage (by default the serving lineage, `bandit.lineages`), and keeping a serving
process's policy current without blocking requests."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bandit.models import PolicyLineage, PolicySnapshot
from bandit.policy import Policy

log = logging.getLogger(__name__)


def checksum(model: bytes) -> str:
    return hashlib.sha256(model).hexdigest()


def latest_version(session: Session, lineage_id: int | None = None) -> int:
    """The newest snapshot version, of one lineage or (None) of any."""
    query = select(func.max(PolicySnapshot.version))
    if lineage_id is not None:
        query = query.where(PolicySnapshot.lineage_id == lineage_id)
    return session.scalar(query) or 0


def serving_lineage(session: Session) -> PolicyLineage | None:
    """The lineage serving decisions now (None before the first learner pass)."""
    return session.scalars(
        select(PolicyLineage)
        .where(PolicyLineage.status == "serving")
        .order_by(PolicyLineage.id.desc())
        .limit(1)
    ).first()


def save_snapshot(
    session: Session,
    policy: Policy,
    *,
    examples_learned: int,
    cursor: int,
    model: bytes | None = None,
    lineage_id: int | None = None,
) -> PolicySnapshot:
    """Add the next snapshot to `session`; the caller commits it with whatever else moved.
    `model` is the model to save when it is not `policy`'s own workspace (the learner's
    batches are learned by VW's driver). Versions rise across lineages, so a version names
    one model whatever lineage it is of."""
    model = policy.serialize() if model is None else model
    snapshot = PolicySnapshot(
        version=latest_version(session) + 1,
        vw_args=policy.vw_args,
        model=model,
        checksum=checksum(model),
        examples_learned=examples_learned,
        cursor=cursor,
        slot_examples=dict(policy.slot_examples),
        lineage_id=lineage_id,
    )
    session.add(snapshot)
    return snapshot


def load_latest(
    session: Session, vw_args: str, lineage: PolicyLineage | None = None
) -> tuple[Policy, PolicySnapshot | None]:
    """The newest snapshot of `lineage` (default: the serving one; before there is any
    lineage, of any) whose checksum holds and whose model loads, else a fresh policy with
    the lineage's VW arguments (or `vw_args`).

    A corrupt snapshot is skipped with a warning rather than taking serving down: the
    previous version is still a good policy.
    """
    if lineage is None:
        lineage = serving_lineage(session)
    query = select(PolicySnapshot.version).order_by(PolicySnapshot.version.desc())
    if lineage is not None:
        query = query.where(PolicySnapshot.lineage_id == lineage.id)
        vw_args = lineage.settings["vw_args"]
    for version in session.scalars(query).all():
        # One model in memory at a time: older ones are only read if newer ones are bad.
        snapshot = session.get(PolicySnapshot, version)
        if snapshot is None:
            continue
        if checksum(snapshot.model) != snapshot.checksum:
            log.warning("policy snapshot %d fails its checksum; skipping it", snapshot.version)
            continue
        try:
            policy = Policy(
                snapshot.vw_args, snapshot.model, snapshot.version, snapshot.slot_examples
            )
            policy.lineage_id = snapshot.lineage_id
            return policy, snapshot
        except RuntimeError as error:
            log.warning(
                "policy snapshot %d does not load (%s); skipping it", snapshot.version, error
            )
    policy = Policy(vw_args)
    policy.lineage_id = lineage.id if lineage is not None else None
    return policy, None


class ServingPolicy:
    """The policy a serving process decides with, swapped for a newer snapshot when one appears.

    `refresh()` does the checking and loading; `start()` runs it on a daemon thread every
    `poll_seconds`, so requests never wait for a model to load. Requests read `current`,
    a single attribute, so the swap is atomic.
    """

    def __init__(
        self,
        session_factory: Callable[[], Session],
        vw_args: str,
        poll_seconds: float,
        on_poll: Callable[[ServingPolicy], None] | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._vw_args = vw_args
        self._poll_seconds = poll_seconds
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._refresh_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self.current = Policy(vw_args)
        # When the snapshot served was learned (None: no snapshot yet), and what to call
        # after each poll (metrics of the version and age served).
        self.created_at: datetime | None = None
        self._on_poll = on_poll
        # Whether the log's newest snapshot has been looked for yet. A process may start
        # while the database is down (it must not fail to boot, or gunicorn gives up on the
        # whole server); until the poller reaches the database it retries every second, and
        # `/readyz` says the process is not ready.
        self.loaded = False
        try:
            self.refresh()
        except Exception:
            log.exception("no policy loaded yet: the snapshot could not be read")

    def refresh(self) -> bool:
        """Load the serving lineage's newest snapshot if it is newer than the current one,
        or the serving lineage has changed; True if swapped."""
        with self._refresh_lock, self._session_factory() as session:
            lineage = serving_lineage(session)
            lineage_id = lineage.id if lineage is not None else None
            same = lineage_id == self.current.lineage_id
            if same and latest_version(session, lineage_id) <= self.current.version:
                self.loaded = True
                return False
            policy, snapshot = load_latest(session, self._vw_args, lineage)
            self.loaded = True
            if same and (snapshot is None or policy.version <= self.current.version):
                return False
            self.current = policy
            self.created_at = snapshot.created_at if snapshot is not None else None
            log.info("serving policy version %d (lineage %s)", policy.version, lineage_id)
            return True

    def start(self) -> None:
        """Poll from now on, refreshing first: a process starts polling on its first request
        (web/__init__.py), and a gunicorn worker that no connection reached for a while would
        otherwise decide that request with the model it loaded when it booted."""
        if self._thread is not None and self._thread.is_alive():
            return
        with self._start_lock:  # a process's first requests arrive together
            if self._thread is not None and self._thread.is_alive():
                return
            try:
                self.refresh()
            except Exception:  # the database is down: the poller tries again
                log.exception("policy refresh failed")
            self._stop.clear()
            self._thread = threading.Thread(target=self._poll, name="keyart-policy", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop polling and wait for a refresh under way, so nothing uses the database after."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _poll(self) -> None:
        while not self._stop.wait(self._poll_seconds if self.loaded else 1.0):
            try:
                self.refresh()
            except Exception:  # a database blip must not kill the poller
                log.exception("policy refresh failed")
            try:
                if self._on_poll is not None:
                    self._on_poll(self)
            except Exception:  # nor a metric that could not be written
                log.exception("policy poll callback failed")
