"""Catalog services: titles and their artwork variants. Each takes the session (and blob
store) it works in; the caller owns the transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import imagehash
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from artwork.errors import ArtworkError, Conflict, NotFound
from artwork.ingest import EXTENSIONS, IngestLimits, decode
from artwork.models import STATUSES, Artwork, Rendition, Title
from artwork.pipeline import PipelineConfig, Prepared, Processed, finish, prepare
from artwork.renditions import DEFAULT_PRESETS, Preset, encode
from artwork.store import BlobStore

# Perceptual hashes this close (of 64 bits) are the same picture re-encoded or resized.
NEAR_DUPLICATE_BITS = 4


@dataclass(frozen=True)
class Upload:
    data: bytes
    label: str = ""
    tags: tuple[str, ...] = ()
    focus: tuple[float, float] | None = None


def create_title(session: Session, title_id: str, name: str, genres: Sequence[str] = ()) -> Title:
    if session.get(Title, title_id) is not None:
        raise Conflict("title_exists", f"title {title_id!r} already exists")
    title = Title(id=title_id, name=name, genres=list(genres))
    session.add(title)
    session.flush()
    return title


def get_title(session: Session, title_id: str) -> Title:
    title = session.get(Title, title_id)
    if title is None:
        raise NotFound("unknown_title", f"no title {title_id!r}")
    return title


def list_titles(session: Session) -> list[Title]:
    return list(session.scalars(select(Title).order_by(Title.id)))


def search_titles(
    session: Session, query: str = "", *, offset: int = 0, limit: int = 20
) -> tuple[list[Title], int]:
    """Titles whose id or name contains `query` (any case), ordered by id: one page of them
    and how many there are in all."""
    where = []
    if query:
        # LIKE's wildcards in the query are meant literally.
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append(
            Title.id.ilike(pattern, escape="\\") | Title.name.ilike(pattern, escape="\\")
        )
    total = session.scalar(select(func.count()).select_from(Title).where(*where)) or 0
    titles = session.scalars(
        select(Title).where(*where).order_by(Title.id).offset(offset).limit(limit)
    )
    return list(titles.unique()), int(total)


def get_artwork(session: Session, artwork_id: str) -> Artwork:
    artwork = session.get(Artwork, artwork_id)
    if artwork is None:
        raise NotFound("unknown_artwork", f"no artwork {artwork_id!r}")
    return artwork


PipelineRunner = Callable[[bytes, PipelineConfig, "tuple[float, float] | None"], Processed]


def add_artwork(
    session: Session,
    store: BlobStore,
    title_id: str,
    upload: Upload,
    *,
    limits: IngestLimits | None = None,
    presets: Sequence[Preset] = DEFAULT_PRESETS,
    config: PipelineConfig | None = None,
    runner: PipelineRunner | None = None,
) -> Artwork:
    """Decode, check, render and store one uploaded variant of a title.

    `config` (else `limits` and `presets`) says how; `runner`, when given, runs the pipeline
    (e.g. in a child process), else it runs here. Refuses an upload that is the same picture
    as a variant the title already has.
    """
    config = config or PipelineConfig(tuple(presets), limits or IngestLimits())
    title = get_title(session, title_id)
    digest = hashlib.sha256(upload.data).hexdigest()
    _refuse_duplicate(title, digest, None)
    if runner is None:
        prepared = prepare(upload.data, config, upload.focus)
        # Here the near-duplicate check can come before any rendering.
        _refuse_duplicate(title, digest, prepared.phash)
        (processed,) = finish([prepared], config)
    else:
        processed = runner(upload.data, config, upload.focus)
        _refuse_duplicate(title, digest, processed.phash)
    artwork = Artwork(
        title_id=title.id,
        status="active",
        label=upload.label,
        tags=list(upload.tags),
        original_key=store.put_original(upload.data, EXTENSIONS[processed.format]),
        phash=str(processed.phash),
        width=processed.width,
        height=processed.height,
        focus_x=upload.focus[0] if upload.focus else None,
        focus_y=upload.focus[1] if upload.focus else None,
    )
    _apply(artwork, processed, store, config)
    session.add(artwork)
    session.flush()
    if title.default_artwork_id is None:
        # The first variant is the fallback until an editor names another.
        title.default_artwork_id = artwork.id
    return artwork


def _refuse_duplicate(title: Title, digest: str, phash: imagehash.ImageHash | None) -> None:
    for existing in title.artworks:
        same = existing.original_key.startswith(digest) or (
            phash is not None
            and imagehash.hex_to_hash(existing.phash) - phash <= NEAR_DUPLICATE_BITS
        )
        if same:
            raise Conflict(
                "duplicate_artwork",
                f"this image is the same as artwork {existing.id} of title {title.id!r}",
            )


def _apply(
    artwork: Artwork, processed: Processed, store: BlobStore, config: PipelineConfig
) -> None:
    """Give `artwork` the renditions, features and placeholder the pipeline made."""
    artwork.features = processed.features
    artwork.placeholder = processed.placeholder
    artwork.embedding = processed.embedding
    artwork.crop = {
        "x": processed.focus[0],
        "y": processed.focus[1],
        "source": processed.focus_source,
    }
    artwork.processed_with = config.fingerprint
    artwork.renditions = [
        Rendition(
            preset=rendered.preset,
            format=rendered.format,
            width=rendered.width,
            height=rendered.height,
            key=store.put(rendered.data, rendered.format),
            size=len(rendered.data),
        )
        for rendered in processed.renditions
    ]


def stale_artworks(session: Session, config: PipelineConfig) -> list[str]:
    """Ids of the variants not yet processed with `config`, oldest first."""
    fingerprint = config.fingerprint
    query = (
        select(Artwork.id)
        .where((Artwork.processed_with != fingerprint) | Artwork.processed_with.is_(None))
        .order_by(Artwork.created_at, Artwork.id)
    )
    return list(session.scalars(query))


@dataclass(frozen=True)
class ReprocessResult:
    done: list[str]
    failed: dict[str, str]


def reprocess(
    session: Session, store: BlobStore, artwork_ids: Sequence[str], config: PipelineConfig
) -> ReprocessResult:
    """Rebuild renditions, features and placeholders of these variants from their originals,
    features computed as one batch. Flushes; the caller commits, so a batch is all or none.

    A variant whose original is missing or no longer passes ingest is left as it was and
    reported in `failed`, with the reason.
    """
    failed: dict[str, str] = {}
    batch: list[tuple[Artwork, Prepared]] = []
    for artwork_id in artwork_ids:
        artwork = get_artwork(session, artwork_id)
        data = store.read_original(artwork.original_key)
        if data is None:
            failed[artwork.id] = f"original {artwork.original_key} is missing"
            continue
        focus = (
            (artwork.focus_x, artwork.focus_y)
            if artwork.focus_x is not None and artwork.focus_y is not None
            else None
        )
        try:
            batch.append((artwork, prepare(data, config, focus)))
        except ArtworkError as error:
            failed[artwork.id] = error.message
    processed = finish([prepared for _, prepared in batch], config)
    for (artwork, _), result in zip(batch, processed, strict=True):
        # Old rows go first: (artwork, preset, format) is unique.
        artwork.renditions.clear()
        session.flush()
        _apply(artwork, result, store, config)
    session.flush()
    return ReprocessResult([artwork.id for artwork, _ in batch], failed)


def update_artwork(
    session: Session,
    artwork_id: str,
    *,
    status: str | None = None,
    label: str | None = None,
    tags: Iterable[str] | None = None,
) -> Artwork:
    artwork = get_artwork(session, artwork_id)
    if status is not None:
        if status not in STATUSES:
            raise Conflict("invalid_status", f"status must be one of {', '.join(STATUSES)}")
        artwork.status = status
    if label is not None:
        artwork.label = label
    if tags is not None:
        artwork.tags = list(tags)
    session.flush()
    return artwork


def set_default_artwork(session: Session, title_id: str, artwork_id: str) -> Title:
    title = get_title(session, title_id)
    artwork = get_artwork(session, artwork_id)
    if artwork.title_id != title.id:
        raise Conflict(
            "artwork_of_other_title", f"artwork {artwork_id} belongs to {artwork.title_id!r}"
        )
    # A paused variant may be the default (it can be resumed); an archived one is retired.
    if artwork.status == "archived":
        raise Conflict("artwork_archived", f"artwork {artwork_id} is archived")
    title.default_artwork_id = artwork.id
    session.flush()
    return title


def set_focus(
    session: Session,
    store: BlobStore,
    artwork_id: str,
    focus: tuple[float, float],
    *,
    config: PipelineConfig,
    runner: PipelineRunner | None = None,
) -> Artwork:
    """Centre the variant's crops on `focus` (x, y in 0..1 of the picture) and cut its
    renditions again from the original. `runner`, when given, runs the pipeline (e.g. in a
    child process), else it runs here. Flushes; the caller commits."""
    x, y = focus
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise ArtworkError("invalid_focus", "the focal point's x and y must be in 0..1")
    artwork = get_artwork(session, artwork_id)
    data = store.read_original(artwork.original_key)
    if data is None:
        raise NotFound("original_missing", f"the original of artwork {artwork.id} is missing")
    if runner is None:
        (processed,) = finish([prepare(data, config, focus)], config)
    else:
        processed = runner(data, config, focus)
    artwork.focus_x, artwork.focus_y = x, y
    # Old rows go first: (artwork, preset, format) is unique.
    artwork.renditions.clear()
    session.flush()
    _apply(artwork, processed, store, config)
    session.flush()
    return artwork


def original_preview(
    store: BlobStore, artwork: Artwork, limits: IngestLimits, max_side: int = 720
) -> bytes:
    """The whole uploaded picture, upright, metadata-free, at most `max_side` pixels on its
    longer side, as JPEG: what an editor picks a focal point on (renditions are crops, and
    originals keep their metadata, so neither is shown). Decoded as uploads are, no larger
    than needed; no torch."""
    data = store.read_original(artwork.original_key)
    if data is None:
        raise NotFound("original_missing", f"the original of artwork {artwork.id} is missing")
    decoded = decode(data, limits, (Preset("preview", max_side, max_side),))
    image = decoded.image.copy()
    image.thumbnail((max_side, max_side))
    return encode(image, "jpg")
