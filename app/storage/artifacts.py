"""Content-addressed artifact store on a local directory or any fsspec URL (s3://, gs://, ...).

What it holds are safetensors payloads (model weights, consolidation = Fisher + anchors,
parsed datasets), each stored under its own sha256: the same bytes are stored once, and a
path can never hold anything but the bytes it is named after. A payload is written under a
temporary name and renamed into place, so a crash mid-write leaves at most a stray temporary
file, never a torn artifact; it is verified against its sha256 when read back, so a damaged
file is refused instead of being served. Workers on other machines read the same URIs.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

from app.errors import ArtifactCorrupt
from app.learning.state import from_safetensors_bytes, to_safetensors_bytes

SUFFIX = ".safetensors"


@dataclass(frozen=True)
class ArtifactRef:
    """Where a payload lives and what it is: recorded in the database next to whatever uses it."""

    uri: str
    sha256: str
    size: int


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    def __init__(self, root: str):
        self.fs, self.root = fsspec.core.url_to_fs(root)
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)
        self.fs.makedirs(self.root, exist_ok=True)

    def uri_of(self, sha256: str) -> str:
        return self.fs.unstrip_protocol(self._path(sha256))

    def _path(self, sha256: str) -> str:
        return f"{self.root}/{sha256[:2]}/{sha256}{SUFFIX}"

    def put(self, data: bytes) -> ArtifactRef:
        """Store ``data`` (idempotent: an existing intact copy is kept) and return its reference."""
        sha256 = sha256_of(data)
        path = self._path(sha256)
        if not (self.fs.exists(path) and self.fs.size(path) == len(data)):
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            temporary = f"{path}.{uuid.uuid4().hex}.tmp"
            if self.local:
                try:
                    with open(temporary, "wb") as handle:
                        handle.write(data)
                        handle.flush()
                        os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
                    os.replace(temporary, path)  # atomic on POSIX
                finally:  # a failed write (disk full, unwritable) leaves no temporary behind
                    if os.path.exists(temporary):
                        os.remove(temporary)
            else:
                self.fs.pipe_file(temporary, data)
                self.fs.mv(temporary, path)
        return ArtifactRef(uri=self.uri_of(sha256), sha256=sha256, size=len(data))

    def get(self, uri: str, sha256: str | None = None) -> bytes:
        """The payload at ``uri``, verified against ``sha256`` (the one recorded with it; by default
        the one in its content-addressed name). Raises ArtifactCorrupt on a mismatch."""
        fs, path = fsspec.core.url_to_fs(uri)
        expected = sha256 or os.path.basename(path).removesuffix(SUFFIX)
        data = fs.cat_file(path)
        actual = sha256_of(data)
        if actual != expected:
            raise ArtifactCorrupt(f"artifact {uri} is damaged: its sha256 is {actual}, expected {expected}; "
                                  "it will not be used")
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

    def exists(self, uri: str) -> bool:
        fs, path = fsspec.core.url_to_fs(uri)
        return fs.exists(path)


def artifact_store(settings) -> ArtifactStore:
    return ArtifactStore(settings.artifact_uri)
