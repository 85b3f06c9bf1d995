"""The catalog: titles, their artwork variants, and each variant's renditions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

STATUSES = ("active", "paused", "archived")


def utcnow() -> datetime:
    """Naive UTC: SQLite keeps no zone, so every timestamp is stored the same way."""
    return datetime.now(UTC).replace(tzinfo=None)


class CatalogBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CatalogVersion(CatalogBase):
    """One row whose `version` rises with every change to `titles` or `artworks` (database
    triggers bump it; see migration 0005), so a process can tell its cached catalog is stale
    by reading one number."""

    __tablename__ = "catalog_version"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class Title(CatalogBase):
    __tablename__ = "titles"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(500))
    genres: Mapped[list[str]] = mapped_column(JSON, default=list)
    default_artwork_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    artworks: Mapped[list[Artwork]] = relationship(
        back_populates="title", order_by="Artwork.created_at", lazy="selectin"
    )


class Artwork(CatalogBase):
    """One uploaded variant of a title's artwork."""

    __tablename__ = "artworks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=lambda: uuid.uuid4().hex)
    title_id: Mapped[str] = mapped_column(ForeignKey("titles.id"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    label: Mapped[str] = mapped_column(String(200), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    original_key: Mapped[str] = mapped_column(String(80))
    phash: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    focus_x: Mapped[float | None] = mapped_column(Float)
    focus_y: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # What a UI paints before the image arrives: {"color": "#rrggbb", "blurhash": {preset: …}}.
    placeholder: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The backbone's unit vector, when the operator configured one (not an action feature).
    embedding: Mapped[list[float] | None] = mapped_column(JSON)
    # Where the crops are centred and why: {"x", "y", "source": editor|faces|saliency}.
    crop: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The pipeline fingerprint these renditions and features were made with (see reprocess).
    processed_with: Mapped[str | None] = mapped_column(String(32))

    title: Mapped[Title] = relationship(back_populates="artworks", lazy="joined")
    renditions: Mapped[list[Rendition]] = relationship(
        back_populates="artwork",
        order_by="(Rendition.preset, Rendition.format)",
        lazy="selectin",
        cascade="all, delete-orphan",
    )


class Rendition(CatalogBase):
    """A variant resized and cropped for one preset, encoded in one format."""

    __tablename__ = "renditions"
    __table_args__ = (UniqueConstraint("artwork_id", "preset", "format"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    artwork_id: Mapped[str] = mapped_column(ForeignKey("artworks.id"), index=True)
    preset: Mapped[str] = mapped_column(String(64))
    format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    key: Mapped[str] = mapped_column(String(80))
    size: Mapped[int] = mapped_column(Integer)

    artwork: Mapped[Artwork] = relationship(back_populates="renditions")
