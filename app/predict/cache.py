"""The learners kept loaded for prediction, keyed by version id.

A version's weights never change, so the cache needs no invalidation: a newly promoted
version is simply a new key, served on the next request without a restart.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from app.learning import ContinualLearner
from app.metrics import predict as metrics


class LearnerCache:
    """The last ``capacity`` learners used, keyed by version id (thread-safe)."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._learners: OrderedDict[int, ContinualLearner] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version_id: int, load) -> ContinualLearner:
        with self._lock:
            if version_id in self._learners:
                self._learners.move_to_end(version_id)
                metrics.cache_hit()
                return self._learners[version_id]
        metrics.cache_miss()
        with metrics.learner_load():
            learner = load()  # outside the lock: loading can take a while
        with self._lock:
            self._learners[version_id] = learner
            self._learners.move_to_end(version_id)
            while len(self._learners) > self.capacity:
                self._learners.popitem(last=False)
        return learner

    def __contains__(self, version_id: int) -> bool:
        return version_id in self._learners

    def clear(self) -> None:
        with self._lock:
            self._learners.clear()
