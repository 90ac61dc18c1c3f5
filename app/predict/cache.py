"""The learners kept loaded for prediction, keyed by version id.

A version's weights never change, so the cache needs no invalidation: a newly promoted
version is simply a new key, served on the next request without a restart. Loads are
single-flight: many concurrent requests for a version that is not loaded yet load it once,
the others wait for that load (and share its error, if it fails).

Imported models differ in size a thousandfold, so the cache is bounded in bytes too (the
tensors of every loaded network, ``max_bytes``), not only in count: the least recently used
learners go first; the one just loaded always stays (a request is waiting for it).
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
    """The last ``capacity`` learners used, within ``max_bytes`` of tensors, keyed by `version_key` (thread-safe)."""

    def __init__(self, capacity: int = 8, max_bytes: int | None = None):
        self.capacity, self.max_bytes = capacity, max_bytes
        self._learners: OrderedDict[tuple[int, str], ContinualLearner] = OrderedDict()
        self._sizes: dict[tuple[int, str], int] = {}
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
            self._sizes[version_id] = learner_bytes(learner)
            self._learners.move_to_end(version_id)
            while len(self._learners) > 1 and (
                len(self._learners) > self.capacity or (self.max_bytes is not None and self.nbytes > self.max_bytes)
            ):
                evicted, _ = self._learners.popitem(last=False)
                self._sizes.pop(evicted, None)
            del self._loading[version_id]
        pending.set_result(learner)
        return learner

    @property
    def nbytes(self) -> int:
        """Bytes of the tensors of every learner held."""
        return sum(self._sizes.values())

    def __contains__(self, version_id: tuple[int, str]) -> bool:
        return version_id in self._learners


def learner_bytes(learner: ContinualLearner) -> int:
    """What a loaded learner holds in tensors: its network's parameters and buffers."""
    network = getattr(learner, "network", None)
    if network is None:
        return 0
    tensors = [*network.parameters(), *network.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
