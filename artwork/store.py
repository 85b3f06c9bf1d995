"""The content-addressed blob store: bytes are kept under their SHA-256, so a key never
changes meaning and can be cached forever.

Two backends behind one interface (`BlobStore`): a local directory (`LocalBlobStore`, the
default) and an S3-compatible bucket (`S3BlobStore`, through boto3), chosen by
`open_store`. Both keep originals apart from the renditions they serve.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

_KEY = re.compile(r"^[0-9a-f]{64}\.(jpg|webp|avif|png)$")
# Bucket names as S3 allows them (3-63 lowercase letters, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

MEDIA_TYPES = {
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "avif": "image/avif",
    "png": "image/png",
}

# The two kinds of blob: what media serves, and uploads as they came (never served).
MEDIA = "media"
ORIGINALS = "originals"


class StoreUnavailable(Exception):
    """The blob store could not be reached or refused the request (not: no such blob)."""


def is_key(key: str) -> bool:
    return bool(_KEY.match(key))


def content_key(data: bytes, extension: str) -> str:
    key = f"{hashlib.sha256(data).hexdigest()}.{extension}"
    if not is_key(key):
        raise ValueError(f"unsupported blob extension {extension!r}")
    return key


@dataclass
class MediaObject:
    """A served blob's bytes as a stream, and their length; the caller closes `stream`."""

    stream: IO[bytes]
    size: int


@runtime_checkable
class BlobStore(Protocol):
    """Where renditions and originals are kept, by content hash."""

    def put(self, data: bytes, extension: str) -> str:
        """Keep a rendition; answer its key."""
        ...

    def put_original(self, data: bytes, extension: str) -> str:
        """Keep an upload's bytes as they came, by their SHA-256; never served as media."""
        ...

    def read_original(self, key: str) -> bytes | None:
        """An original's bytes, or None if it is missing or the key malformed."""
        ...

    def exists(self, key: str) -> bool:
        """Whether a rendition with this (well-formed) key is kept."""
        ...

    def open(self, key: str) -> MediaObject | None:
        """A rendition's bytes to serve, or None if the key is malformed or absent."""
        ...

    def keys(self, kind: str) -> Iterator[str]:
        """Every key of one kind (`MEDIA` or `ORIGINALS`) the store holds."""
        ...

    def put_key(self, kind: str, key: str, data: bytes) -> None:
        """Keep `data` under a given key (copying between stores)."""
        ...

    def read_key(self, kind: str, key: str) -> bytes | None:
        """The bytes under a key of one kind, or None."""
        ...


class LocalBlobStore:
    """A local directory of immutable blobs, fanned out by the first two hex digits.

    Originals (uploads as they came, metadata and all) live apart, under `originals/`, which
    `path` never answers for: media only ever serves what keyart wrote itself.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalBlobStore({str(self.root)!r})"

    def put(self, data: bytes, extension: str) -> str:
        key = content_key(data, extension)
        self._write(self._path(MEDIA, key), data)
        return key

    def put_original(self, data: bytes, extension: str) -> str:
        key = content_key(data, extension)
        self._write(self._path(ORIGINALS, key), data)
        return key

    def read_original(self, key: str) -> bytes | None:
        if not is_key(key):
            return None
        # Variants uploaded before originals were kept apart live among the media.
        for kind in (ORIGINALS, MEDIA):
            data = self.read_key(kind, key)
            if data is not None:
                return data
        return None

    def exists(self, key: str) -> bool:
        return self.path(key) is not None

    def open(self, key: str) -> MediaObject | None:
        path = self.path(key)
        if path is None:
            return None
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return None
        return MediaObject(handle, os.fstat(handle.fileno()).st_size)

    def keys(self, kind: str) -> Iterator[str]:
        base = self.root / ORIGINALS if kind == ORIGINALS else self.root
        if not base.is_dir():
            return
        for fan in sorted(base.iterdir()):
            # Two hex digits: skips `originals/` (and anything else) among the media.
            if fan.is_dir() and len(fan.name) == 2:
                for path in sorted(fan.iterdir()):
                    if is_key(path.name) and path.name.startswith(fan.name):
                        yield path.name

    def put_key(self, kind: str, key: str, data: bytes) -> None:
        if not is_key(key):
            raise ValueError(f"malformed blob key {key!r}")
        self._write(self._path(kind, key), data)

    def read_key(self, kind: str, key: str) -> bytes | None:
        if not is_key(key):
            return None
        path = self._path(kind, key)
        return path.read_bytes() if path.is_file() else None

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
        path = self._path(MEDIA, key)
        return path if path.is_file() else None

    def _path(self, kind: str, key: str) -> Path:
        base = self.root / ORIGINALS if kind == ORIGINALS else self.root
        return base / key[:2] / key


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or "some/prefix" (no leading or trailing slash)

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://bucket[/prefix]`; ValueError saying what is wrong otherwise."""
        parts = urlsplit(url)
        if parts.scheme != "s3":
            raise ValueError(f"must be an s3://bucket/prefix URL, got {url!r}")
        if not _BUCKET.match(parts.netloc or "") or ".." in parts.netloc:
            raise ValueError(f"{parts.netloc!r} is not an S3 bucket name")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or a fragment")
        prefix = parts.path.strip("/")
        if any(segment in ("", ".", "..") for segment in prefix.split("/")) and prefix:
            raise ValueError(f"prefix {prefix!r} has an empty, '.' or '..' segment")
        return cls(parts.netloc, prefix)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


class S3BlobStore:
    """Blobs in an S3-compatible bucket, as `<prefix>/media/<key>` (what media serves, and
    what a CDN in front of the bucket maps to `KEYART_MEDIA_PUBLIC_URL`) and
    `<prefix>/originals/<key>` (never served).

    boto3 reads its usual configuration (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `~/.aws`...). It is imported, and the client
    made, on first use: a process that only serves decisions never pays for either.
    """

    def __init__(self, location: S3Location, client: Any = None) -> None:
        self.location = location
        self._client = client
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"S3BlobStore({str(self.location)!r})"

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3  # lazily: see the class docstring

                    # One client per store (clients are thread-safe; sessions are not).
                    self._client = boto3.session.Session().client("s3")
        return self._client

    def _call(self, operation: str, missing_ok: bool = False, **params: Any) -> Any:
        """One S3 call on the store's bucket. None when `missing_ok` and the object is absent;
        any other failure (unreachable, refused, no such bucket) is `StoreUnavailable`."""
        try:
            return getattr(self.client, operation)(Bucket=self.location.bucket, **params)
        except Exception as error:
            if missing_ok and _missing(error):
                return None
            if type(error).__module__.startswith(("botocore", "boto3", "urllib3")):
                raise StoreUnavailable(f"{self.location}: {error}") from error
            raise

    def object_name(self, kind: str, key: str) -> str:
        name = f"{kind}/{key}"
        return f"{self.location.prefix}/{name}" if self.location.prefix else name

    def put(self, data: bytes, extension: str) -> str:
        key = content_key(data, extension)
        self.put_key(MEDIA, key, data)
        return key

    def put_original(self, data: bytes, extension: str) -> str:
        key = content_key(data, extension)
        self.put_key(ORIGINALS, key, data)
        return key

    def read_original(self, key: str) -> bytes | None:
        if not is_key(key):
            return None
        # Stores migrated from a local directory keep early originals among the media.
        for kind in (ORIGINALS, MEDIA):
            data = self.read_key(kind, key)
            if data is not None:
                return data
        return None

    def exists(self, key: str) -> bool:
        if not is_key(key):
            return False
        found = self._call("head_object", missing_ok=True, Key=self.object_name(MEDIA, key))
        return found is not None

    def open(self, key: str) -> MediaObject | None:
        if not is_key(key):
            return None
        answer = self._call("get_object", missing_ok=True, Key=self.object_name(MEDIA, key))
        if answer is None:
            return None
        return MediaObject(answer["Body"], int(answer["ContentLength"]))

    def keys(self, kind: str) -> Iterator[str]:
        start = self.object_name(kind, "")
        params: dict[str, Any] = {"Prefix": start}
        while True:
            page = self._call("list_objects_v2", **params)
            for item in page.get("Contents", ()):
                key = item["Key"][len(start) :]
                if is_key(key):
                    yield key
            if not page.get("IsTruncated"):
                return
            params["ContinuationToken"] = page["NextContinuationToken"]

    def put_key(self, kind: str, key: str, data: bytes) -> None:
        if not is_key(key):
            raise ValueError(f"malformed blob key {key!r}")
        extension = key.rsplit(".", 1)[1]
        self._call(
            "put_object",
            Key=self.object_name(kind, key),
            Body=data,
            ContentType=MEDIA_TYPES[extension] if kind == MEDIA else "application/octet-stream",
            # Served straight from the bucket (or a CDN in front) with what /media/ says.
            CacheControl="public, max-age=31536000, immutable",
        )

    def read_key(self, kind: str, key: str) -> bytes | None:
        if not is_key(key):
            return None
        answer = self._call("get_object", missing_ok=True, Key=self.object_name(kind, key))
        if answer is None:
            return None
        with answer["Body"] as body:
            return body.read()  # type: ignore[no-any-return]


def _missing(error: Exception) -> bool:
    """Whether a boto3 error says the object (not the bucket) is absent."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def open_store(media_url: str, media_dir: Path) -> BlobStore:
    """The store `KEYART_MEDIA_URL` names (`s3://bucket/prefix`), else the local directory."""
    if media_url:
        return S3BlobStore(S3Location.parse(media_url))
    return LocalBlobStore(media_dir)
