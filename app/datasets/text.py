"""Text datasets: a ``text`` column and a ``label`` column, as CSV, JSON Lines or Parquet.

Texts are held and stored as one UTF-8 byte buffer plus N + 1 offsets (``TextSamples``), never
as Python objects: the stored artifact is two plain tensors (uint8 and int64) in the same
safetensors payload as numeric datasets, so nothing is unpickled and memory is what the
text weighs (a numpy unicode array would take 4 bytes per character of the longest text for
every sample). Limits apply as rows arrive: the sample limit, ``max_text_chars`` per text,
and the decoded-bytes limit on all texts together; an empty text or label is refused with its
line. Tokenizing is the worker's (the model's own tokenizer, ``app.learning.text``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator

import numpy as np

from app.errors import InvalidInput, PayloadTooLarge, UnsupportedFormat

TEXT = "text"
LABEL = "label"


class TextSamples:
    """N texts as one UTF-8 buffer and N + 1 offsets; indexes like a 1-d array (ints, slices, index arrays)."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data = np.ascontiguousarray(data, dtype=np.uint8)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        if len(self.offsets) == 0:
            self.offsets = np.zeros(1, dtype=np.int64)
        if self.offsets[0] != 0 or self.offsets[-1] != len(self.data) or (np.diff(self.offsets) < 0).any():
            raise ValueError("text offsets do not describe the text buffer")

    @classmethod
    def of(cls, texts: Iterable[str]) -> TextSamples:
        encoded = [text.encode("utf-8") for text in texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(item) for item in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def nbytes(self) -> int:
        return self.data.nbytes + self.offsets.nbytes

    def text(self, i: int) -> str:
        return bytes(self.data[self.offsets[i] : self.offsets[i + 1]]).decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        return (self.text(i) for i in range(len(self)))

    def tolist(self) -> list[str]:
        return list(self)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.text(int(index) % len(self) if index < 0 else int(index))
        chosen = np.arange(len(self))[index]
        return TextSamples.of(self.text(int(i)) for i in chosen)


def is_text_header(columns: list[str]) -> bool:
    return TEXT in columns


def looks_like_jsonl(filename: str, content: bytes) -> bool:
    return filename.endswith((".jsonl", ".ndjson")) or content.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def text_problem(text: str, max_chars: int) -> tuple[str | None, int]:
    """What is wrong with one text sent for prediction or as feedback, and the status it earns:
    (None, 200) when nothing. The same rules as a task's rows (`TextRows.add`)."""
    if not text.strip():
        return "is an empty text", 422
    if len(text) > max_chars:
        return f"has {len(text)} characters; the limit is {max_chars} (RETAIN_MAX_TEXT_CHARS)", 413
    return None, 200


class TextRows:
    """Rows gathered as they are read, refused at the first one over a limit."""

    def __init__(self, limits, max_chars: int, source: str):
        self.limits, self.max_chars, self.source = limits, max_chars, source
        self.texts: list[str] = []
        self.labels: list = []
        self.size = 0

    def add(self, text, label, where: str, *, has_label: bool = True) -> None:
        if not isinstance(text, str):
            raise InvalidInput(f"{self.source} {where}: 'text' must be a string, got {type(text).__name__}")
        if not text.strip():
            raise InvalidInput(f"{self.source} {where} has an empty text")
        if len(text) > self.max_chars:
            raise PayloadTooLarge(
                f"{self.source} {where} has a text of {len(text)} characters; the limit is "
                f"{self.max_chars} (RETAIN_MAX_TEXT_CHARS)"
            )
        if len(self.texts) >= self.limits.max_samples:
            raise PayloadTooLarge(f"{self.source} holds more than {self.limits.max_samples} samples (the limit)")
        self.size += len(text.encode("utf-8"))
        if self.size > self.limits.max_array_bytes:
            raise PayloadTooLarge(
                f"the texts of {self.source} come to more than {self.limits.max_array_bytes} bytes; the limit "
                f"is {self.limits.max_array_bytes} bytes decoded"
            )
        if not has_label:
            self.texts.append(text)
            return
        if isinstance(label, bool) or label is None or (isinstance(label, str) and not label.strip()):
            raise InvalidInput(f"{self.source} {where} has an empty or invalid label {label!r}")
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        if not isinstance(label, (int, str)):
            raise InvalidInput(f"{self.source} {where}: labels must be integers or strings, got {label!r}")
        self.texts.append(text)
        self.labels.append(label.strip() if isinstance(label, str) else label)

    def result(self) -> tuple[TextSamples, np.ndarray]:
        if not self.texts:
            raise InvalidInput(f"{self.source} has no rows")
        return TextSamples.of(self.texts), label_array(self.labels)


def label_array(labels: list) -> np.ndarray:
    """Integer labels (ints, or strings that all read as ints, as in a .csv) as int64, else strings."""
    if all(isinstance(label, int) for label in labels):
        return np.asarray(labels, dtype=np.int64)
    if all(isinstance(label, str) for label in labels) and all(_is_int(label) for label in labels):
        return np.asarray([int(label) for label in labels], dtype=np.int64)
    return np.asarray([str(label) for label in labels], dtype=str)


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def parse_text_csv(reader, header: list[str], limits, max_chars: int) -> tuple[TextSamples, np.ndarray]:
    """The rest of a .csv whose header has a ``text`` column (``reader`` is past the header)."""
    extra = [name for name in header if name not in (TEXT, LABEL)]
    if extra or header.count(TEXT) > 1:
        raise InvalidInput(
            f"a text .csv has exactly the columns 'text' and 'label'; this one has {header[:20]} "
            "(drop the other columns, or send numeric features without a 'text' column)"
        )
    text_column, label_column = header.index(TEXT), header.index(LABEL)
    rows = TextRows(limits, max_chars, "the .csv")
    for line_number, row in enumerate(reader, start=2):
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise InvalidInput(f"the .csv line {line_number} has {len(row)} fields; the header has {len(header)}")
        rows.add(row[text_column], row[label_column], f"line {line_number}")
    return rows.result()


def parse_jsonl(content: bytes, limits, max_chars: int) -> tuple[TextSamples, np.ndarray]:
    """JSON Lines: one ``{"text": ..., "label": ...}`` object per line, read one line at a time."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UnsupportedFormat(f"the JSON Lines file is not UTF-8 text: {error}") from None
    rows = TextRows(limits, max_chars, "the .jsonl")
    for line_number, line in enumerate(io.StringIO(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise InvalidInput(f"the .jsonl line {line_number} is not JSON: {error}") from None
        if not isinstance(record, dict) or TEXT not in record or LABEL not in record:
            keys = sorted(record)[:10] if isinstance(record, dict) else type(record).__name__
            raise InvalidInput(
                f'the .jsonl line {line_number} must be an object {{"text": ..., "label": ...}}; it has {keys}'
            )
        rows.add(record[TEXT], record[LABEL], f"line {line_number}")
    return rows.result()


def read_text_column(file, name: str, n: int, limits, max_chars: int) -> TextSamples:
    """A Parquet string column, in batches, every text checked as it comes."""
    import pyarrow as pa

    rows = TextRows(limits, max_chars, "the Parquet file")
    try:
        row = 0
        for batch in file.iter_batches(batch_size=256, columns=[name]):
            for value in batch.column(0).to_pylist():
                row += 1
                if value is None:
                    raise InvalidInput(f"row {row} of the Parquet column {name!r} has no text")
                rows.add(value, None, f"row {row}", has_label=False)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise InvalidInput(f"the Parquet column {name!r} cannot be read: {error}") from None
    if len(rows.texts) != n:
        raise InvalidInput(f"the Parquet column {name!r} has {len(rows.texts)} values for {n} rows")
    return TextSamples.of(rows.texts)


def is_csv_text_upload(content: bytes) -> bool:
    """Whether a .csv's header names a ``text`` column (read from the first line only)."""
    first = content[:65536].decode("utf-8-sig", errors="replace").splitlines()[:1]
    if not first:
        return False
    header = next(csv.reader(first), [])
    return is_text_header([cell.strip() for cell in header])
