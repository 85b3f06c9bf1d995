"""Rendition bytes, by content hash: cacheable forever. Served from the blob store (a local
directory or an S3 bucket), or, with KEYART_MEDIA_PUBLIC_URL, redirected there."""

from __future__ import annotations

from flask import Blueprint, Response, redirect, request, send_file

from artwork.store import MEDIA_TYPES, is_key
from web.errors import ApiError
from web.state import runtime

bp = Blueprint("media", __name__, url_prefix="/media")

IMMUTABLE = "public, max-age=31536000, immutable"


@bp.get("/<key>")
def media(key: str) -> Response:
    rt = runtime()
    if not is_key(key):
        raise ApiError(404, "unknown_media", f"no media {key!r}")
    public = rt.settings.media_public_url
    if public:
        # Not permanent: the operator may move the CDN, and a 301 would be cached for good.
        response = redirect(f"{public}/{key}", 302)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response
    etag = key.split(".", 1)[0]
    # A key is the hash of its bytes, so a matching tag is always still valid.
    if etag in request.if_none_match:
        if not rt.store.exists(key):
            raise ApiError(404, "unknown_media", f"no media {key!r}")
        response = Response(status=304)
    else:
        found = rt.store.open(key)
        if found is None:
            raise ApiError(404, "unknown_media", f"no media {key!r}")
        response = send_file(
            found.stream,
            mimetype=MEDIA_TYPES[key.rsplit(".", 1)[1]],
            conditional=False,
            etag=False,
        )
        response.content_length = found.size
    response.set_etag(etag)
    response.headers["Cache-Control"] = IMMUTABLE
    # The type is the one the key names; a browser must not guess another from the bytes.
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
