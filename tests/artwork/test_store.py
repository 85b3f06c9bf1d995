"""The blob store keeps originals apart from what it serves."""

from __future__ import annotations

import hashlib
from pathlib import Path

from artwork.store import LocalBlobStore


def test_originals_are_kept_but_never_served(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = store.put_original(b"original bytes, GPS and all", "jpg")
    assert key == hashlib.sha256(b"original bytes, GPS and all").hexdigest() + ".jpg"
    assert store.read_original(key) == b"original bytes, GPS and all"
    assert store.path(key) is None
    served = store.put(b"rendition", "webp")
    assert store.path(served) is not None


def test_originals_from_before_they_were_kept_apart_are_still_found(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    key = store.put(b"an early upload", "png")  # where the first version kept originals
    assert store.read_original(key) == b"an early upload"
    assert store.read_original("0" * 64 + ".png") is None
    assert store.read_original("../../etc/passwd") is None
