"""The catalog as decision serving reads it: each title's active variants (their tags and
features) and default, cached in the process along with the catalog version they were read
at, and each variant's renditions, cached for a short while (they rarely change).

Never serving a paused variant does not need a read per request. Database triggers bump
`catalog_version` with every change to titles or artworks (migration 0005; on PostgreSQL
as the change commits, 0009); the decision log's writer checks that version with each
group commit and refuses decisions made with an older one
(`bandit.decision_log.StaleWrite`), and the decision service
(`bandit.decisions.DecisionService`) then decides again from a fresh read. So a decision
made after an editor's change has committed is never logged, nor answered, with the
catalog from before it.

It also keeps every title it has read, as last read (`last_known`), re-read in the
background when the catalog changes (`refresh`): what fallback answers are made from while
the database is out (`web.personalize`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Engine

from artwork.renditions import FORMATS
from bandit.decisions import CandidatesUnavailable, JSONDict, Slot, logged_candidates
from bandit.features import Candidate, context_text
from web.db import ReadUnavailable, plain_reads


def _candidate(artwork_id: str, tags_json: str, features_json: str) -> Candidate:
    # The same features as `web.personalize.artwork_features` gives an ORM artwork.
    return Candidate(artwork_id, {"tag": list(json.loads(tags_json)), **json.loads(features_json)})


# Plain SQL on a DB-API cursor (`web.db.plain_reads`): the ORM's execution machinery cost
# ten times the query itself. JSON columns are read as their text (the caches' keys).
_ACTIVE = (
    "SELECT titles.id, CAST(titles.genres AS VARCHAR), titles.default_artwork_id,"
    " artworks.id, CAST(artworks.tags AS VARCHAR), CAST(artworks.features AS VARCHAR)"
    " FROM titles LEFT OUTER JOIN artworks"
    " ON artworks.title_id = titles.id AND artworks.status = 'active'"
    " WHERE titles.id {ids} ORDER BY titles.id, artworks.created_at, artworks.id"
)
_RENDITIONS = (
    "SELECT artwork_id, preset, format, key, width, height FROM renditions WHERE artwork_id {ids}"
)
_PLACEHOLDERS = "SELECT id, CAST(placeholder AS VARCHAR) FROM artworks WHERE id {ids}"
CATALOG_VERSION = "SELECT version FROM catalog_version WHERE id = 1"
# Titles cached per process, at most; past this the cache starts again (ids from clients
# that name no title are cached too, as unknown, so beside titles that are decided they cost
# no read; a page with nothing to decide is read afresh, `DecisionService.decide`).
_TITLE_CACHE = 100_000


def _matching(engine: Engine, statement: str, ids: list[str]) -> tuple[str, list[Any]]:
    """`statement` with its `{ids}` matched against the list `ids`, in the driver's own
    parameter style (one array parameter on PostgreSQL, a placeholder per id on SQLite)."""
    if engine.dialect.name == "postgresql":
        return statement.format(ids="= ANY(%s)"), [ids]
    return statement.format(ids=f"IN ({', '.join('?' * len(ids))})"), ids


def _run(engine: Engine, statement: str, ids: list[str]) -> list[tuple[Any, ...]]:
    with plain_reads(engine) as cursor:
        cursor.execute(*_matching(engine, statement, ids))
        return cursor.fetchall()  # type: ignore[no-any-return]


def _read_titles(engine: Engine, ids: list[str]) -> tuple[int, list[tuple[Any, ...]]]:
    """The catalog version, then `ids`' rows: read in that order, the rows are at least as
    new as the version (a change in between makes the version look older, never newer)."""
    with plain_reads(engine) as cursor:
        cursor.execute(CATALOG_VERSION)
        (version,) = cursor.fetchone()
        cursor.execute(*_matching(engine, _ACTIVE, ids))
        return int(version), cursor.fetchall()


class _Renditions:
    """One variant's renditions as read, by (preset, format), and the best of them for each
    (preset, wanted format) asked so far: worked out once per read, not per decision."""

    __slots__ = ("by_key", "chosen")

    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], dict[str, Any]] = {}
        self.chosen: dict[tuple[str, str], dict[str, Any] | None] = {}

    def best(self, preset: str, fmt: str) -> dict[str, Any] | None:
        """`fmt` if made, else the next best."""
        try:
            return self.chosen[(preset, fmt)]
        except KeyError:
            by_key = self.by_key
            found = next(
                (by_key[(preset, f)] for f in (fmt, *FORMATS) if (preset, f) in by_key), None
            )
            self.chosen[(preset, fmt)] = found
            return found


class ServingCatalog:
    """Titles' active variants, cached with the catalog version; renditions per variant.

    One per database (each app's runtime has its own): versions of different databases
    mean nothing to each other."""

    def __init__(self, rendition_ttl_seconds: float = 30.0, media_prefix: str = "/media/") -> None:
        # Image URLs are this plus the rendition's key: /media/ or KEYART_MEDIA_PUBLIC_URL.
        self._media_prefix = media_prefix
        # Titles as read at `version` (None: no such title); emptied when it moves on.
        self.version: int | None = None
        self._titles: dict[str, Slot | None] = {}
        self._images: dict[str, _Renditions] = {}
        self._placeholders: dict[str, dict[str, Any] | None] = {}
        # Renditions are re-read after this long, so a variant re-rendered (new presets, a
        # reprocess) is served with its new images within that time.
        self._ttl = rendition_ttl_seconds
        self._loaded_at: dict[str, float] = {}
        # artwork id → (tags JSON, features JSON, candidate): reused while the text matches,
        # so a variant is parsed and featurised once, not once per decision.
        self._candidates: dict[str, tuple[str, str, Candidate]] = {}
        # title id → (genres JSON, slot features, their VW tokens), likewise.
        self._slots: dict[str, tuple[str, dict[str, Any], str]] = {}
        # Every title this process has read, as last read and the version it was read at:
        # what fallback answers are made from while the database is out (`last_known`).
        # Unlike the cache it is not emptied when the version moves on; `refresh` reads
        # its titles again instead, so a change made before an outage is honoured in it.
        self._snapshot: dict[str, tuple[int, Slot]] = {}
        self._lock = threading.Lock()

    def titles(
        self, engine: Engine, title_ids: Iterable[str], *, fresh: bool = False
    ) -> tuple[dict[str, Slot], int]:
        """Every known title among `title_ids` with its active variants (maybe none), and
        the catalog version they are current at: the guard to log decisions with. Cached
        titles are used while the catalog version holds; `fresh` reads them all again."""
        wanted = list(dict.fromkeys(title_ids))
        with self._lock:
            version, known = self.version, self._titles
        if not fresh and version is not None and all(t in known for t in wanted):
            return {t: found for t in wanted if (found := known[t]) is not None}, version
        read_at, rows = _read_titles(engine, wanted)
        loaded: dict[str, Slot | None] = dict.fromkeys(wanted)
        loaded.update(self._servable(rows))
        with self._lock:
            # Versions only rise: a read that lost a race to a newer one is not cached.
            if self.version is None or read_at > self.version or len(self._titles) > _TITLE_CACHE:
                self._titles = {}
                self.version = read_at
            if read_at == self.version:
                self._titles.update(loaded)
            self._remember(read_at, loaded)
        return {t: found for t in wanted if (found := loaded[t]) is not None}, read_at

    def _remember(self, read_at: int, loaded: dict[str, Slot | None]) -> None:
        # Under the lock. An entry is replaced only by a read at least as new as its own.
        snapshot = self._snapshot
        for title_id, slot in loaded.items():
            held = snapshot.get(title_id)
            if held is not None and held[0] > read_at:
                continue
            if slot is None:
                snapshot.pop(title_id, None)  # deleted, or never a title
            elif held is not None or len(snapshot) < _TITLE_CACHE:
                snapshot[title_id] = (read_at, slot)

    def last_known(self, title_ids: Iterable[str]) -> dict[str, Slot]:
        """The titles among `title_ids` as this process last read them (no database read):
        what a fallback answer shows."""
        with self._lock:
            snapshot = self._snapshot
            return {t: held[1] for t in title_ids if (held := snapshot.get(t)) is not None}

    def refresh(self, engine: Engine, batch: int = 500) -> int:
        """Read again every remembered title older than the database's catalog version,
        and the renditions of what each would fall back to; returns how many titles were
        read. Run in the background (`web.create_app`'s poller), so that the snapshot
        fallback answers come from is at most a poll older than the outage."""
        with plain_reads(engine) as cursor:
            cursor.execute(CATALOG_VERSION)
            (version,) = cursor.fetchone()
        with self._lock:
            behind = [t for t, (read_at, _) in self._snapshot.items() if read_at < version]
        for start in range(0, len(behind), batch):
            self.titles(engine, behind[start : start + batch], fresh=True)
        with self._lock:
            shown = {slot.fallback_id for _, slot in self._snapshot.values()}
        shown.discard(None)
        # Only those never loaded: the request path re-reads renditions past their cache
        # time as it uses them, and re-reading every title's here would cost a read per 500
        # titles every poll.
        missing = [a for a in shown if a not in self._images]
        for start in range(0, len(missing), batch):
            self._load_images(engine, missing[start : start + batch], time.monotonic())
        return len(behind)

    def _servable(self, rows: list[tuple[Any, ...]]) -> dict[str, Slot]:
        found: dict[str, tuple[str | None, str, list[Candidate]]] = {}
        for title_id, genres, default_id, artwork_id, tags, features in rows:
            variants = found.get(title_id)
            if variants is None:
                variants = found[title_id] = (default_id, genres, [])
            if artwork_id is None:
                continue
            cached = self._candidates.get(artwork_id)
            if cached is None or cached[0] != tags or cached[1] != features:
                cached = (tags, features, _candidate(artwork_id, tags, features))
                self._candidates[artwork_id] = cached
            variants[2].append(cached[2])
        return {
            title_id: self._slot(title_id, default_id, genres, candidates)
            for title_id, (default_id, genres, candidates) in found.items()
        }

    def _slot(
        self, title_id: str, default_id: str | None, genres: str, candidates: list[Candidate]
    ) -> Slot:
        described = self._slots.get(title_id)
        if described is None or described[0] != genres:
            # What the policy knows of a title: its id and genres.
            features = JSONDict({"title": title_id, "genre": list(json.loads(genres))})
            described = (genres, features, context_text(features))
            self._slots[title_id] = described
        return Slot(
            title_id,
            candidates,
            default_id,
            described[1],
            described[2],
            # The variants as each decision about this title logs them, encoded once.
            logged_candidates(candidates),
        )

    def image(
        self,
        engine: Engine,
        artwork_ids: Iterable[str],
        preset: str,
        fmt: str,
        *,
        cached_only: bool = False,
    ) -> dict[str, dict[str, Any] | None]:
        """The rendition to show for each artwork: `fmt` if made, else the next best. With
        `cached_only` nothing is read, however old the cache (a fallback answer's images)."""
        wanted = set(artwork_ids)
        now = time.monotonic()
        missing = [
            a for a in wanted if a not in self._images or now - self._loaded_at[a] > self._ttl
        ]
        if missing and not cached_only:
            self._load_images(engine, missing, now)
        out: dict[str, dict[str, Any] | None] = {}
        images = self._images
        for artwork_id in wanted:
            renditions = images.get(artwork_id)
            out[artwork_id] = renditions.best(preset, fmt) if renditions is not None else None
        return out

    def _load_images(self, engine: Engine, artwork_ids: list[str], now: float) -> None:
        loaded = {a: _Renditions() for a in artwork_ids}
        for artwork_id, name, kind, key, width, height in _run(engine, _RENDITIONS, artwork_ids):
            loaded[artwork_id].by_key[(name, kind)] = {
                "url": self._media_prefix + key,
                "width": width,
                "height": height,
                "format": kind,
            }
        placeholders = {
            a: json.loads(p) if p else None for a, p in _run(engine, _PLACEHOLDERS, artwork_ids)
        }
        with self._lock:
            self._images.update(loaded)
            self._placeholders.update(placeholders)
            self._loaded_at.update(dict.fromkeys(loaded, now))

    def placeholder(self, artwork_id: str, preset: str) -> dict[str, Any] | None:
        """What a UI can paint before the image arrives: the variant's dominant colour and the
        blurhash of this preset's crop. Loaded with the renditions by `image()`."""
        stored = self._placeholders.get(artwork_id)
        if not stored:
            return None
        return {
            "color": stored.get("color"),
            "blurhash": (stored.get("blurhash") or {}).get(preset),
        }


class CatalogReader:
    """The catalog as the decision service reads it (`bandit.decisions.CandidateReader`):
    `ServingCatalog`'s titles through one engine."""

    def __init__(self, catalog: ServingCatalog, engine: Engine) -> None:
        self.catalog = catalog
        self.engine = engine

    @property
    def version(self) -> int | None:
        return self.catalog.version

    def read(self, slot_ids: Sequence[str], *, fresh: bool) -> tuple[dict[str, Slot], int]:
        try:
            return self.catalog.titles(self.engine, slot_ids, fresh=fresh)
        except ReadUnavailable as error:
            raise CandidatesUnavailable(str(error)) from None
