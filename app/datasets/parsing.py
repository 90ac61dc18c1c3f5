"""Uploaded datasets: .npz, .csv, image-folder .zip or Parquet bytes -> validated arrays -> seeded
train/validation/test split. Image folders and Parquet are read in images.py and parquet.py.

Uploads are untrusted. An .npz is opened as the zip it is and every array's .npy header is
read before any data (dtype, shape, declared size), so pickled object arrays, oversize
arrays and zip bombs are refused without being loaded; arrays are then read with
``allow_pickle=False``. A .csv is parsed row by row with the standard library. Every
check here runs before the service stores anything, so a rejected upload changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import zipfile
from dataclasses import dataclass

import numpy as np

from app.datasets.images import is_image_folder_zip, parse_image_zip
from app.datasets.parquet import is_parquet, parse_parquet
from app.datasets.text import (
    TextSamples,
    is_text_header,
    label_array,
    looks_like_jsonl,
    parse_jsonl,
    parse_text_csv,
)
from app.errors import InvalidInput, PayloadTooLarge, UnsupportedFormat
from app.learning.text_source import TEXT_INPUT_SHAPE  # a text dataset's input_shape: one string per sample

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
NPY_MAGIC = b"\x93NUMPY"
PICKLE_EXTENSIONS = (".pkl", ".pickle", ".pt", ".pth", ".joblib")
ACCEPTED = (
    "an .npz (arrays x, y and optionally x_test, y_test), a .csv or Parquet file with a 'label' "
    'column (and numeric features or one \'text\' column), a .jsonl of {"text": ..., "label": ...} '
    "lines, or a .zip of image folders (class_name/image.png)"
)
DEFAULT_MAX_TEXT_CHARS = 100_000


@dataclass(frozen=True)
class Limits:
    """How much one upload may hold; the service fills these from settings."""

    max_bytes: int
    max_samples: int
    # Largest decompressed size of all arrays in an .npz: compression must not smuggle in
    # more than a raw upload of ``max_bytes`` could (with generous room for real compression).
    max_array_bytes: int
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS  # characters in one text sample


@dataclass(frozen=True)
class LabelledArrays:
    """Samples and their labels: ``x`` is N x *sample_shape (numeric) or N texts, ``y`` N labels (int64 or str)."""

    x: np.ndarray | TextSamples
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class ParsedUpload:
    format: str  # "npz" | "csv" | "images" | "parquet" | "jsonl"
    sha256: str  # of the uploaded bytes
    samples: LabelledArrays  # x, y (or the csv rows)
    test: LabelledArrays | None  # x_test, y_test when the upload brings its own test split

    @property
    def sample_shape(self) -> tuple:
        return sample_shape_of(self.samples.x)

    @property
    def labels(self) -> list:
        return sorted_labels(self.samples.y)


@dataclass(frozen=True)
class DatasetSplits:
    """A task's data after the seeded split: ``train`` to learn, ``validation`` for every choice
    the service makes (λ, the forgetting gate), ``test`` for the accuracy table only."""

    train: LabelledArrays
    validation: LabelledArrays
    test: LabelledArrays

    @property
    def sample_shape(self) -> tuple:
        return sample_shape_of(self.train.x)

    @property
    def labels(self) -> list:
        return sorted_labels(np.concatenate([self.train.y, self.validation.y, self.test.y]))


def sample_shape_of(x) -> tuple:
    """One sample's shape; ``TEXT_INPUT_SHAPE`` for texts."""
    return TEXT_INPUT_SHAPE if isinstance(x, TextSamples) else tuple(x.shape[1:])


def sorted_labels(y: np.ndarray) -> list:
    """Distinct labels as plain Python values (JSON-safe), sorted."""
    return [value.item() if isinstance(value, np.generic) else value for value in np.unique(y)]


# ---------------------------------------------------------------------------- parsing


def parse_upload(
    filename: str | None, content: bytes, limits: Limits, input_shape: tuple[int, ...] | None = None
) -> ParsedUpload:
    """Detect the format from the bytes (the file name only breaks ties) and parse it. ``input_shape``
    is the model's, when it has one: images are converted to its channels."""
    if len(content) > limits.max_bytes:
        raise PayloadTooLarge(f"the upload is {len(content)} bytes; the limit is {limits.max_bytes} bytes")
    if not content:
        raise InvalidInput("the uploaded file is empty")
    name = (filename or "").lower()
    digest = hashlib.sha256(content).hexdigest()
    if content.startswith(ZIP_MAGIC) and is_image_folder_zip(content):
        (x, y), test = parse_image_zip(content, limits, input_shape)
        test = _labelled(*test, "test images", "test labels") if test else None
        return ParsedUpload("images", digest, _labelled(x, y, "images", "labels"), test)
    if is_parquet(content):
        return ParsedUpload(
            "parquet", digest, _labelled(*parse_parquet(content, limits, input_shape), "features", "label"), None
        )
    if looks_like_jsonl(name, content) and not content.startswith(ZIP_MAGIC):
        return ParsedUpload("jsonl", digest, _labelled(*parse_jsonl(content, limits, limits.max_text_chars)), None)
    if content.startswith(ZIP_MAGIC):
        samples, test = _parse_npz(content, limits)
        return ParsedUpload("npz", digest, samples, test)
    if content.startswith(NPY_MAGIC):
        raise UnsupportedFormat(f"a single .npy array holds no labels; send {ACCEPTED}")
    if content[:1] == b"\x80" or name.endswith(PICKLE_EXTENSIONS):
        raise UnsupportedFormat(f"pickled files are never loaded (they can run code); send {ACCEPTED}")
    if name.endswith((".npz", ".zip")):
        raise UnsupportedFormat(f"{filename!r} is named {name[-4:]} but is not a zip archive; send {ACCEPTED}")
    if name.endswith(".parquet"):
        raise UnsupportedFormat(
            f"{filename!r} is named .parquet but is not a whole Parquet file (it needs the PAR1 "
            f"marks at both ends); send {ACCEPTED}"
        )
    if name.endswith(".csv") or not name.rpartition(".")[1] or name.endswith(".txt"):
        samples = _parse_csv(content, limits)
        return ParsedUpload("csv", digest, samples, None)
    raise UnsupportedFormat(f"unknown format for {filename!r}; send {ACCEPTED}")


def _parse_npz(content: bytes, limits: Limits) -> tuple[LabelledArrays, LabelledArrays | None]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile as error:
        raise InvalidInput(f"the .npz archive is damaged: {error}") from None
    with archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        missing = [key for key in ("x", "y") if key not in members]
        if missing:
            raise InvalidInput(
                f"the .npz has no array {' or '.join(repr(k) for k in missing)} "
                f"(it has {sorted(members) or 'nothing'}); it needs x and y"
            )
        if ("x_test" in members) != ("y_test" in members):
            raise InvalidInput("the .npz has only one of x_test and y_test; give both or neither")
        keys = [key for key in ("x", "y", "x_test", "y_test") if key in members]
        declared_bytes = 0
        for key in keys:
            shape, dtype = _npy_header(archive, members[key], key)
            if shape and shape[0] > limits.max_samples:
                raise PayloadTooLarge(f"array {key!r} holds {shape[0]} samples; the limit is {limits.max_samples}")
            declared_bytes += math.prod(shape) * dtype.itemsize
        if declared_bytes > limits.max_array_bytes:
            raise PayloadTooLarge(
                f"the arrays decompress to {declared_bytes} bytes; the limit is {limits.max_array_bytes} bytes"
            )
        arrays = {key: _read_array(archive, members[key], key) for key in keys}
    samples = _labelled(arrays["x"], arrays["y"], "x", "y")
    test = _labelled(arrays["x_test"], arrays["y_test"], "x_test", "y_test") if "x_test" in arrays else None
    total = len(samples) + (len(test) if test is not None else 0)
    if total > limits.max_samples:
        raise PayloadTooLarge(f"the upload holds {total} samples; the limit is {limits.max_samples}")
    return samples, test


def _npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from an .npy member's header, without reading its data."""
    try:
        with archive.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(stream, max_header_size=10_000)
    except ValueError as error:
        if "pickle" in str(error).lower() or "object" in str(error).lower():
            raise UnsupportedFormat(_pickled_message(key)) from None
        raise InvalidInput(f"array {key!r} in the .npz is not a valid .npy array: {error}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise InvalidInput(f"array {key!r} in the .npz cannot be read: {error}") from None
    if dtype.hasobject:
        raise UnsupportedFormat(_pickled_message(key))
    return tuple(shape), dtype


def _read_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str) -> np.ndarray:
    try:
        with archive.open(info) as stream:
            return np.lib.format.read_array(stream, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise UnsupportedFormat(_pickled_message(key)) from None
        raise InvalidInput(f"array {key!r} in the .npz cannot be read: {error}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise InvalidInput(f"array {key!r} in the .npz cannot be read: {error}") from None


def _pickled_message(key: str) -> str:
    return (
        f"array {key!r} holds Python objects, which only load by unpickling; pickled data is never "
        "loaded. Save numeric x and integer or string y (e.g. np.savez with plain arrays)"
    )


def _parse_csv(content: bytes, limits: Limits) -> LabelledArrays:
    try:
        return _read_csv(content, limits)
    except csv.Error as error:  # e.g. a field over csv.field_size_limit() (131,072 characters)
        raise InvalidInput(
            f"the .csv cannot be read: {error} (fields are at most {csv.field_size_limit()} characters)"
        ) from None


def _read_csv(content: bytes, limits: Limits) -> LabelledArrays:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnsupportedFormat(f"the file is neither a zip (.npz) nor UTF-8 text (.csv); send {ACCEPTED}") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or not any(cell.strip() for cell in header):
        raise InvalidInput("the .csv is empty: it needs a header row with a 'label' column and feature columns")
    header = [cell.strip() for cell in header]
    if "label" not in header:
        raise InvalidInput(f"the .csv header has no 'label' column (columns: {header[:20]})")
    if header.count("label") > 1:
        raise InvalidInput("the .csv header has more than one 'label' column")
    if is_text_header(header):
        return _labelled(*parse_text_csv(reader, header, limits, limits.max_text_chars))
    label_column = header.index("label")
    feature_columns = [i for i in range(len(header)) if i != label_column]
    if not feature_columns:
        raise InvalidInput("the .csv has a 'label' column but no feature columns")
    features, labels = [], []
    for line_number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue  # blank lines carry nothing
        if len(row) != len(header):
            raise InvalidInput(f"the .csv line {line_number} has {len(row)} fields; the header has {len(header)}")
        if len(labels) >= limits.max_samples:
            raise PayloadTooLarge(f"the .csv holds more than {limits.max_samples} samples (the limit)")
        try:
            features.append([float(row[i]) for i in feature_columns])
        except ValueError:
            bad = next(i for i in feature_columns if not _is_float(row[i]))
            raise InvalidInput(
                f"the .csv line {line_number}, column {header[bad]!r}: {row[bad]!r} is not a number"
            ) from None
        label = row[label_column].strip()
        if not label:
            raise InvalidInput(f"the .csv line {line_number} has an empty label")
        labels.append(label)
    x = np.asarray(features, dtype=np.float64).reshape(len(features), len(feature_columns))
    y = label_array(labels)  # integer labels as int64, else strings
    return _labelled(x.astype(np.float32) if np.isfinite(x).all() else x, y, "features", "label")


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ------------------------------------------------------------------------- validation


def _labelled(
    x: np.ndarray | TextSamples, y: np.ndarray, x_name: str = "text", y_name: str = "label"
) -> LabelledArrays:
    """Check one (x, y) pair on its own: numeric finite samples of a usable shape (or texts), one label each."""
    if isinstance(x, TextSamples):  # every text was checked as it was read (app.datasets.text)
        y = _label_array(y, y_name)
        if len(x) != len(y):
            raise InvalidInput(f"{x_name} has {len(x)} samples but {y_name} has {len(y)} labels")
        return LabelledArrays(x, y)
    if x.dtype.kind not in "biuf":
        raise InvalidInput(f"{x_name} must hold numbers; it has dtype {x.dtype}")
    if x.ndim < 2:
        raise InvalidInput(
            f"{x_name} has shape {x.shape}; it needs one row per sample: N x features, N x H x W or N x C x H x W"
        )
    if x.ndim == 3:  # N x H x W grey images: one channel
        x = x[:, None, :, :]
    if x.ndim > 4:
        raise InvalidInput(f"{x_name} has shape {x.shape}; samples may be flat (N x D) or images (N x C x H x W)")
    if 0 in x.shape[1:]:
        raise InvalidInput(f"{x_name} has shape {x.shape}; a sample cannot be empty")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
        raise InvalidInput(f"{x_name} contains NaN or infinite values (in {bad} of {len(x)} samples)")
    if x.dtype.kind == "b":
        x = x.astype(np.uint8)
    y = _label_array(y, y_name)
    if len(x) != len(y):
        raise InvalidInput(f"{x_name} has {len(x)} samples but {y_name} has {len(y)} labels")
    if len(x) == 0:
        raise InvalidInput(f"the dataset is empty: {x_name} has 0 samples")
    return LabelledArrays(np.ascontiguousarray(x), y)


def _label_array(y: np.ndarray, name: str) -> np.ndarray:
    """Labels as int64 or str: integral floats are accepted, anything else is refused."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise InvalidInput(f"{name} has shape {y.shape}; it needs one class label per sample (shape N)")
    if y.dtype.kind in "iub":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise InvalidInput(f"{name} contains NaN or infinite values; labels must be class ids")
        if not (y == np.round(y)).all():
            example = y[y != np.round(y)][0]
            raise InvalidInput(
                f"{name} holds non-integer values such as {example}; labels must be class ids "
                "(integers or strings), not regression targets"
            )
        return y.astype(np.int64)
    if y.dtype.kind == "U":
        return y
    if y.dtype.kind == "S":
        try:
            return y.astype(str)
        except UnicodeDecodeError:
            raise InvalidInput(f"{name} holds byte strings that are not valid text") from None
    raise InvalidInput(f"{name} must hold integer or string class labels; it has dtype {y.dtype}")


def check_compatible(upload: ParsedUpload, input_shape: tuple[int, ...] | None = None) -> None:
    """A test split brought with the upload must match its training samples."""
    if upload.test is None:
        return
    if sample_shape_of(upload.test.x) != sample_shape_of(upload.samples.x):
        raise InvalidInput(
            f"x_test samples have shape {sample_shape_of(upload.test.x)} but x samples have "
            f"{sample_shape_of(upload.samples.x)}"
        )
    if (upload.test.y.dtype.kind == "U") != (upload.samples.y.dtype.kind == "U"):
        raise InvalidInput("y and y_test must both hold integers or both strings")
    unseen = np.setdiff1d(upload.test.y, upload.samples.y)
    if len(unseen):
        raise InvalidInput(
            f"y_test has labels that y never shows, so they cannot be learnt: {sorted_labels(unseen)[:10]}"
        )


# ----------------------------------------------------------------------------- split


def split_dataset(
    upload: ParsedUpload, *, test_fraction: float, validation_fraction: float, seed: int
) -> DatasetSplits:
    """Seeded, stratified split into train / validation / test.

    With its own x_test the upload keeps it as test and only validation is drawn from x.
    Stratified per class so rare classes stay in train; every split must end up non-empty.
    """
    check_compatible(upload)
    samples = upload.samples
    rng = np.random.default_rng(seed)
    fractions = (
        {"validation": validation_fraction}
        if upload.test is not None
        else {"test": test_fraction, "validation": validation_fraction}
    )
    parts = {"train": [], "validation": [], "test": []}
    for label in np.unique(samples.y):
        indices = rng.permutation(np.flatnonzero(samples.y == label))
        start = 0
        for part, fraction in fractions.items():
            # round, but always leave at least one sample of the class for training
            count = min(int(round(len(indices) * fraction)), len(indices) - start - 1)
            parts[part].append(indices[start : start + max(count, 0)])
            start += max(count, 0)
        parts["train"].append(indices[start:])
    chosen = {
        part: np.sort(np.concatenate(chunks)) if chunks else np.array([], dtype=np.int64)
        for part, chunks in parts.items()
    }
    splits = {part: LabelledArrays(samples.x[index], samples.y[index]) for part, index in chosen.items()}
    if upload.test is not None:
        splits["test"] = upload.test
    empty = [part for part, data in splits.items() if len(data) == 0]
    if empty:
        asked = ", ".join(f"{part}_fraction={value}" for part, value in fractions.items())
        raise InvalidInput(
            f"{len(samples)} samples are too few to split into train, validation and test "
            f"({asked}): the {' and '.join(empty)} split would be empty"
        )
    return DatasetSplits(**splits)


# ------------------------------------------------------------- the service's view


SPLITS = ("train", "validation", "test")


@dataclass
class Split:
    """One stored split: samples as uploaded, labels as indices into the dataset's ``labels``."""

    x: np.ndarray | TextSamples
    label_index: np.ndarray  # int64, N

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class ParsedDataset:
    """What POST /tasks stores: the checked splits with one label vocabulary."""

    format: str
    sha256: str
    input_shape: tuple  # ints, or TEXT_INPUT_SHAPE
    labels: list
    splits: dict[str, Split]

    @property
    def n_train(self) -> int:
        return len(self.splits["train"])

    @property
    def n_validation(self) -> int:
        return len(self.splits["validation"])

    @property
    def n_test(self) -> int:
        return len(self.splits["test"])

    def labels_of(self, split: str) -> list:
        return [self.labels[i] for i in self.splits[split].label_index.tolist()]


def parse_dataset(
    filename: str | None,
    data: bytes,
    *,
    max_bytes: int,
    max_samples: int,
    test_fraction: float,
    validation_fraction: float,
    seed: int,
    input_shape: tuple[int, ...] | None = None,
    max_decoded_bytes: int | None = None,
    max_abs_value: float = math.inf,
    max_labels: int | None = None,
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
) -> ParsedDataset:
    """Parse, check and split an upload; every failure is a domain error naming the problem.

    ``max_decoded_bytes`` caps what the arrays may decode to (default 4 x max_bytes, at least 1 MiB);
    ``max_abs_value`` the magnitude of any feature (values near 1e300 overflow float32 training);
    ``max_labels`` the distinct labels, checked before the split (whose cost grows with them)."""
    for name, value in (("test_fraction", test_fraction), ("validation_fraction", validation_fraction)):
        if not (math.isfinite(value) and 0.0 < value < 1.0):
            raise InvalidInput(f"{name} must be between 0 and 1 (exclusive), got {value}")
    upload = parse_upload(
        filename,
        data,
        Limits(
            max_bytes=max_bytes,
            max_samples=max_samples,
            max_array_bytes=max_decoded_bytes or max(4 * max_bytes, 1 << 20),
            max_text_chars=max_text_chars,
        ),
        input_shape,
    )
    for part, name in ((upload.samples, "x"), (upload.test, "x_test")):
        if part is None or isinstance(part.x, TextSamples):
            continue
        peak = max(abs(float(part.x.max())), abs(float(part.x.min())))
        if peak > max_abs_value:
            raise InvalidInput(
                f"{name} holds values as large as {peak:.3g}; the limit is "
                f"{max_abs_value:g} in absolute value (max_abs_value): scale the features"
            )
    if max_labels is not None:
        distinct = len(np.unique(np.concatenate([upload.samples.y] + ([upload.test.y] if upload.test else []))))
        if distinct > max_labels:
            raise InvalidInput(
                f"the upload has {distinct} distinct labels; the limit is {max_labels} (max_labels_per_task)"
            )
    splits = split_dataset(upload, test_fraction=test_fraction, validation_fraction=validation_fraction, seed=seed)
    labels = splits.labels
    index = {label: i for i, label in enumerate(labels)}

    def stored(part: LabelledArrays) -> Split:
        y = [value.item() if isinstance(value, np.generic) else value for value in part.y]
        x = part.x if isinstance(part.x, TextSamples) else np.ascontiguousarray(part.x)
        return Split(x, np.asarray([index[v] for v in y], dtype=np.int64))

    return ParsedDataset(
        format=upload.format,
        sha256=upload.sha256,
        input_shape=splits.sample_shape,
        labels=labels,
        splits={name: stored(getattr(splits, name)) for name in SPLITS},
    )
