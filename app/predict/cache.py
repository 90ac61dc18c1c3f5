"""The learners kept loaded for prediction, keyed by version id.

A version's weights never change, so the cache needs no invalidation: a newly promoted
version is simply a new key, served on the next request without a restart. Loads are
single-flight: many concurrent requests for a version that is not loaded yet load it once,
the others wait for that load (and share its error, if it fails).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future

from app.learning import ContinualLearner
from app.metrics import predict as metrics


def version_key(version) -> tuple[int, str]:
    """A version's key in the cache: its id *and* its weights' sha256. Ids alone are not enough: SQLite
    may give a new version the id of a deleted one, and every API replica would then serve the deleted
    weights; the sha256 names exactly what was loaded."""
    return version.id, version.weights_sha256


class LearnerCache:
    """The last ``capacity`` learners used, keyed by `version_key` (thread-safe)."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._learners: OrderedDict[tuple[int, str], ContinualLearner] = OrderedDict()
        self._loading: dict[tuple[int, str], Future[ContinualLearner]] = {}
        self._lock = threading.Lock()

    def get(self, version_id: tuple[int, str], load: Callable[[], ContinualLearner]) -> ContinualLearner:
        with self._lock:
            if version_id in self._learners:
                self._learners.move_to_end(version_id)
                metrics.cache_hit()
                return self._learners[version_id]
            metrics.cache_miss()
            loading = self._loading.get(version_id)
            if loading is None:
                pending: Future[ContinualLearner] = Future()
                self._loading[version_id] = pending
        if loading is not None:
            return loading.result()  # another request is loading this version: wait for its load
        try:
            with metrics.learner_load():
                learner = load()  # outside the lock: loading can take a while
        except BaseException as error:
            with self._lock:
                del self._loading[version_id]
            pending.set_exception(error)
            raise
        with self._lock:
            self._learners[version_id] = learner
            self._learners.move_to_end(version_id)
            while len(self._learners) > self.capacity:
                self._learners.popitem(last=False)
            del self._loading[version_id]
        pending.set_result(learner)
        return learner

    def __contains__(self, version_id: tuple[int, str]) -> bool:
        return version_id in self._learners
