"""The prediction log as serving writes it: rows buffered in memory, written in batches off the event loop.

A prediction request never runs SQL for the log. When its model's policy logs, the request draws
which samples to log (``log_rate``), gives each a ``prediction_id`` (`new_prediction_id`: 128 bits,
unique without asking the database) and appends one tuple for the whole request to an in-memory
buffer: its ids, its samples tensor as it is (turned into bytes by the writer), its labels and
probabilities as tuples. Two objects the garbage collector tracks per request (the tuple and the
tensor), where an entry per sample holding prediction objects would be several per sample: work for
every collection, run by whichever thread allocates (the event loop's, most often).

A background thread writes the buffer every ``feedback_flush_interval`` seconds in one transaction:
the rows as plain tuples in one executemany of the driver (SQLAlchemy's per-row parameter handling
cost more CPU than the database's own work, and the writer holds the GIL the event loop needs while
it runs Python). It then drops each model's oldest samples past ``log_max_samples`` (labelled samples
not yet learnt from are never dropped: they are the loop's training buffer); the rows a model's log
holds are counted once per ``feedback_policy_interval`` and kept up to date from what this process
writes, so a flush runs no count. With no policy for the model the request pays one dict lookup.
The app's shutdown writes whatever is still buffered (`close`).

Inputs are stored as their raw float32 bytes behind a one-byte tag (``RAW``): compressing each row
(zlib, as rows written before did, still read) cost the writer more CPU than the rest of the row's
write together, and the log's size is bounded by ``log_max_samples`` anyway. A text model's inputs
are its texts as UTF-8 behind the tag ``TEXT`` (same column: no migration); each was held to
``max_text_chars`` by /predict, and the texts buffered are bounded by ``MAX_BUFFERED_TEXT_CHARS`` as
the rows are by ``MAX_BUFFERED``.

Feedback for a prediction still in the buffer flushes it first (`flush`), so an id a caller was
given is always found by the replica that gave it; another replica finds it after at most one
flush interval. The policies (which models log, at what rate) are read again from the database
every ``feedback_policy_interval`` seconds by the same thread, so a policy set through one replica
reaches the others.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
from sqlalchemy import Engine, Table, delete, func, insert, select
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from app.db.tables import FeedbackPolicy, LoggedSample, Model, utcnow

log = logging.getLogger(__name__)

MAX_BUFFERED = 200_000  # rows held while the database cannot be written; past it, predictions go unlogged
LITTLE_F4 = np.dtype("<f4")
MAX_BUFFERED_TEXT_CHARS = 50_000_000  # characters of text held unwritten (at most 4 bytes each in UTF-8)
RAW = b"\x00"  # the tag of inputs stored as raw little-endian float32 (a zlib stream starts with 0x78)
TEXT = b"\x01"  # the tag of a text model's input stored as UTF-8


@dataclass(frozen=True)
class LogPolicy:
    """What serving needs of a model's feedback policy."""

    model_id: int
    log_rate: float
    log_max_samples: int


def new_prediction_id() -> str:
    """32 hex digits: the time in milliseconds (48 bits), then 80 random bits. Unique and unguessable
    without asking the database, and in time order, so the log's unique index grows at its end: with
    purely random ids, each insert lands on a random page of an index that outgrows the page cache,
    and a row's write grows costlier as the log grows (docs/feedback-loop.md, what logging costs)."""
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


def pack_inputs(sample: np.ndarray) -> bytes:
    """A sample as stored: the ``RAW`` tag, then its values as little-endian float32 in C order."""
    return RAW + np.ascontiguousarray(sample, dtype=LITTLE_F4).tobytes()


def pack_text(text: str) -> bytes:
    """A text as stored: the ``TEXT`` tag, then its UTF-8 bytes."""
    return TEXT + text.encode("utf-8")


def is_text(data: bytes) -> bool:
    return data[:1] == TEXT


def unpack_text(data: bytes) -> str:
    if data[:1] != TEXT:
        raise ValueError("the logged inputs are numbers, not a text")
    return data[1:].decode("utf-8")


def unpack_inputs(data: bytes, input_shape) -> np.ndarray:
    """The stored sample in ``input_shape``: raw (``RAW``), or zlib-compressed float32 (older rows)."""
    if data[:1] == RAW:
        return np.frombuffer(data, dtype=LITTLE_F4, offset=1).reshape(tuple(input_shape))
    return np.frombuffer(zlib.decompress(data), dtype=np.float32).reshape(tuple(input_shape))


def read_policies(session: Session) -> dict[str, LogPolicy]:
    rows = session.execute(select(Model.name, FeedbackPolicy.model_id, FeedbackPolicy.policy).join(Model)).all()
    return {
        name: LogPolicy(model_id, log_rate(policy), int(policy.get("log_max_samples", 1)))
        for name, model_id, policy in rows
        if log_rate(policy) > 0
    }


def log_rate(policy: dict) -> float:
    """The share of predictions a stored feedback policy logs (0: none)."""
    return float(policy.get("log_rate", 0.0))


COLUMNS = ("prediction_id", "model_id", "model_version_id", "inputs", "predicted", "probability", "created_at")


class RowInsert:
    """The log's INSERT as the engine's driver takes it (``sql`` and `parameters`), with the two values
    that need converting converted as SQLAlchemy's column types would: a label to JSON (once per
    distinct label and flush), the time (once per flush)."""

    def __init__(self, dialect: Dialect):
        table = cast(Table, LoggedSample.__table__)
        columns = table.c
        compiled = insert(table).compile(dialect=dialect, column_keys=list(COLUMNS))
        self.sql = compiled.string  # with the casts the dialect puts on typed parameters (JSON on Postgres)
        names = list(compiled.positiontup or ()) if compiled.positional else None
        if names is not None and sorted(names) != sorted(COLUMNS):
            raise RuntimeError(f"the log's INSERT has the parameters {names}; expected {COLUMNS}")
        self.order = None if names is None or names == list(COLUMNS) else [COLUMNS.index(name) for name in names]
        self.named = names is None  # the driver takes a dict per row (pyformat), else tuples
        self.label_json = columns.predicted.type.dialect_impl(dialect).bind_processor(dialect)
        self.time = columns.created_at.type.dialect_impl(dialect).bind_processor(dialect)

    def parameters(self, rows: list[tuple]) -> list:
        """Rows in COLUMNS order (raw labels, one time) as the driver's executemany takes them."""
        if not rows:
            return []
        to_json, labels = self.label_json, {}
        when = rows[0][6] if self.time is None else self.time(rows[0][6])
        converted = []
        for row in rows:
            label = row[4]
            key = (type(label), label)  # 1 and True are equal keys otherwise
            if key not in labels:
                labels[key] = label if to_json is None else to_json(label)
            converted.append((row[0], row[1], row[2], row[3], labels[key], row[5], when))
        if self.named:
            return [dict(zip(COLUMNS, row, strict=True)) for row in converted]
        if self.order is not None:
            return [tuple(row[i] for i in self.order) for row in converted]
        return converted


class PredictionLog:
    """One per API process: the models that log (``policies``), the buffer, and its writer thread."""

    def __init__(self, engine: Engine, flush_interval: float, policy_interval: float):
        self.engine = engine
        self.flush_interval = flush_interval
        self.policy_interval = policy_interval
        self.policies: dict[str, LogPolicy] = {}
        self._pending: deque[tuple] = deque()  # appends and pops are atomic: no lock on the request side
        # rows appended (counted by the request side only) and taken by the writer (by the writer only):
        # each counter has one writer, so the rows buffered are their difference without a lock
        self._appended = 0
        self._taken = 0
        self._text_appended = 0  # characters of text, counted the same way
        self._text_taken = 0
        self._log_sizes: dict[int, int] = {}  # model id -> rows in its log (counted, plus those written since)
        self._insert = RowInsert(engine.dialect)
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._random = random.Random()

    # ------------------------------------------------------------------------------- the request side
    def record(self, policy: LogPolicy, version_id: int, samples, predictions) -> list[str | None]:
        """A ``prediction_id`` per sample (None for one the sampling skipped); the request buffered as one
        entry. ``samples``: a float tensor, or a text model's list of strings."""
        count = len(predictions)
        if self._appended - self._taken >= MAX_BUFFERED:
            return [None] * count  # the writer is failing: serving goes on, unlogged
        texts = isinstance(samples, list)
        if texts and self._text_appended - self._text_taken >= MAX_BUFFERED_TEXT_CHARS:
            return [None] * count
        if policy.log_rate >= 1.0:
            ids: list[str | None] = [new_prediction_id() for _ in range(count)]
            logged = count
        else:
            draw, rate = self._random.random, policy.log_rate
            ids = [new_prediction_id() if draw() < rate else None for _ in range(count)]
            logged = count - ids.count(None)
        if logged:
            if count == 1:
                labels, probabilities = (predictions[0].label,), (predictions[0].probability,)
            else:
                labels = tuple(prediction.label for prediction in predictions)
                probabilities = tuple(prediction.probability for prediction in predictions)
            self._pending.append(
                (tuple(ids), policy.model_id, policy.log_max_samples, version_id, samples, labels, probabilities)
            )
            self._appended += logged
            if texts:
                self._text_appended += sum(len(text) for text in samples)
        return ids

    # --------------------------------------------------------------------------------- the writer side
    def start(self) -> None:
        """Read the policies, then start the writer thread (the app's startup)."""
        try:
            self.reload_policies()
        except Exception:  # not migrated yet: the thread tries again
            log.warning("feedback policies not read at startup", exc_info=True)
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="retain-prediction-log", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the writer and write what is buffered (the app's shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None
        self.flush()

    def reload_policies(self) -> None:
        with Session(self.engine) as session:
            self.policies = read_policies(session)

    def set_policy(self, name: str, policy: LogPolicy | None) -> None:
        """This process's own change, known at once (the others read it within ``policy_interval``)."""
        policies = dict(self.policies)
        if policy is None or policy.log_rate <= 0:
            policies.pop(name, None)
        else:
            policies[name] = policy
        self.policies = policies

    def _run(self) -> None:
        since_reload = 0.0
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
                since_reload += self.flush_interval
                if since_reload >= self.policy_interval:
                    since_reload = 0.0
                    self.reload_policies()
                    self.forget_log_sizes()
            except Exception:  # database away: rows stay buffered (up to the cap) and are tried again
                log.exception("the prediction log could not be written; retrying")

    def flush(self) -> int:
        """Write every buffered row in one transaction and trim each model to its ``log_max_samples``.
        Returns the number of rows written. Thread-safe; a concurrent call waits for this one."""
        with self._write_lock:
            # take what is there now; requests keep appending behind it meanwhile
            pending = self._pending
            entries = [pending.popleft() for _ in range(len(pending))]
            if not entries:
                return 0
            values, written, bounds = rows_of(entries, utcnow())
            try:
                with Session(self.engine) as session:
                    session.connection().exec_driver_sql(self._insert.sql, self._insert.parameters(values))
                    sizes = {}
                    for model_id, bound in bounds.items():
                        size = self._log_sizes.get(model_id)
                        size = log_size(session, model_id) if size is None else size + written[model_id]
                        sizes[model_id] = size - trim(session, model_id, size - bound)
                    session.commit()
            except Exception:
                self._pending.extendleft(reversed(entries))  # kept for the next try, in order
                self._log_sizes.clear()  # counted again after a failed write
                raise
            self._log_sizes.update(sizes)
            self._taken += len(values)
            self._text_taken += sum(sum(map(len, entry[4])) for entry in entries if isinstance(entry[4], list))
            return len(values)

    def forget_log_sizes(self) -> None:
        """Count each log again at the next flush (other replicas write to it, feedback drops nothing)."""
        self._log_sizes.clear()


def rows_of(entries: list[tuple], now) -> tuple[list[tuple], dict[int, int], dict[int, int]]:
    """The buffered requests as rows of the log in COLUMNS order: (rows, rows per model id, each
    model's log_max_samples)."""
    values: list[tuple] = []
    written: dict[int, int] = {}
    bounds: dict[int, int] = {}
    for ids, model_id, bound, version_id, samples, labels, probabilities in entries:
        packed = packer(samples)
        before = len(values)
        for index, prediction_id in enumerate(ids):
            if prediction_id is not None:
                inputs = packed(index)
                values.append((prediction_id, model_id, version_id, inputs, labels[index], probabilities[index], now))
        written[model_id] = written.get(model_id, 0) + len(values) - before
        bounds[model_id] = bound
    return values, written, bounds


def packer(samples) -> Callable[[int], bytes]:
    """Sample ``index`` of a request as stored: a text model's text (`pack_text`), else its slice of the
    request's float32 bytes, converted once for the whole request (what `pack_inputs` stores per sample)."""
    if isinstance(samples, list):
        return lambda index: pack_text(samples[index])
    array = samples.numpy()
    data = (array if array.dtype == LITTLE_F4 else array.astype(LITTLE_F4)).tobytes()  # C order
    size = len(data) // len(array)
    return lambda index: RAW + data[index * size : (index + 1) * size]


def log_size(session: Session, model_id: int) -> int:
    return session.scalar(select(func.count(LoggedSample.id)).where(LoggedSample.model_id == model_id)) or 0


def trim(session: Session, model_id: int, excess: int) -> int:
    """Drop the model's ``excess`` oldest logged samples (labelled ones still in the buffer stay);
    returns how many went."""
    if excess <= 0:
        return 0
    droppable = (LoggedSample.model_id == model_id) & ~(
        LoggedSample.labelled_at.is_not(None) & LoggedSample.task_id.is_(None)
    )
    oldest = select(LoggedSample.id).where(droppable).order_by(LoggedSample.id).limit(excess)
    ids = list(session.scalars(oldest))
    if ids:
        session.execute(delete(LoggedSample).where(LoggedSample.id.in_(ids)))
    return len(ids)
