"""Client side of `retain teach`: what the user names becomes a POST /tasks body, with progress.

    a file     sent as it is (.npz, .csv, .parquet, a .zip of image folders)
    a folder   zipped on the fly into a temporary file (image folders in the ImageFolder
               layout: class_name/image.png, optionally under train/ and test/), deleted after
    a URI      ``s3://…``, ``http(s)://…`` or ``file:///abs/path`` (a path on the *server*, under its
               RETAIN_DATA_ROOTS) goes as the ``uri`` form field; the server's worker reads it

Uploads report progress through ``progress(sent, total)`` as httpx reads the body, so a bar
moves with the bytes on the wire (the last call has ``sent == total``). This module imports
nothing from the server: the CLI and any other client use it as is.

    with teach_body(args.file, fields, progress=bar.update) as body:
        client.request("POST", "/tasks", **body, timeout=600)
"""

from __future__ import annotations

import io
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, BinaryIO

REFERENCE_PREFIXES = ("s3://", "http://", "https://", "file://")
# Already compressed: stored as they are (deflating them again costs time and saves nothing).
COMPRESSED_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".zip", ".npz", ".parquet", ".gz")

Progress = Callable[[int, int], None]


class UploadError(ValueError):
    """What the user named cannot be sent (missing, empty folder, ...); the message says why."""


def is_reference(source: str | os.PathLike) -> bool:
    """A URI the server reads itself; local paths (even ones that look relative) are uploaded."""
    return isinstance(source, str) and source.startswith(REFERENCE_PREFIXES)


def zip_folder(folder: str | os.PathLike, into: BinaryIO) -> int:
    """Write ``folder``'s files into a zip on ``into`` (names relative to the folder, '/'-separated,
    sorted; hidden files and folders skipped); returns the number of files."""
    folder = Path(folder)
    count = 0
    with zipfile.ZipFile(into, "w") as archive:
        for directory, subdirectories, files in os.walk(folder):  # symlinked folders are not followed: no loops
            subdirectories[:] = sorted(name for name in subdirectories if not name.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = Path(directory) / name
                compression = zipfile.ZIP_STORED if path.suffix.lower() in COMPRESSED_SUFFIXES else zipfile.ZIP_DEFLATED
                archive.write(path, path.relative_to(folder).as_posix(), compress_type=compression)
                count += 1
    return count


@contextmanager
def zipped_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """A temporary zip of ``folder``, removed when the block ends."""
    handle, name = tempfile.mkstemp(prefix=f"{Path(folder).name}-", suffix=".zip")
    try:
        with os.fdopen(handle, "wb") as target:
            count = zip_folder(folder, target)
        if count == 0:
            raise UploadError(f"{folder} holds no files to send (hidden files are skipped)")
        yield Path(name)
    finally:
        os.unlink(name)


class ProgressReader(io.RawIOBase):
    """A read-only binary file that reports ``progress(position, total)`` after every read.

    httpx reads a multipart file field in chunks, so the position is the number of bytes sent;
    a rewind (httpx seeks to 0 before it streams, and again on a retry) starts the count over.
    """

    def __init__(self, raw: BinaryIO, progress: Progress | None = None, total: int | None = None):
        super().__init__()
        self.raw = raw
        self.progress = progress
        self.total = total if total is not None else os.fstat(raw.fileno()).st_size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.raw.fileno()

    def tell(self) -> int:
        return self.raw.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def readinto(self, buffer) -> int:
        count = self.raw.readinto(buffer)
        if count and self.progress is not None:
            self.progress(self.raw.tell(), self.total)
        return count or 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if data and self.progress is not None:
            self.progress(self.raw.tell(), self.total)
        return data


@contextmanager
def teach_body(
    source: str | os.PathLike, fields: Mapping[str, Any], progress: Progress | None = None
) -> Iterator[dict[str, Any]]:
    """httpx keyword arguments for POST /tasks: ``data`` (the form, None values dropped) and, for a
    file or a folder, ``files``. A folder is zipped first; the zip is removed when the block ends."""
    form = {key: str(value) for key, value in fields.items() if value is not None}
    if is_reference(source):
        yield {"data": {**form, "uri": str(source)}}
        return
    path = Path(source)
    if path.is_dir():
        with zipped_folder(path) as archive, archive.open("rb") as raw:
            yield {"data": form, "files": {"file": (f"{path.resolve().name}.zip", ProgressReader(raw, progress))}}
        return
    if not path.is_file():
        raise UploadError(
            f"{path} is neither a file nor a folder (for data the server reads itself, give "
            "s3://bucket/key or file:///path/under/its/data/roots)"
        )
    with path.open("rb") as raw:
        yield {"data": form, "files": {"file": (path.name, ProgressReader(raw, progress))}}


@contextmanager
def import_body(
    weights: str | os.PathLike,
    fields: Mapping[str, Any],
    base_data: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> Iterator[dict[str, Any]]:
    """httpx keyword arguments for POST /models: the form, the weights (a .safetensors file, or a
    folder such as save_pretrained writes, zipped first) and optionally the base data (a file, or a
    folder of image folders, zipped first)."""
    form = {key: str(value) for key, value in fields.items() if value is not None}
    with ExitStack() as stack:
        files = {}
        for field, source in (("file", weights), ("base_data", base_data)):
            if source is None:
                continue
            path = Path(source)
            if path.is_dir():
                archive = stack.enter_context(zipped_folder(path))
                raw = stack.enter_context(archive.open("rb"))
                files[field] = (
                    f"{path.resolve().name}.zip",
                    ProgressReader(raw, progress if field == "file" else None),
                )
            elif path.is_file():
                raw = stack.enter_context(path.open("rb"))
                files[field] = (path.name, ProgressReader(raw, progress if field == "file" else None))
            else:
                raise UploadError(f"{path} is neither a file nor a folder")
        yield {"data": form, "files": files}
