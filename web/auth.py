"""Editors' credentials: API tokens for scripts, passwords for the studio."""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from flask import g, request, session
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from web.errors import ApiError
from web.models import Editor
from web.state import db

F = TypeVar("F", bound=Callable[..., Any])


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_editor(
    session: Session, email: str, *, password: str | None = None, is_admin: bool = False
) -> tuple[Editor, str]:
    """Add an editor; answer it and its API token (shown once, stored only hashed)."""
    email = email.strip().lower()
    if "@" not in email or len(email) > 320:
        raise ValueError(f"{email!r} is not an email address")
    if session.scalar(select(Editor).where(Editor.email == email)) is not None:
        raise ValueError(f"an editor {email} already exists")
    token = "ka_" + secrets.token_urlsafe(32)
    editor = Editor(
        email=email,
        password_hash=generate_password_hash(password) if password else "",
        token_hash=token_hash(token),
        is_admin=is_admin,
    )
    session.add(editor)
    session.flush()
    return editor, token


def check_password(session: Session, email: str, password: str) -> Editor | None:
    editor = session.scalar(select(Editor).where(Editor.email == email.strip().lower()))
    if editor is None or not editor.password_hash:
        return None
    return editor if check_password_hash(editor.password_hash, password) else None


def current_editor() -> Editor | None:
    """The editor behind this request's bearer token or studio session, if any."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return db().scalar(
            select(Editor).where(Editor.token_hash == token_hash(header[7:].strip()))
        )
    editor_id = session.get("editor_id")
    if editor_id is not None:
        return db().get(Editor, editor_id)
    return None


def editor_required(view: F) -> F:
    """Answer 401 unless the request carries a valid editor credential."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        editor = current_editor()
        if editor is None:
            raise ApiError(401, "unauthorized", "send an editor token as 'Authorization: Bearer …'")
        g.editor = editor
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]
