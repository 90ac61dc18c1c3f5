"""Data by reference: a task names where its data lies (``s3://bucket/key``, or a file under a
folder the server allows) instead of uploading it.

Who checks what
    POST /tasks (``check_reference``) makes only the cheap checks, so a typo is a 4xx at once:
    the scheme is accepted, the URI lies under one of ``RETAIN_DATA_ROOTS``, the object exists,
    is a file, and is within ``max_reference_bytes``. Nothing is read.
    The worker (``read_reference``) checks the policy again (settings or links may have changed),
    reads the bytes, and parses them exactly as an upload (same formats, validation and sample
    limits; the byte limit is ``max_reference_bytes``, by default the upload limit). A file
    that fails is a failed job with the reason; nothing is stored.

Roots
    ``RETAIN_DATA_ROOTS`` lists absolute folders and URL prefixes (``/mnt/datasets``,
    ``s3://team-data/tasks``); an empty list turns references off. A local path is resolved
    (symlinks followed) and must stay inside a root; a URL must start with a root's prefix at a
    ``/`` boundary and may not hold ``..`` parts. s3 needs a root too: the worker's credentials
    may reach buckets the API's users should not teach from. http(s) roots count only with
    ``RETAIN_ALLOW_HTTP_DATA=true`` (off by default); redirects are not followed.

Credentials and endpoint for s3 come from the standard AWS environment (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL, profiles),
read by botocore under s3fs; the API needs them for the existence check, the worker to read.
Every read opens a fresh filesystem (no cached listings or stale endpoints).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import InvalidInput, PayloadTooLarge
from app.settings import Settings

REMOTE_SCHEMES = ("s3", "http", "https")


@dataclass(frozen=True)
class DataReference:
    uri: str  # normalised: an absolute local path, or scheme://rest
    name: str  # the file name (format detection breaks ties with it)
    size: int


@dataclass(frozen=True)
class ReferencePolicy:
    roots: tuple[str, ...]
    allow_http: bool
    max_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> ReferencePolicy:
        return cls(
            roots=tuple(settings.data_roots),
            allow_http=settings.allow_http_data,
            max_bytes=settings.max_reference_bytes or settings.max_upload_bytes,
        )


def check_reference(uri: str, policy: ReferencePolicy) -> DataReference:
    """The submit-time checks: allowed, present, a file, small enough. Reads no data."""
    uri = allowed_uri(uri, policy)
    fs, path = filesystem(uri)
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise InvalidInput(f"the data {uri} does not exist") from None
    except PermissionError as error:
        raise InvalidInput(f"the data {uri} cannot be read by the service: {error}") from None
    except Exception as error:  # network, credentials, endpoint: say which, without a traceback
        raise InvalidInput(f"the data {uri} cannot be reached: {type(error).__name__}: {error}") from None
    if info.get("type") == "directory":
        raise InvalidInput(
            f"the data {uri} is a folder; reference one file (zip an image folder: "
            "`retain teach FOLDER` does that for uploads)"
        )
    size = int(info.get("size") or 0)
    if size > policy.max_bytes:
        raise PayloadTooLarge(
            f"the data {uri} is {size} bytes; the limit for data by reference is {policy.max_bytes} bytes"
        )
    if size == 0:
        raise InvalidInput(f"the data {uri} is empty")
    return DataReference(uri=uri, name=posixpath.basename(path.rstrip("/")), size=size)


def read_reference(uri: str, policy: ReferencePolicy) -> bytes:
    """The worker's read: the policy again, then at most ``max_bytes`` bytes."""
    uri = allowed_uri(uri, policy)
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as handle:
        data = handle.read(policy.max_bytes + 1)
    if len(data) > policy.max_bytes:
        raise PayloadTooLarge(f"the data {uri} is over the limit for data by reference ({policy.max_bytes} bytes)")
    return data


def allowed_uri(uri: str, policy: ReferencePolicy) -> str:
    """``uri`` normalised, if it lies under an allowed root; otherwise a 4xx saying why."""
    uri = (uri or "").strip()
    if not uri:
        raise InvalidInput("uri is empty; give s3://bucket/key or an absolute path under a data root")
    if not policy.roots:
        raise InvalidInput(
            "data by reference is off on this server: it reads only under RETAIN_DATA_ROOTS, "
            "which is empty; upload the file instead"
        )
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    if scheme in ("", "file"):
        return _local(uri.removeprefix("file://") if scheme else uri, policy)
    if scheme not in REMOTE_SCHEMES:
        raise InvalidInput(
            f"uri scheme {scheme!r} is not accepted; use s3://bucket/key or an absolute path "
            f"under one of RETAIN_DATA_ROOTS"
        )
    if scheme in ("http", "https") and not policy.allow_http:
        raise InvalidInput(
            "http(s) data is off on this server (RETAIN_ALLOW_HTTP_DATA); use s3:// or a path "
            "under one of RETAIN_DATA_ROOTS"
        )
    rest = uri.split("://", 1)[1]
    if ".." in rest.split("/") or "\\" in rest or "?" in rest or "#" in rest:
        raise InvalidInput(f"uri {uri!r} may not hold '..' parts, backslashes, queries or fragments")
    normalised = f"{scheme}://{rest}"
    for root in policy.roots:
        root_scheme = urlsplit(root).scheme.lower() if "://" in root else ""
        if root_scheme != scheme:
            continue
        prefix = f"{scheme}://{root.split('://', 1)[1].rstrip('/')}/"
        if normalised.startswith(prefix) and len(normalised) > len(prefix):
            return normalised
    raise InvalidInput(f"{uri} is not under an allowed data root (RETAIN_DATA_ROOTS: {', '.join(policy.roots)})")


def _local(path: str, policy: ReferencePolicy) -> str:
    if not os.path.isabs(path):
        raise InvalidInput(f"the path {path!r} is relative; give an absolute path under one of RETAIN_DATA_ROOTS")
    real = os.path.realpath(path)  # symlinks followed: a link out of a root does not count as inside it
    for root in policy.roots:
        if "://" in root and not root.startswith("file://"):
            continue
        root_real = os.path.realpath(root.removeprefix("file://"))
        if real != root_real and os.path.commonpath([real, root_real]) == root_real:
            return real
    raise InvalidInput(
        f"the path {path} is outside the allowed data roots (RETAIN_DATA_ROOTS: {', '.join(policy.roots)})"
    )


def filesystem(uri: str):
    """A fresh fsspec filesystem for ``uri`` (no instance cache: settings and credentials are read now)."""
    import fsspec

    scheme = uri.split("://", 1)[0] if "://" in uri else "file"
    options = {"skip_instance_cache": True}
    if scheme in ("http", "https"):
        options["allow_redirects"] = False  # a redirect could leave the allowed prefix
    try:
        return fsspec.core.url_to_fs(uri, **options)
    except ImportError as error:
        raise InvalidInput(
            f"{scheme}:// data needs an optional package on the server (pip install 'retain[s3]' for s3): {error}"
        ) from None
