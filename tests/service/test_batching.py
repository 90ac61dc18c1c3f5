"""Dynamic batching and single-flight loads, on a real (small, trained) learner: concurrent requests
run as one forward with per-sample answers equal to unbatched ones, a bad request fails alone, and
many concurrent cold requests load a version once."""

import asyncio
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from app.learning import ContinualLearner, TaskData, TrainConfig
from app.predict.batching import DynamicBatcher
from app.predict.cache import LearnerCache, version_key


class CountingLearner:
    """A learner that records the size of each forward it runs."""

    def __init__(self, learner: ContinualLearner):
        self.learner, self.batch_sizes = learner, []

    def predict(self, x, task_key=None, top_k=1):
        self.batch_sizes.append(len(x))
        return self.learner.predict(x, task_key=task_key, top_k=top_k)


@pytest.fixture(scope="module")
def learner() -> ContinualLearner:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + 2 * (x[:, 1] > 0).astype(int)
    learner = ContinualLearner.create("mlp", (16,), architecture_options={"hidden": [32]})
    learner.learn_task("1", TaskData(x, y), train_config=TrainConfig(epochs=2))
    return learner


def requests(count: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(1)
    return [torch.from_numpy(rng.normal(size=(1 + i % 3, 16)).astype(np.float32)) for i in range(count)]


def run_concurrently(batcher, model, inputs, top_ks):
    async def all_at_once():
        return await asyncio.gather(
            *(batcher.predict(("v1", None), model, "m", None, x, k) for x, k in zip(inputs, top_ks, strict=True)),
            return_exceptions=True,
        )

    return asyncio.run(all_at_once())


def test_concurrent_requests_run_as_one_forward_with_unbatched_answers(learner):
    counting = CountingLearner(learner)
    batcher = DynamicBatcher(threads=1, max_batch_size=64, max_queue_delay=0.0)
    inputs, top_ks = requests(12), [1, 3] * 6
    batched = run_concurrently(batcher, counting, inputs, top_ks)
    assert counting.batch_sizes == [sum(len(x) for x in inputs)]  # one forward for all twelve
    for x, k, answer in zip(inputs, top_ks, batched, strict=True):
        alone = learner.predict(x, top_k=k)
        assert [p.label for p in answer] == [p.label for p in alone]
        assert [[label for label, _ in p.top_k] for p in answer] == [[label for label, _ in p.top_k] for p in alone]
        assert np.allclose([p.probability for p in answer], [p.probability for p in alone], atol=1e-6)

    counting.batch_sizes.clear()
    small = DynamicBatcher(threads=1, max_batch_size=4, max_queue_delay=0.0)
    run_concurrently(small, counting, inputs, top_ks)
    assert max(counting.batch_sizes) <= 4 and sum(counting.batch_sizes) == sum(len(x) for x in inputs)
    batcher.shutdown(), small.shutdown()


def test_a_bad_request_fails_alone(learner):
    counting = CountingLearner(learner)
    batcher = DynamicBatcher(threads=1, max_batch_size=64, max_queue_delay=0.0)
    inputs = requests(5)
    inputs[2] = torch.full((1, 16), float("nan"))  # fails in the forward (non-finite inputs)
    answers = run_concurrently(batcher, counting, inputs, [1] * 5)
    assert isinstance(answers[2], ValueError) and "non-finite" in str(answers[2])
    for i in (0, 1, 3, 4):
        assert [p.label for p in answers[i]] == [p.label for p in learner.predict(inputs[i])]
    batcher.shutdown()


def test_queue_delay_waits_for_more_requests(learner):
    counting = CountingLearner(learner)
    batcher = DynamicBatcher(threads=1, max_batch_size=64, max_queue_delay=0.2)
    x = requests(1)[0]

    async def staggered():
        first = asyncio.ensure_future(batcher.predict(("v1", None), counting, "m", None, x, 1))
        await asyncio.sleep(0.05)  # arrives while the first waits for company
        return await asyncio.gather(first, batcher.predict(("v1", None), counting, "m", None, x, 1))

    asyncio.run(staggered())
    assert counting.batch_sizes == [2 * len(x)]
    batcher.shutdown()


def test_concurrent_cold_requests_load_a_version_once(learner):
    cache, loads, barrier = LearnerCache(capacity=2), [], threading.Barrier(8)

    def load():
        loads.append(1)
        time.sleep(0.2)  # a slow artifact read: the others arrive meanwhile
        return learner

    def request():
        barrier.wait()
        got.append(cache.get(7, load))

    got = []
    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(loads) == 1 and len(got) == 8 and all(g is learner for g in got)

    def broken():
        raise OSError("artifact store unreachable")

    with pytest.raises(OSError):
        cache.get(8, broken)
    assert cache.get(8, lambda: learner) is learner  # a failed load is not remembered


def test_a_reused_version_id_with_other_weights_is_loaded_anew(learner):
    """SQLite may give a new version the id of a deleted one: the cache keys by id and weights, so no
    replica serves the deleted version's weights under the new one's id."""
    cache, other = LearnerCache(capacity=2), object()
    deleted, reused = SimpleNamespace(id=3, weights_sha256="a" * 64), SimpleNamespace(id=3, weights_sha256="b" * 64)
    assert cache.get(version_key(deleted), lambda: learner) is learner
    assert version_key(reused) not in cache
    assert cache.get(version_key(reused), lambda: other) is other


def test_the_cache_is_bounded_in_bytes_least_recently_used_first():
    """Imported models differ in size a thousandfold: the cache holds at most max_bytes of weights."""
    from torch import nn

    def sized(n_weights: int) -> SimpleNamespace:
        return SimpleNamespace(network=nn.Linear(n_weights, 1, bias=False))  # 4 bytes a weight

    cache = LearnerCache(capacity=8, max_bytes=4_000)
    cache.get((1, "a"), lambda: sized(400))
    cache.get((2, "b"), lambda: sized(400))
    assert cache.nbytes == 3_200 and (1, "a") in cache
    cache.get((1, "a"), lambda: sized(400))  # used again: now the most recent
    cache.get((3, "c"), lambda: sized(400))
    assert (2, "b") not in cache and (1, "a") in cache and (3, "c") in cache
    cache.get((4, "d"), lambda: sized(2_000))  # larger than the whole budget: served, alone
    assert [key in cache for key in [(1, "a"), (3, "c"), (4, "d")]] == [False, False, True]
    assert cache.nbytes == 8_000
