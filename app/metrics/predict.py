"""What the prediction path records: inference time, batch size and queue time per model, and
the learner cache's hits, misses and loads. The predict service calls these; nothing here knows
how it batches or caches."""

from __future__ import annotations

import time
from contextlib import contextmanager
from functools import lru_cache

from prometheus_client import Counter, Histogram

from app.metrics.registry import PROCESS

INFERENCE = Histogram(
    "retain_predict_inference_seconds",
    "Time of one forward pass over a batch, by model",
    ["model"],
    registry=PROCESS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
BATCH_SIZE = Histogram(
    "retain_predict_batch_size",
    "Samples in one inference batch, by model",
    ["model"],
    registry=PROCESS,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 10000),
)
QUEUE = Histogram(
    "retain_predict_queue_seconds",
    "Time a prediction request waited before its batch ran, by model (0 while requests run inline)",
    ["model"],
    registry=PROCESS,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
CACHE_HITS = Counter(
    "retain_predict_learner_cache_hits", "Predictions whose model version was already loaded", registry=PROCESS
)
CACHE_MISSES = Counter(
    "retain_predict_learner_cache_misses", "Predictions that had to load their model version", registry=PROCESS
)
LOADS = Histogram(
    "retain_predict_learner_load_seconds",
    "Time to load a model version's weights for serving (the _count is the number of loads)",
    registry=PROCESS,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


@contextmanager
def inference(model: str, batch_size: int, queued_seconds: float = 0.0):
    """Time the forward pass of one batch of ``batch_size`` samples for ``model``, which waited
    ``queued_seconds`` for it (a batching server passes its queue time; the inline path waits 0)."""
    queue, batch, forward = model_series(model)
    queue.observe(queued_seconds)
    batch.observe(batch_size)
    started = time.perf_counter()
    try:
        yield
    finally:
        forward.observe(time.perf_counter() - started)


@lru_cache(maxsize=1024)
def model_series(model: str) -> tuple:
    """A model's queue, batch-size and inference histograms, looked up once (``labels()`` locks and
    builds its key on every call: more than the observations cost on a small batch)."""
    return QUEUE.labels(model), BATCH_SIZE.labels(model), INFERENCE.labels(model)


def cache_hit() -> None:
    CACHE_HITS.inc()


def cache_miss() -> None:
    CACHE_MISSES.inc()


def learner_load():
    """``with learner_load(): learner = load()`` times (and so counts) one load."""
    return LOADS.time()
