"""Rendition bytes, by content hash: cacheable forever."""

from __future__ import annotations

from flask import Blueprint, Response, request, send_file

from artwork.store import MEDIA_TYPES
from web.errors import ApiError
from web.state import runtime

bp = Blueprint("media", __name__, url_prefix="/media")


@bp.get("/<key>")
def media(key: str) -> Response:
    path = runtime().store.path(key)
    if path is None:
        raise ApiError(404, "unknown_media", f"no media {key!r}")
    etag = key.split(".", 1)[0]
    # A key is the hash of its bytes, so a matching tag is always still valid.
    if etag in request.if_none_match:
        response = Response(status=304)
    else:
        response = send_file(
            path, mimetype=MEDIA_TYPES[key.rsplit(".", 1)[1]], conditional=False, etag=False
        )
    response.set_etag(etag)
    response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    # The type is the one the key names; a browser must not guess another from the bytes.
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
