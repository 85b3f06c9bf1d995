"""Catalog services: titles and their artwork variants. Each takes the session (and blob
store) it works in; the caller owns the transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import imagehash
from sqlalchemy import select
from sqlalchemy.orm import Session

from artwork.errors import Conflict, NotFound
from artwork.features import image_features
from artwork.ingest import EXTENSIONS, IngestLimits, decode, sniff
from artwork.models import STATUSES, Artwork, Rendition, Title
from artwork.renditions import DEFAULT_PRESETS, Preset, render
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


def get_artwork(session: Session, artwork_id: str) -> Artwork:
    artwork = session.get(Artwork, artwork_id)
    if artwork is None:
        raise NotFound("unknown_artwork", f"no artwork {artwork_id!r}")
    return artwork


def add_artwork(
    session: Session,
    store: BlobStore,
    title_id: str,
    upload: Upload,
    *,
    limits: IngestLimits | None = None,
    presets: Sequence[Preset] = DEFAULT_PRESETS,
) -> Artwork:
    """Decode, check, render and store one uploaded variant of a title.

    Refuses an upload that is the same picture as a variant the title already has.
    """
    title = get_title(session, title_id)
    image = decode(upload.data, limits or IngestLimits())
    digest = hashlib.sha256(upload.data).hexdigest()
    phash = imagehash.phash(image)
    for existing in title.artworks:
        if existing.original_key.startswith(digest) or (
            imagehash.hex_to_hash(existing.phash) - phash <= NEAR_DUPLICATE_BITS
        ):
            raise Conflict(
                "duplicate_artwork",
                f"this image is the same as artwork {existing.id} of title {title_id!r}",
            )
    focus = upload.focus or (0.5, 0.5)
    artwork = Artwork(
        title_id=title.id,
        status="active",
        label=upload.label,
        tags=list(upload.tags),
        features=image_features(image),
        original_key=store.put(upload.data, EXTENSIONS[sniff(upload.data)]),
        phash=str(phash),
        width=image.width,
        height=image.height,
        focus_x=upload.focus[0] if upload.focus else None,
        focus_y=upload.focus[1] if upload.focus else None,
    )
    for rendered in render(image, presets, focus):
        artwork.renditions.append(
            Rendition(
                preset=rendered.preset,
                format=rendered.format,
                width=rendered.width,
                height=rendered.height,
                key=store.put(rendered.data, rendered.format),
                size=len(rendered.data),
            )
        )
    session.add(artwork)
    session.flush()
    if title.default_artwork_id is None:
        # The first variant is the fallback until an editor names another.
        title.default_artwork_id = artwork.id
    return artwork


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
    title.default_artwork_id = artwork.id
    session.flush()
    return title


def titles_with_active_artwork(
    session: Session, title_ids: Iterable[str]
) -> dict[str, tuple[Title, list[Artwork]]]:
    """For each known title among `title_ids`: the title and its active variants, in upload
    order. Unknown ids are simply absent."""
    titles = session.scalars(select(Title).where(Title.id.in_(set(title_ids))))
    return {
        title.id: (title, [a for a in title.artworks if a.status == "active"]) for title in titles
    }
