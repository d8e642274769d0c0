"""Content-addressed blob store: result images (and other large result files) live here,
not in Redis; Redis keeps only their keys (docs/queue.md, "Where results live").

A blob's key is the sha256 hex digest of its bytes, so identical bytes are stored once
and a key never names two contents. Two back ends behind one interface (``BlobStore``):

- ``LocalBlobStore``: a folder (the default: ``<cache dir>/blobs``; ``protolens up``;
  several workers on one machine, or on many machines sharing one volume). Writes are
  atomic (temporary file, then rename), so a reader never sees half a blob.
- ``FsspecBlobStore``: any fsspec URL; in production an S3-compatible bucket
  (``s3://bucket/prefix``, through s3fs; ``Settings.blob_endpoint_url`` for MinIO, Ceph,
  R2...). An S3 PUT is atomic too.

The store is synchronous (the queue calls it in a thread). Unreferenced blobs are
collected by ``queue.blob_gc``: a blob is kept while a stored result names it, while
a job may still read it as its input (an isolation's image), and for
``Settings.blob_gc_grace_s`` after it was last written (a worker writes its blobs
just before the script that stores the result that names them; ``put`` always
rewrites, so an old blob that a new result reuses is young again).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from protolens_server.paths import cache_dir

_KEY = re.compile(r"[0-9a-f]{64}")


def blob_key(data: bytes) -> str:
    """The key ``data`` is stored under: its sha256, 64 lowercase hex digits."""
    return hashlib.sha256(data).hexdigest()


def is_blob_key(value: str | bytes) -> bool:
    """Whether ``value`` is a blob key (results stored before the blob store held the
    image bytes themselves: those are not keys)."""
    if isinstance(value, bytes):
        if len(value) != 64:
            return False
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return False
    return _KEY.fullmatch(value) is not None


@dataclass(frozen=True)
class BlobInfo:
    key: str
    modified: float  # unix seconds of the last write


class BlobStore(ABC):
    """Where blobs live. ``put`` returns the key; ``get`` answers None for a missing key."""

    url: str

    def put(self, data: bytes) -> str:
        key = blob_key(data)
        self._write(key, data)
        return key

    @abstractmethod
    def _write(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (nothing if it is already gone)."""

    @abstractmethod
    def list(self) -> Iterator[BlobInfo]:
        """Every blob, in no particular order."""

    @staticmethod
    def _check(key: str) -> str:
        if not is_blob_key(key):
            raise ValueError(f"not a blob key: {key!r}")
        return key


class LocalBlobStore(BlobStore):
    """Blobs as files ``<root>/<first 2 hex digits>/<key>``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        key = self._check(key)
        return self.root / key[:2] / key

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list(self) -> Iterator[BlobInfo]:
        if not self.root.is_dir():
            return
        for sub in self.root.iterdir():
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for path in sub.iterdir():
                if is_blob_key(path.name):
                    try:
                        yield BlobInfo(path.name, path.stat().st_mtime)
                    except FileNotFoundError:
                        continue  # deleted meanwhile


class FsspecBlobStore(BlobStore):
    """Blobs as objects ``<url>/<first 2 hex digits>/<key>`` of an fsspec file system
    (``s3://bucket/prefix`` through s3fs: ``pip install 'protolens[s3]'``)."""

    def __init__(self, url: str, **storage_options: Any) -> None:
        import fsspec

        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **storage_options)
        self.root = root.rstrip("/")

    def _path(self, key: str) -> str:
        key = self._check(key)
        return f"{self.root}/{key[:2]}/{key}"

    def _write(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(self._path(key), data)

    def get(self, key: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            return None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def list(self) -> Iterator[BlobInfo]:
        self.fs.invalidate_cache()  # s3fs caches listings: the collector needs a fresh one
        try:
            found = self.fs.find(self.root, detail=True)
        except FileNotFoundError:
            return
        for path, info in found.items():
            name = path.rsplit("/", 1)[-1]
            if is_blob_key(name):
                yield BlobInfo(name, _modified(info))


def _modified(info: dict[str, Any]) -> float:
    """The last-write time in an fsspec ``info`` dict (S3: ``LastModified``)."""
    for field in ("LastModified", "mtime", "last_modified", "created"):
        value = info.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float):
            return float(value)
    return 0.0  # unknown: old enough to collect once unreferenced


def open_blob_store(url: str = "", *, endpoint_url: str = "") -> BlobStore:
    """The store at ``url``: a folder path or ``file://`` URL (local), any other fsspec URL
    (``s3://bucket/prefix``); "" is ``<cache dir>/blobs`` (``$PROTOLENS_CACHE_DIR``)."""
    if not url:
        return LocalBlobStore(cache_dir("blobs"))
    if url.startswith("file://"):
        return LocalBlobStore(url.removeprefix("file://"))
    if "://" not in url:
        return LocalBlobStore(Path(url).expanduser())
    options: dict[str, Any] = {}
    if endpoint_url:
        options["client_kwargs"] = {"endpoint_url": endpoint_url}
    return FsspecBlobStore(url, **options)
