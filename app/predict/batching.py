"""Dynamic batching as Triton's dynamic batcher does it: concurrent requests for the same model
version (and task) run as one forward pass.

Each batch key has a queue and at most one batch in flight. A request joins its key's queue;
when no batch of that key is running, a batch starts with whatever is waiting, up to
``max_batch_size`` samples (the setting ``predict_max_batch_size``). While it runs, new requests
queue up and form the next batch, so batches grow with load by themselves. ``max_queue_delay``
(default 0, as Triton's) is how long a batch that is not full may wait for more requests before
it starts; 0 never waits.

Forward passes run on ``serving_threads`` threads, off the event loop, under
``torch.inference_mode()``. A batch that fails is retried request by request, so one bad
request fails alone, never the others in its batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from app.learning import ContinualLearner, Prediction
from app.metrics import predict as metrics


@dataclass
class Pending:
    samples: torch.Tensor
    top_k: int
    future: asyncio.Future
    enqueued_at: float


class DynamicBatcher:
    def __init__(self, *, threads: int, max_batch_size: int, max_queue_delay: float):
        self.max_batch_size = max_batch_size
        self.max_queue_delay = max_queue_delay
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None  # made on first use, again after a shutdown
        self._queues: dict[Hashable, deque[Pending]] = {}

    async def predict(
        self,
        key: Hashable,
        learner: ContinualLearner,
        model_name: str,
        task_key: str | None,
        samples: torch.Tensor,
        top_k: int,
    ) -> list[Prediction]:
        """Predictions for ``samples``, computed in one batch with the other requests of ``key``
        waiting at the same time (``key`` names the version and the task: what one forward serves)."""
        loop = asyncio.get_running_loop()
        item = Pending(samples, top_k, loop.create_future(), time.perf_counter())
        queue_key = (id(loop), key)  # futures belong to their loop (TestClient may run several)
        queue = self._queues.get(queue_key)
        if queue is None:  # no batch of this key in flight: start draining
            queue = self._queues[queue_key] = deque([item])
            loop.create_task(self._drain(queue_key, queue, learner, model_name, task_key))
        else:
            queue.append(item)
        return await item.future

    async def _drain(self, queue_key, queue: deque[Pending], learner, model_name, task_key) -> None:
        loop = asyncio.get_running_loop()
        try:
            while queue:
                if self.max_queue_delay > 0 and sum(len(p.samples) for p in queue) < self.max_batch_size:
                    await asyncio.sleep(max(0.0, queue[0].enqueued_at + self.max_queue_delay - time.perf_counter()))
                batch = [queue.popleft()]
                size = len(batch[0].samples)
                while queue and size + len(queue[0].samples) <= self.max_batch_size:
                    size += len(queue[0].samples)
                    batch.append(queue.popleft())
                results: Sequence[list[Prediction] | BaseException]
                try:
                    results = await loop.run_in_executor(
                        self.executor(), run_batch, learner, model_name, task_key, batch
                    )
                except BaseException as error:
                    results = [error] * len(batch)
                for item, result in zip(batch, results, strict=True):
                    if item.future.done():
                        continue  # its client went away
                    if isinstance(result, BaseException):
                        item.future.set_exception(result)
                    else:
                        item.future.set_result(result)
        finally:
            del self._queues[queue_key]
            for item in queue:  # only left when the loop is going away
                if not item.future.done():
                    item.future.cancel()

    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="retain-serving")
        return self._executor

    def shutdown(self) -> None:
        """Stop the serving threads (the app's shutdown); a later prediction starts new ones."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def run_batch(
    learner: ContinualLearner, model_name: str, task_key: str | None, batch: list[Pending]
) -> list[list[Prediction] | Exception]:
    """One forward over the whole batch, split back per request; on failure, each request alone."""
    queued = time.perf_counter() - batch[0].enqueued_at
    samples = batch[0].samples if len(batch) == 1 else torch.cat([p.samples for p in batch])
    top_k = max(p.top_k for p in batch)
    try:
        with torch.inference_mode(), metrics.inference(model_name, len(samples), queued_seconds=queued):
            predictions = learner.predict(samples, task_key=task_key, top_k=top_k)
    except Exception as error:
        if len(batch) == 1:
            return [error]
        return [run_batch(learner, model_name, task_key, [item])[0] for item in batch]
    results: list[list[Prediction] | Exception] = []
    start = 0
    for item in batch:
        mine = predictions[start : start + len(item.samples)]
        start += len(item.samples)
        results.append(
            mine if item.top_k == top_k else [dataclasses.replace(p, top_k=p.top_k[: item.top_k]) for p in mine]
        )
    return results
