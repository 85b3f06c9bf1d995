"""The catalog as decision serving reads it: one light query per request for everything an
editor can change (active variants, their tags and features, the default), and each
variant's renditions cached in the process for a short while (they rarely change).

Loading ORM objects with their relationships cost more than the decision itself; this keeps
a decision's catalog read to one round trip without ever serving a paused variant.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from artwork.renditions import FORMATS
from bandit.features import Candidate, context_text
from bandit.log import JSONDict
from web.db import plain_reads


@dataclass(frozen=True)
class ServableTitle:
    id: str
    genres: list[str]
    default_id: str | None
    variants: list[Candidate]  # active ones, in upload order, featurised
    # What the policy knows of the title, and its VW tokens (computed once per genres text).
    slot_features: dict[str, Any] = field(default_factory=dict)
    slot_tokens: str | None = None


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


def _run(engine: Engine, statement: str, ids: list[str]) -> list[tuple[Any, ...]]:
    """`statement` with its `{ids}` matched against the list `ids`, in the driver's own
    parameter style (one array parameter on PostgreSQL, a placeholder per id on SQLite)."""
    if engine.dialect.name == "postgresql":
        sql, parameters = statement.format(ids="= ANY(%s)"), [ids]
    else:
        sql, parameters = statement.format(ids=f"IN ({', '.join('?' * len(ids))})"), ids
    with plain_reads(engine) as cursor:
        cursor.execute(sql, parameters)
        return cursor.fetchall()  # type: ignore[no-any-return]


class ServingCatalog:
    """Reads titles' active variants per request; caches renditions per variant."""

    def __init__(self, rendition_ttl_seconds: float = 30.0) -> None:
        self._images: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._placeholders: dict[str, dict[str, Any] | None] = {}
        # Renditions are re-read after this long, so a variant re-rendered (new presets, a
        # reprocess) is served with its new images within that time.
        self._ttl = rendition_ttl_seconds
        self._loaded_at: dict[str, float] = {}
        # artwork id → (tags JSON, features JSON, candidate): reused while the text matches,
        # so a variant is parsed and featurised once, not once per decision.
        self._candidates: dict[str, tuple[str, str, Candidate]] = {}
        # title id → (genres JSON, genres, slot features, their VW tokens), likewise.
        self._slots: dict[str, tuple[str, list[str], dict[str, Any], str]] = {}
        self._lock = threading.Lock()

    def titles(self, engine: Engine, title_ids: Iterable[str]) -> dict[str, ServableTitle]:
        """Every known title among `title_ids` with its active variants (maybe none)."""
        rows = _run(engine, _ACTIVE, list(set(title_ids)))
        found: dict[str, ServableTitle] = {}
        for title_id, genres, default_id, artwork_id, tags, features in rows:
            title = found.get(title_id)
            if title is None:
                slot = self._slots.get(title_id)
                if slot is None or slot[0] != genres:
                    parsed = list(json.loads(genres))
                    # What the policy knows of a title: its id and genres.
                    described = JSONDict({"title": title_id, "genre": parsed})
                    slot = (genres, parsed, described, context_text(described))
                    self._slots[title_id] = slot
                title = found[title_id] = ServableTitle(
                    title_id, slot[1], default_id, [], slot[2], slot[3]
                )
            if artwork_id is None:
                continue
            cached = self._candidates.get(artwork_id)
            if cached is None or cached[0] != tags or cached[1] != features:
                cached = (tags, features, _candidate(artwork_id, tags, features))
                self._candidates[artwork_id] = cached
            title.variants.append(cached[2])
        return found

    def image(
        self, engine: Engine, artwork_ids: Iterable[str], preset: str, fmt: str
    ) -> dict[str, dict[str, Any] | None]:
        """The rendition to show for each artwork: `fmt` if made, else the next best."""
        wanted = set(artwork_ids)
        now = time.monotonic()
        missing = [
            a for a in wanted if a not in self._images or now - self._loaded_at[a] > self._ttl
        ]
        if missing:
            loaded: dict[str, dict[tuple[str, str], dict[str, Any]]] = {a: {} for a in missing}
            for artwork_id, name, kind, key, width, height in _run(engine, _RENDITIONS, missing):
                loaded[artwork_id][(name, kind)] = {
                    "url": f"/media/{key}",
                    "width": width,
                    "height": height,
                    "format": kind,
                }
            placeholders = {
                a: json.loads(p) if p else None for a, p in _run(engine, _PLACEHOLDERS, missing)
            }
            with self._lock:
                self._images.update(loaded)
                self._placeholders.update(placeholders)
                self._loaded_at.update(dict.fromkeys(loaded, now))
        out: dict[str, dict[str, Any] | None] = {}
        for artwork_id in wanted:
            by_key = self._images.get(artwork_id, {})
            out[artwork_id] = next(
                (by_key[(preset, f)] for f in (fmt, *FORMATS) if (preset, f) in by_key), None
            )
        return out

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
