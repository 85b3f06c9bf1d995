"""What can go wrong with the catalog or an upload, in words a client can act on.

`kind` says which sort of failure it is; the web layer maps kinds to HTTP statuses.
"""

from __future__ import annotations


class ArtworkError(Exception):
    kind = "invalid"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class NotFound(ArtworkError):
    kind = "not_found"


class Conflict(ArtworkError):
    kind = "conflict"


class TooLarge(ArtworkError):
    kind = "too_large"


class UnsupportedImage(ArtworkError):
    kind = "unsupported"


class BadImage(ArtworkError):
    """The bytes claim to be an accepted image but cannot be safely decoded."""

    kind = "unprocessable"
