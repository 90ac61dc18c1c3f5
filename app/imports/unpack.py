"""An import's weights from the bytes the user sent, laid out where ``plan_import`` reads them.

A ``.safetensors`` file is written as it came; an ``hf`` export arrives as a ``.zip`` of
``config.json``, ``model.safetensors`` and (optionally) ``preprocessor_config.json`` (an image
classifier) or the tokenizer's files (a text classifier), and only
those are extracted, flat, whatever folder the archive put them in. A pickle anywhere (a
``.pt``/``.pth``/``.bin`` name, pickle's protocol marker, a zip holding ``data.pkl``) is refused
with the conversion to run (415). Nothing here is ever unpickled or executed.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from app.errors import InvalidInput, PayloadTooLarge
from app.learning.sources import PICKLE_SUFFIXES, refuse_pickle

HF_FILES = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",  # a text classifier's fast tokenizer (app.learning.text_source)
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def refuse_pickled(filename: str, data: bytes) -> None:
    """415 for a pickle (by name, by pickle's protocol marker, or a zip holding one), before any other check."""
    name = Path(filename or "weights").name
    if name.lower().endswith(PICKLE_SUFFIXES) or data[:1] == b"\x80":
        refuse_pickle(name)
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if any(
                Path(m.filename).name == "data.pkl" or m.filename.lower().endswith(PICKLE_SUFFIXES)
                for m in archive.infolist()
            ):
                refuse_pickle(name)


def unpack_weights(directory: Path, source: str, filename: str, data: bytes, max_bytes: int) -> Path:
    """The path ``plan_import`` takes: the weights file, or the hf directory, inside ``directory``."""
    name = Path(filename or "weights").name
    if name.lower().endswith(PICKLE_SUFFIXES) or data[:1] == b"\x80":
        refuse_pickle(name)
    is_zip = zipfile.is_zipfile(io.BytesIO(data))
    if is_zip:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if any(
                Path(m.filename).name == "data.pkl" or m.filename.lower().endswith(PICKLE_SUFFIXES) for m in members
            ):
                refuse_pickle(name)
            if source != "hf":
                raise InvalidInput(f"{name} is a zip archive; send the weights as one .safetensors file")
            wanted = [m for m in members if Path(m.filename).name in HF_FILES]
            if sum(m.file_size for m in wanted) > max_bytes:
                raise PayloadTooLarge(f"the hf archive unpacks to more than {max_bytes:,} bytes (max_upload_bytes)")
            target = directory / "hf"
            target.mkdir()
            for member in wanted:
                (target / Path(member.filename).name).write_bytes(archive.read(member))
            return target
    if source == "hf":
        raise InvalidInput(
            "an hf import is a .zip of config.json, model.safetensors and preprocessor_config.json "
            "(or, for a text classifier, tokenizer.json)"
        )
    path = directory / "model.safetensors"
    path.write_bytes(data)
    return path
