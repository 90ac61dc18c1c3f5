"""Content-addressed artifact store on a local directory or any fsspec URL (s3://, gs://, ...).

What it holds are safetensors payloads (model weights, consolidation = Fisher + anchors,
parsed datasets), each stored under its own sha256: the same bytes are stored once, and a
path can never hold anything but the bytes it is named after. It is verified against its
sha256 when read back, so a damaged file is refused instead of being served. Workers on other
machines read the same URIs.

How a write stays whole depends on the filesystem:
* local directory: written under a temporary name, fsynced, renamed into place (atomic on POSIX),
  so a crash mid-write leaves at most a stray temporary file, never a torn artifact;
* object stores (s3://, gs://, ...): one PUT straight to the content address. An object store
  has no rename (s3fs "moves" by copy + delete, twice the traffic), and needs none: a PUT is
  visible whole or not at all, and since a name holds only the bytes it is named after, two
  writers racing on it write the same bytes. ``put`` first asks for the object's size (one
  HEAD), so a retry or a second worker rewrites nothing.

Garbage collection (app/registry/collection.py) removes artifacts no row refers to once they are
older than a grace period, judged by their modification time; ``put`` therefore refreshes that
time when it finds its bytes already stored (a local ``utime``; on an object store, which cannot
touch an object, a re-PUT once the copy is older than ``refresh_after`` seconds), so a writer that
reuses an old unreferenced artifact just before its commit is not robbed of it.

Credentials and endpoint for s3:// come from the standard AWS sources that botocore (under
s3fs, ``pip install 'retain[s3]'``) reads: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` or
``AWS_PROFILE`` and ``~/.aws/credentials``, ``AWS_DEFAULT_REGION``, and ``AWS_ENDPOINT_URL``
(or ``endpoint_url`` in ``~/.aws/config``) for an S3-compatible server (MinIO, Ceph, moto).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import fsspec
from fsspec.implementations.local import LocalFileSystem

from app.errors import ArtifactCorrupt
from app.learning.state import from_safetensors_bytes, to_safetensors_bytes
from app.settings import Settings

SUFFIX = ".safetensors"
ARTIFACT_NAME = re.compile(r"(?:.*/)?([0-9a-f]{2})/(\1[0-9a-f]{62})" + re.escape(SUFFIX))
"""``<root>/<first two hex digits>/<sha256>.safetensors``: the only names the store writes, and the only
ones garbage collection ever considers (anything else under the root is left alone)."""


@dataclass(frozen=True)
class ArtifactRef:
    """Where a payload lives and what it is: recorded in the database next to whatever uses it."""

    uri: str
    sha256: str
    size: int


@dataclass(frozen=True)
class StoredArtifact:
    """One artifact found in the store by `ArtifactStore.stored`."""

    sha256: str
    size: int
    modified: float | None  # seconds since the epoch on the store's clock; None when the store does not say


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def modified_time(info: dict) -> float | None:
    """When an fsspec ``info`` entry was last written: ``mtime`` (local), ``LastModified`` (S3), ``updated``
    (GCS), ``created`` (memory); None when it has none of them."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


class ArtifactStore:
    def __init__(self, root: str, refresh_after: float = 1800.0):
        self.fs, self.root = fsspec.core.url_to_fs(root)
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        self.refresh_after = refresh_after  # object stores: re-PUT a reused copy older than this (module docstring)
        self.fs.makedirs(self.root, exist_ok=True)

    @property
    def uri_root(self) -> str:
        """The root as a URL another process (or machine) can open the same store with."""
        return self.fs.unstrip_protocol(self.root)

    def uri_of(self, sha256: str) -> str:
        return self.fs.unstrip_protocol(self._path(sha256))

    def _path(self, sha256: str) -> str:
        return f"{self.root}/{sha256[:2]}/{sha256}{SUFFIX}"

    def put(self, data: bytes) -> ArtifactRef:
        """Store ``data`` (idempotent: an existing intact copy is kept) and return its reference."""
        sha256 = sha256_of(data)
        path = self._path(sha256)
        if not self._reuse(path, len(data)):
            if self.local:
                self._write_locally(path, data)
            else:
                self.fs.pipe_file(path, data)  # one PUT: whole or absent (module docstring)
        return ArtifactRef(uri=self.uri_of(sha256), sha256=sha256, size=len(data))

    def _reuse(self, path: str, size: int) -> bool:
        """Whether an intact copy (by size) is stored and young again: one stat and a ``utime`` (local)
        or one HEAD (object store; False for a copy older than ``refresh_after``, rewritten by the caller)."""
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return False
        if int(info["size"]) != size:
            return False
        if self.local:
            try:
                os.utime(path)  # reused now: not garbage for another grace period
            except FileNotFoundError:  # collected between the stat and now
                return False
            return True
        modified = modified_time(info)
        return modified is not None and time.time() - modified < self.refresh_after

    @staticmethod
    def _write_locally(path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
            os.replace(temporary, path)  # atomic on POSIX
        finally:  # a failed write (disk full, unwritable) leaves no temporary behind
            if os.path.exists(temporary):
                os.remove(temporary)

    def _fs_of(self, uri: str):
        """The filesystem and path of ``uri``: this store's own (its connection pool, no new
        client per read) when ``uri`` is under its root, else whatever fsspec resolves."""
        if uri.startswith(self.uri_root + "/"):
            return self.fs, self.fs._strip_protocol(uri)
        return fsspec.core.url_to_fs(uri)

    def get(self, uri: str, sha256: str | None = None) -> bytes:
        """The payload at ``uri``, verified against ``sha256`` (the one recorded with it; by default
        the one in its content-addressed name). Raises ArtifactCorrupt on a mismatch."""
        fs, path = self._fs_of(uri)
        expected = sha256 or os.path.basename(path).removesuffix(SUFFIX)
        data = fs.cat_file(path)
        actual = sha256_of(data)
        if actual != expected:
            raise ArtifactCorrupt(
                f"artifact {uri} is damaged: its sha256 is {actual}, expected {expected}; it will not be used"
            )
        return data

    def put_tensors(self, tensors: dict, metadata: dict[str, str]) -> ArtifactRef:
        """Store tensors + string metadata as one safetensors payload."""
        return self.put(to_safetensors_bytes(tensors, metadata))

    def get_tensors(self, uri: str, sha256: str | None = None) -> tuple[dict, dict[str, str]]:
        """Inverse of `put_tensors`, verified like `get`."""
        return from_safetensors_bytes(self.get(uri, sha256))

    def remove_stale_temporaries(self, older_than_seconds: float = 3600.0) -> int:
        """Delete ``*.tmp`` files a killed writer left (older than any write in progress could be);
        returns how many. Workers call it when they start."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for path in self.fs.glob(f"{self.root}/*/*.tmp"):
            modified = self.fs.modified(path).timestamp() if not self.local else os.path.getmtime(path)
            if modified < cutoff:
                self.fs.rm_file(path)
                removed += 1
        return removed

    def stored(self) -> list[StoredArtifact]:
        """Every artifact in the store (one listing: a directory walk, or paged LIST requests)."""
        found = []
        for path, info in self.fs.find(self.root, detail=True).items():
            name = ARTIFACT_NAME.fullmatch(path)
            if name is not None and path.startswith(self.root + "/") and info.get("type", "file") == "file":
                found.append(StoredArtifact(sha256=name.group(2), size=int(info["size"]), modified=modified_time(info)))
        return found

    def remove_unless_newer(self, sha256: str, cutoff: float) -> int | None:
        """Remove an artifact last written before ``cutoff`` (its time read again now); its size, or None
        when it is newer (written or reused since it was listed) or already gone."""
        path = self._path(sha256)
        try:
            info = self.fs.info(path)
            modified = modified_time(info)
            if modified is None or modified >= cutoff:
                return None
            self.fs.rm_file(path)
        except FileNotFoundError:
            return None
        return int(info["size"])

    def exists(self, uri: str) -> bool:
        fs, path = self._fs_of(uri)
        return fs.exists(path)


def artifact_store(settings: Settings) -> ArtifactStore:
    return ArtifactStore(settings.artifact_uri, refresh_after=settings.artifact_gc_grace_seconds / 2)
