"""Parquet datasets (pyarrow): a ``label`` column plus numeric feature columns, one string ``text``
column (app/datasets/text.py), or one image column of encoded bytes, as Hugging Face ``datasets`` stores images
(a struct ``{"bytes": binary, "path": string}``; a plain binary column works too).

Everything the footer tells is checked before any data is read: the row count against
``max_samples``, the column types (numbers, or one image column), and the uncompressed size
of every column chunk against the decoded-size limit, so compression cannot smuggle in more
than the limit. Numeric columns are then read one at a time into one preallocated array (a
fixed-width column holds at most rows x 8 bytes). Variable-width columns (images, string
labels) are read in batches of ``BATCH_ROWS`` rows, their decoded bytes counted as they
come: dictionary encoding can repeat one large value on every row, which the footer's
sizes do not show.

Features become float32 (as a .csv), except when every feature column is uint8 (pixels),
which stays uint8 so the model scales it by 1/255 as it does image uploads. Images decode
with the same decoder as image folders (app/datasets/images.py: formats, bomb limit, mode
and size rules). Image ``path`` values are never opened: rows must carry their bytes.
A label column of integers with Hugging Face ``ClassLabel`` names in the schema metadata
is given those names as labels.
"""

from __future__ import annotations

import json

import numpy as np

from app.datasets.images import ImageDecoder, check_decoded_size
from app.datasets.text import TEXT, read_text_column
from app.errors import InvalidInput, PayloadTooLarge

PARQUET_MAGIC = b"PAR1"
LABEL = "label"
BATCH_ROWS = 64


def is_parquet(content: bytes) -> bool:
    return content[:4] == PARQUET_MAGIC and content[-4:] == PARQUET_MAGIC and len(content) >= 12


def parse_parquet(content: bytes, limits, input_shape: tuple[int, ...] | None = None):
    """Parquet bytes -> ``(x, y)``: x N x D (numeric columns) or N x C x H x W uint8 (an image column)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(pa.BufferReader(content))
        schema = file.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as error:
        raise InvalidInput(f"the Parquet file is damaged: {error}") from None
    names = schema.names
    if LABEL not in names:
        raise InvalidInput(f"the Parquet file has no {LABEL!r} column (columns: {names[:20]})")
    if names.count(LABEL) > 1:
        raise InvalidInput(f"the Parquet file has more than one {LABEL!r} column")
    n = file.metadata.num_rows
    if n == 0:
        raise InvalidInput("the Parquet file has no rows")
    if n > limits.max_samples:
        raise PayloadTooLarge(f"the Parquet file holds {n} rows; the limit is {limits.max_samples} samples")
    check_uncompressed_size(file, limits)

    features = [name for name in names if name != LABEL]
    if not features:
        raise InvalidInput(f"the Parquet file has a {LABEL!r} column but no feature columns")
    if TEXT in features and is_string_type(schema.field(TEXT).type):
        if len(features) > 1:
            raise InvalidInput(
                f"a text Parquet file has exactly the columns {TEXT!r} and {LABEL!r}; this one also has "
                f"{[name for name in features if name != TEXT][:10]}"
            )
        return read_text_column(file, TEXT, n, limits, limits.max_text_chars), read_labels(file, schema, limits)
    images = [name for name in features if is_image_type(schema.field(name).type)]
    if images:
        if len(features) > 1:
            raise InvalidInput(
                f"the Parquet file has the image column {images[0]!r} and other feature columns "
                f"{[name for name in features if name != images[0]][:10]}; send the image column "
                f"and {LABEL!r} only"
            )
        x = read_image_column(file, images[0], n, limits, input_shape)
    else:
        x = read_numeric_columns(file, schema, features, n, limits)
    return x, read_labels(file, schema, limits)


def check_uncompressed_size(file, limits) -> None:
    metadata = file.metadata
    size = sum(
        metadata.row_group(g).column(c).total_uncompressed_size
        for g in range(metadata.num_row_groups)
        for c in range(metadata.num_columns)
    )
    if size > limits.max_array_bytes:
        raise PayloadTooLarge(
            f"the Parquet columns decompress to {size} bytes; the limit is {limits.max_array_bytes} bytes"
        )


def is_string_type(type_) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    return pa.types.is_string(type_) or pa.types.is_large_string(type_)


def is_image_type(type_) -> bool:
    import pyarrow as pa

    if pa.types.is_struct(type_):
        index = type_.get_field_index("bytes")
        return index >= 0 and _is_binary(type_.field(index).type)
    return _is_binary(type_)


def _is_binary(type_) -> bool:
    import pyarrow as pa

    return pa.types.is_binary(type_) or pa.types.is_large_binary(type_)


def _is_number(type_) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(type_) or pa.types.is_floating(type_) or pa.types.is_boolean(type_)


def read_column(file, name: str):
    """A fixed-width column, whole."""
    import pyarrow as pa

    try:
        return file.read(columns=[name]).column(0)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise InvalidInput(f"the Parquet column {name!r} cannot be read: {error}") from None


def read_variable_column(file, name: str, budget: int):
    """A variable-width column in batches, refused as soon as its decoded bytes pass ``budget``."""
    import pyarrow as pa

    chunks, size = [], 0
    try:
        for batch in file.iter_batches(batch_size=BATCH_ROWS, columns=[name]):
            size += batch.nbytes
            if size > budget:
                raise PayloadTooLarge(
                    f"the Parquet column {name!r} decodes to more than {budget} bytes; the limit is {budget} bytes"
                )
            chunks.append(batch.column(0))
        return pa.chunked_array(chunks, type=file.schema_arrow.field(name).type)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise InvalidInput(f"the Parquet column {name!r} cannot be read: {error}") from None


def read_numeric_columns(file, schema, features: list[str], n: int, limits) -> np.ndarray:
    for name in features:
        type_ = schema.field(name).type
        if not _is_number(type_):
            raise InvalidInput(
                f"the Parquet column {name!r} holds {type_} values; feature columns must be numbers "
                f"(integers, floats, booleans), or the file must have one image column and {LABEL!r}"
            )
    pixels = all(str(schema.field(name).type) == "uint8" for name in features)
    dtype = np.uint8 if pixels else np.float32
    size = n * len(features) * np.dtype(dtype).itemsize
    if size > limits.max_array_bytes:
        raise PayloadTooLarge(
            f"{n} rows of {len(features)} features take {size} bytes; the limit is {limits.max_array_bytes} bytes"
        )
    x = np.empty((n, len(features)), dtype=dtype)
    for j, name in enumerate(features):  # one column in memory at a time, besides x
        column = read_column(file, name)
        if column.null_count:
            raise InvalidInput(
                f"the Parquet column {name!r} has {column.null_count} missing values; every feature needs a value"
            )
        values = column.to_numpy()
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise InvalidInput(f"the Parquet column {name!r} contains NaN or infinite values")
        x[:, j] = values
    return x


def read_image_column(file, name: str, n: int, limits, input_shape) -> np.ndarray:
    import pyarrow as pa

    column = read_variable_column(file, name, limits.max_array_bytes).combine_chunks()
    if pa.types.is_struct(column.type):
        paths = column.field("path") if column.type.get_field_index("path") >= 0 else None
        data = column.field("bytes")
    else:
        paths, data = None, column
    decoder = ImageDecoder(input_shape)
    x = None
    for i in range(n):
        encoded = data[i].as_py()
        where = f"row {i} of column {name!r}"
        if not encoded:
            path = paths[i].as_py() if paths is not None else None
            raise InvalidInput(
                f"{where} has no image bytes"
                + (
                    f" (only the path {path!r}, which is never opened: "
                    "embed the bytes, e.g. datasets' embed_external_files)"
                    if path
                    else ""
                )
            )
        pixels = decoder.decode(encoded, where)
        if x is None:
            check_decoded_size(n, pixels.shape, limits)
            x = np.empty((n, *pixels.shape), dtype=np.uint8)
        x[i] = pixels
    return x


def read_labels(file, schema, limits) -> np.ndarray:
    import pyarrow as pa

    column = read_variable_column(file, LABEL, limits.max_array_bytes)
    if column.null_count:
        raise InvalidInput(f"the Parquet column {LABEL!r} has {column.null_count} missing labels")
    if pa.types.is_dictionary(column.type):  # pandas categoricals
        column = column.cast(column.type.value_type)
    type_ = column.type
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return np.asarray(column.to_pylist(), dtype=str)
    if not _is_number(type_):
        raise InvalidInput(f"the Parquet column {LABEL!r} holds {type_} values; labels must be integers or strings")
    y = column.to_numpy()
    names = class_label_names(schema)
    if names is not None and y.dtype.kind in "iu" and len(y) and y.min() >= 0 and y.max() < len(names):
        return np.asarray(names, dtype=str)[y]
    return y


def class_label_names(schema) -> list[str] | None:
    """The names of a Hugging Face ``ClassLabel`` label column, from the schema metadata, if any."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if not raw:
        return None
    try:
        feature = json.loads(raw)["info"]["features"][LABEL]
    except (ValueError, KeyError, TypeError):
        return None
    names = feature.get("names") if isinstance(feature, dict) and feature.get("_type") == "ClassLabel" else None
    if isinstance(names, list) and names and all(isinstance(name, str) for name in names):
        return names
    return None
