"""The prediction log as serving writes it: rows buffered in memory, written in batches off the event loop.

A prediction request never runs SQL for the log. When its model's policy logs, the request draws
which samples to log (``log_rate``), gives each a ``prediction_id`` (a random 128-bit hex string,
unique without asking the database) and appends one tuple per logged sample to an in-memory
buffer; a background thread writes the buffer every ``feedback_flush_interval`` seconds in one
transaction, compresses the inputs there (not on the request), and drops each model's oldest
samples past ``log_max_samples`` (labelled samples not yet learnt from are never dropped: they
are the loop's training buffer). With no policy for the model the request pays one dict lookup.

Feedback for a prediction still in the buffer flushes it first (`flush`), so an id a caller was
given is always found by the replica that gave it; another replica finds it after at most one
flush interval. The policies (which models log, at what rate) are read again from the database
every ``feedback_policy_interval`` seconds by the same thread, so a policy set through one replica
reaches the others.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import zlib
from collections import deque
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine, delete, func, insert, select
from sqlalchemy.orm import Session

from app.db.tables import FeedbackPolicy, LoggedSample, Model, utcnow

log = logging.getLogger(__name__)

MAX_BUFFERED = 200_000  # rows held while the database cannot be written; past it, predictions go unlogged


@dataclass(frozen=True)
class LogPolicy:
    """What serving needs of a model's feedback policy."""

    model_id: int
    log_rate: float
    log_max_samples: int


def new_prediction_id() -> str:
    return secrets.token_hex(16)


def pack_inputs(sample: np.ndarray) -> bytes:
    """A sample as stored: float32, C order, zlib-compressed (images of digits shrink several-fold)."""
    return zlib.compress(np.ascontiguousarray(sample, dtype=np.float32).tobytes(), 1)


def unpack_inputs(data: bytes, input_shape) -> np.ndarray:
    return np.frombuffer(zlib.decompress(data), dtype=np.float32).reshape(tuple(input_shape))


def read_policies(session: Session) -> dict[str, LogPolicy]:

    rows = session.execute(select(Model.name, FeedbackPolicy.model_id, FeedbackPolicy.policy).join(Model)).all()
    return {
        name: LogPolicy(model_id, float(policy.get("log_rate", 0.0)), int(policy.get("log_max_samples", 1)))
        for name, model_id, policy in rows
        if float(policy.get("log_rate", 0.0)) > 0
    }


class PredictionLog:
    """One per API process: the models that log (``policies``), the buffer, and its writer thread."""

    def __init__(self, engine: Engine, flush_interval: float, policy_interval: float):
        self.engine = engine
        self.flush_interval = flush_interval
        self.policy_interval = policy_interval
        self.policies: dict[str, LogPolicy] = {}
        self._pending: deque[tuple] = deque()  # appends and pops are atomic: no lock on the request side
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._random = random.Random()

    # ------------------------------------------------------------------------------- the request side
    def record(self, policy: LogPolicy, version_id: int, samples, predictions) -> list[str | None]:
        """A ``prediction_id`` per sample (None for one the sampling skipped); the logged ones buffered."""
        rows = self._pending
        if len(rows) >= MAX_BUFFERED:  # the writer is failing: serving goes on, unlogged
            return [None] * len(predictions)
        ids: list[str | None] = []
        rate, draw = policy.log_rate, self._random.random
        for index, prediction in enumerate(predictions):
            if rate < 1.0 and draw() >= rate:
                ids.append(None)
                continue
            prediction_id = new_prediction_id()
            ids.append(prediction_id)
            # the tensor row is kept as it is (a view); conversion and compression happen in the writer
            rows.append((prediction_id, policy, version_id, samples[index], prediction.label, prediction.probability))
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
            except Exception:  # database away: rows stay buffered (up to the cap) and are tried again
                log.exception("the prediction log could not be written; retrying")

    def flush(self) -> int:
        """Write every buffered row in one transaction and trim each model to its ``log_max_samples``.
        Returns the number of rows written. Thread-safe; a concurrent call waits for this one."""
        with self._write_lock:
            # take what is there now; requests keep appending behind it meanwhile
            pending = self._pending
            rows = [pending.popleft() for _ in range(len(pending))]
            if not rows:
                return 0
            now = utcnow()
            values = [
                {
                    "prediction_id": prediction_id,
                    "model_id": policy.model_id,
                    "model_version_id": version_id,
                    "inputs": pack_inputs(sample.numpy() if hasattr(sample, "numpy") else sample),
                    "predicted": label,
                    "probability": float(probability),
                    "created_at": now,
                }
                for prediction_id, policy, version_id, sample, label, probability in rows
            ]
            bounds = {policy.model_id: policy.log_max_samples for _, policy, *_ in rows}
            try:
                with Session(self.engine) as session:
                    session.execute(insert(LoggedSample), values)
                    for model_id, bound in bounds.items():
                        trim(session, model_id, bound)
                    session.commit()
            except Exception:
                self._pending.extendleft(reversed(rows))  # kept for the next try, in order
                raise
            return len(rows)


def trim(session: Session, model_id: int, bound: int) -> int:
    """Drop the model's oldest logged samples past ``bound``; labelled ones still in the buffer stay."""
    droppable = (LoggedSample.model_id == model_id) & ~(
        LoggedSample.labelled_at.is_not(None) & LoggedSample.task_id.is_(None)
    )
    total = session.scalar(select(func.count(LoggedSample.id)).where(LoggedSample.model_id == model_id))
    excess = (total or 0) - bound
    if excess <= 0:
        return 0
    oldest = select(LoggedSample.id).where(droppable).order_by(LoggedSample.id).limit(excess)
    ids = list(session.scalars(oldest))
    if ids:
        session.execute(delete(LoggedSample).where(LoggedSample.id.in_(ids)))
    return len(ids)
