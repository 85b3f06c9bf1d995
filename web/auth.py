"""Editors' credentials: API tokens for scripts, passwords for the studio."""

from __future__ import annotations

import functools
import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from email_validator import EmailNotValidError, validate_email
from flask import g, request, session
from flask_wtf.csrf import validate_csrf
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import ValidationError

from web.errors import ApiError
from web.models import Editor
from web.state import db

F = TypeVar("F", bound=Callable[..., Any])
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# A studio sign-in lasts this long however active it is: the session lives only in the
# signed cookie, so a copied cookie cannot be revoked before then (not even by signing out).
STUDIO_SESSION_SECONDS = 12 * 3600


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_editor(
    session: Session, email: str, *, password: str | None = None, is_admin: bool = False
) -> tuple[Editor, str]:
    """Add an editor; answer it and its API token (shown once, stored only hashed).

    The address must pass the check the studio's sign-in form makes (WTForms' `Email()`,
    which is email-validator's), or the editor could never sign in: special-use domains
    such as `.local` and `.test` are refused."""
    email = email.strip().lower()
    if len(email) > 320:
        raise ValueError(f"{email!r} is not an email address: at most 320 characters")
    try:
        validate_email(email, check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(f"{email!r} is not an email address: {error}") from None
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


def list_editors(session: Session) -> list[Editor]:
    return list(session.scalars(select(Editor).order_by(Editor.email)))


def get_editor(session: Session, editor_id: int) -> Editor:
    editor = session.get(Editor, editor_id)
    if editor is None:
        raise ApiError(404, "unknown_editor", f"no editor {editor_id}")
    return editor


def set_password(session: Session, editor: Editor, password: str) -> None:
    """Give `editor` a new studio password; their signed-in sessions end with the old one."""
    if not 8 <= len(password) <= 200:
        raise ApiError(422, "invalid_request", "password: 8 to 200 characters")
    editor.password_hash = generate_password_hash(password)
    session.flush()


def issue_token(session: Session, editor: Editor) -> str:
    """A new API token for `editor` (shown once); the old one stops working."""
    token = "ka_" + secrets.token_urlsafe(32)
    editor.token_hash = token_hash(token)
    session.flush()
    return token


def revoke_token(session: Session, editor: Editor) -> None:
    """The editor's API token stops working; the column stays unique with a hash of a token
    nobody was given."""
    editor.token_hash = token_hash("revoked:" + secrets.token_urlsafe(32))
    session.flush()


@functools.cache
def _nobodys_password_hash() -> str:
    """A hash made as `create_editor` makes them, of a password nobody knows."""
    return generate_password_hash(secrets.token_urlsafe(32))


def check_password(session: Session, email: str, password: str) -> Editor | None:
    editor = session.scalar(select(Editor).where(Editor.email == email.strip().lower()))
    stored = editor.password_hash if editor is not None else ""
    # Hash the password even when there is nothing to check it against: answering an unknown
    # email sooner than a wrong password would tell anyone which emails are editors'.
    matches = check_password_hash(stored or _nobodys_password_hash(), password)
    return editor if stored and matches else None


def _password_fingerprint(editor: Editor) -> str:
    # Changing an editor's password changes this, which ends their studio sessions.
    return hashlib.sha256(editor.password_hash.encode()).hexdigest()[:32]


def start_studio_session(editor: Editor) -> None:
    """Sign `editor` in to the studio, in a fresh session."""
    session.clear()
    session["editor_id"] = editor.id
    session["password_fingerprint"] = _password_fingerprint(editor)
    session["signed_in_at"] = int(time.time())


def studio_editor() -> Editor | None:
    """The editor signed in to the studio by this request's session cookie, if any.

    A browser sends the cookie along with requests other sites make: the studio's forms carry
    CSRF tokens, and the editor API asks for one with the cookie (`editor_required`)."""
    editor_id = session.get("editor_id")
    signed_in_at = session.get("signed_in_at")
    if editor_id is None or not isinstance(signed_in_at, int):
        return None
    if not (0 <= time.time() - signed_in_at <= STUDIO_SESSION_SECONDS):
        return None
    editor = db().get(Editor, editor_id)
    if editor is None or session.get("password_fingerprint") != _password_fingerprint(editor):
        return None
    return editor


def token_editor() -> Editor | None:
    """The editor behind this request's `Authorization: Bearer` token, if any."""
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    return db().scalar(select(Editor).where(Editor.token_hash == token_hash(header[7:].strip())))


def editor_required(view: F) -> F:
    """Answer 401 unless the request carries an editor credential: a bearer token, or the
    studio's session cookie (the contract allows either). A browser sends that cookie along
    with requests other sites make, so a cookie-authenticated request that changes anything
    must also carry the session's CSRF token in `X-CSRFToken` (403 without it)."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        editor = token_editor()
        if editor is None and request.headers.get("Authorization") is None:
            editor = studio_editor()
            if editor is not None and request.method not in _SAFE_METHODS:
                try:
                    validate_csrf(request.headers.get("X-CSRFToken", ""))
                except ValidationError:
                    raise ApiError(
                        403,
                        "csrf_required",
                        "with the studio's session, send its CSRF token as 'X-CSRFToken'",
                    ) from None
        if editor is None:
            raise ApiError(401, "unauthorized", "send an editor token as 'Authorization: Bearer …'")
        g.editor = editor
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def admin_required(view: F) -> F:
    """`editor_required`, and 403 `admin_required` unless the editor was made `--admin`."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not g.editor.is_admin:
            raise ApiError(403, "admin_required", "only admin editors manage editors and tokens")
        return view(*args, **kwargs)

    return editor_required(wrapped)  # type: ignore[return-value]
