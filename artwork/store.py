"""The content-addressed blob store: bytes are kept under their SHA-256, so a key never
changes meaning and can be cached forever."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{64}\.(jpg|webp|avif|png)$")

MEDIA_TYPES = {
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "avif": "image/avif",
    "png": "image/png",
}


def is_key(key: str) -> bool:
    return bool(_KEY.match(key))


class BlobStore:
    """A local directory of immutable blobs, fanned out by the first two hex digits.

    Originals (uploads as they came, metadata and all) live apart, under `originals/`, which
    `path` never answers for: media only ever serves what keyart wrote itself.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, data: bytes, extension: str) -> str:
        key = f"{hashlib.sha256(data).hexdigest()}.{extension}"
        if not is_key(key):
            raise ValueError(f"unsupported blob extension {extension!r}")
        self._write(self._path(key), data)
        return key

    def put_original(self, data: bytes, extension: str) -> str:
        """Keep an upload's bytes as they came, by their SHA-256; never served as media."""
        key = f"{hashlib.sha256(data).hexdigest()}.{extension}"
        if not is_key(key):
            raise ValueError(f"unsupported blob extension {extension!r}")
        self._write(self.root / "originals" / key[:2] / key, data)
        return key

    def read_original(self, key: str) -> bytes | None:
        """An original's bytes, or None if it is missing."""
        if not is_key(key):
            return None
        for path in (self.root / "originals" / key[:2] / key, self._path(key)):
            # Variants uploaded before originals were kept apart live among the media.
            if path.is_file():
                return path.read_bytes()
        return None

    def _write(self, path: Path, data: bytes) -> None:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename, so a reader never sees half a file.
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)

    def path(self, key: str) -> Path | None:
        """The file holding `key`, or None if the key is malformed or absent."""
        if not is_key(key):
            return None
        path = self._path(key)
        return path if path.is_file() else None

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key
