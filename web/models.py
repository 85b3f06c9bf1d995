"""Editors: who may change the catalog, by studio password or API token."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from artwork.models import NAMING_CONVENTION, utcnow


class AuthBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Editor(AuthBase):
    __tablename__ = "editors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # werkzeug's salted hash; empty when the editor only uses the API token.
    password_hash: Mapped[str] = mapped_column(String(300), default="")
    # SHA-256 of the API token: tokens are 256 random bits, so a fast hash is enough.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
