"""Every error, in one place, as `{"error": {"code", "message"}}` with the right status."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from markupsafe import escape
from pydantic import ValidationError
from sqlalchemy import exc
from werkzeug.exceptions import HTTPException

from artwork.errors import ArtworkError
from artwork.store import StoreUnavailable

log = logging.getLogger(__name__)

ARTWORK_STATUS = {
    "invalid": 422,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "unsupported": 415,
    "unprocessable": 422,
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    if request.blueprint == "studio":
        # The studio is for people in browsers; everything else speaks JSON.
        page = f"<!doctype html><title>{status}</title><h1>{status}</h1><p>{escape(message)}</p>"
        return Response(page, mimetype="text/html"), status
    return jsonify({"error": {"code": code, "message": message}}), status


def first_line(error: BaseException) -> str:
    """An error's message without the SQL, parameters and links drivers add on later lines."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def describe_validation(error: ValidationError) -> str:
    """Name every field that was wrong: `titles: Field required; user: ...`."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):  # type: ignore[no-untyped-def]
        return error_response(error.status, error.code, error.message)

    @app.errorhandler(ArtworkError)
    def _artwork_error(error: ArtworkError):  # type: ignore[no-untyped-def]
        return error_response(ARTWORK_STATUS[error.kind], error.code, error.message)

    @app.errorhandler(ValidationError)
    def _validation_error(error: ValidationError):  # type: ignore[no-untyped-def]
        return error_response(422, "invalid_request", describe_validation(error))

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):  # type: ignore[no-untyped-def]
        code = (error.name or "error").lower().replace(" ", "_")
        if error.code == 413:
            code = "file_too_large"
        response, status = error_response(error.code or 500, code, error.description or "")
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response, status

    # The database cannot be reached, dropped the connection, or the pool has none to
    # spare: the client may retry, so 503, not 500. (Refused writes, such as a constraint
    # violation, are not among these and stay the request's own error.)
    @app.errorhandler(exc.OperationalError)
    @app.errorhandler(exc.InterfaceError)
    @app.errorhandler(exc.TimeoutError)
    def _database_unavailable(error: Exception):  # type: ignore[no-untyped-def]
        log.warning("database unavailable: %s", first_line(error))
        response, status = error_response(
            503, "database_unavailable", "the database is unavailable; try again shortly"
        )
        response.headers["Retry-After"] = "1"
        return response, status

    @app.errorhandler(StoreUnavailable)
    def _store_unavailable(error: StoreUnavailable):  # type: ignore[no-untyped-def]
        log.warning("media store unavailable: %s", first_line(error))
        response, status = error_response(
            503, "media_unavailable", "the media store is unavailable; try again shortly"
        )
        response.headers["Retry-After"] = "1"
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):  # type: ignore[no-untyped-def]
        log.exception("unhandled error")
        return error_response(500, "internal_error", "keyart failed to answer; see its log")
