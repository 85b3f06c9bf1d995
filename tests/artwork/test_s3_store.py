"""The S3 blob store against a real S3-compatible server (moto's, over HTTP)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import boto3
import pytest

from artwork.store import (
    MEDIA,
    ORIGINALS,
    BlobStore,
    LocalBlobStore,
    S3BlobStore,
    S3Location,
    StoreUnavailable,
    open_store,
)


def _objects(url: str) -> set[str]:
    location = S3Location.parse(url)
    listed = boto3.client("s3").list_objects_v2(Bucket=location.bucket)
    return {item["Key"] for item in listed.get("Contents", ())}


def test_s3_store_keeps_media_and_originals_apart(s3_media_url: str) -> None:
    store = open_store(s3_media_url, Path("/nonexistent"))
    assert isinstance(store, S3BlobStore) and isinstance(store, BlobStore)
    original = store.put_original(b"original bytes, GPS and all", "jpg")
    assert original == hashlib.sha256(b"original bytes, GPS and all").hexdigest() + ".jpg"
    served = store.put(b"rendition bytes", "webp")
    assert _objects(s3_media_url) == {
        f"media-test/originals/{original}",
        f"media-test/media/{served}",
    }

    assert store.read_original(original) == b"original bytes, GPS and all"
    assert store.exists(served) and not store.exists(original)
    assert store.open(original) is None  # originals are never served
    found = store.open(served)
    assert found is not None and found.size == len(b"rendition bytes")
    with found.stream as stream:
        assert stream.read() == b"rendition bytes"
    assert list(store.keys(MEDIA)) == [served] and list(store.keys(ORIGINALS)) == [original]
    # The object carries the type and caching a CDN in front of the bucket should serve.
    head = boto3.client("s3").head_object(
        Bucket=S3Location.parse(s3_media_url).bucket, Key=f"media-test/media/{served}"
    )
    assert head["ContentType"] == "image/webp" and "immutable" in head["CacheControl"]


def test_missing_and_malformed_keys_are_none(s3_media_url: str) -> None:
    store = open_store(s3_media_url, Path("/nonexistent"))
    absent = "0" * 64 + ".png"
    assert store.open(absent) is None and not store.exists(absent)
    assert store.read_original(absent) is None
    assert store.open("../../etc/passwd") is None
    assert store.read_original("x.png") is None
    with pytest.raises(ValueError):
        store.put(b"x", "exe")


def test_an_early_original_among_the_media_is_still_found(s3_media_url: str) -> None:
    store = open_store(s3_media_url, Path("/nonexistent"))
    key = store.put(b"an early upload", "png")  # where the first version kept originals
    assert store.read_original(key) == b"an early upload"


def test_a_missing_bucket_or_server_is_unavailable_not_absent(
    s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = S3BlobStore(S3Location.parse("s3://no-such-bucket-here/x"))
    with pytest.raises(StoreUnavailable):  # NoSuchBucket, not NoSuchKey
        store.open("0" * 64 + ".png")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: refused
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StoreUnavailable):
        S3BlobStore(S3Location.parse("s3://bucket/x")).put(b"x", "png")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://bucket/x", "s3://"),
        ("s3://Bad_Bucket/x", "bucket name"),
        ("s3://bucket/a//b", "segment"),
        ("s3://bucket/a/../b", "segment"),
        ("s3://bucket/x?y=1", "query"),
    ],
)
def test_malformed_media_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        S3Location.parse(url)


def test_local_store_lists_its_keys_by_kind(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    served = store.put(b"r", "jpg")
    original = store.put_original(b"o", "png")
    (tmp_path / "ab").mkdir(exist_ok=True)
    (tmp_path / "ab" / ".tmp-123").write_bytes(b"half a file")
    assert list(store.keys(MEDIA)) == [served]
    assert list(store.keys(ORIGINALS)) == [original]
