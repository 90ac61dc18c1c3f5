"""The worker loop: evaluate the feedback triggers when due, reap expired leases, claim the next job, run it, repeat.

The same loop runs in `python -m workers` processes and, on the embedded default, in a
thread of the API process (`start_embedded_worker`). Setting ``stop_event`` stops it
gracefully: no new claims, and a job in training is handed back to the queue.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass

import torch

from app.db.session import session_factory
from app.feedback.triggers import TriggerEvaluator
from app.jobs import queue
from app.registry.collection import collect_garbage
from app.settings import Settings
from app.storage.artifacts import artifact_store
from app.updates.apply import run_job

log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def run_worker(
    settings: Settings, stop_event: threading.Event | None = None, once: bool = False, worker_id: str | None = None
) -> int:
    """Work until ``stop_event`` is set; with ``once``, run at most one job and return.
    Returns the number of jobs this worker ran (whatever their outcome)."""
    stop_event = stop_event or threading.Event()
    if settings.torch_threads is not None:  # workers sharing a machine must not oversubscribe its cores
        torch.set_num_threads(settings.torch_threads)
    factory = session_factory(settings)
    store = artifact_store(settings)
    worker_id = worker_id or default_worker_id()
    clean_store(factory, store, settings)
    triggers = TriggerEvaluator(factory, store, settings)  # the feedback loop's triggers (app/feedback/)
    jobs_run = 0
    while not stop_event.is_set():
        held = None
        try:
            triggers.run_due()
        except Exception:
            log.exception("worker %s could not evaluate the feedback triggers", worker_id)
        try:
            with factory() as session:
                for job_id, status in queue.reap(session).items():
                    log.warning("job %s: lease expired -> %s", job_id, status)
            with factory() as session:
                held = queue.claim(session, worker_id, settings.lease_seconds)
        except Exception:  # database unreachable or busy: a worker keeps polling rather than dying
            log.exception("worker %s could not poll the queue", worker_id)
        if held is not None:
            log.info(
                "job %s (task %s, model %s, attempt %s): claimed by %s",
                held.job_id,
                held.task_id,
                held.model_id,
                held.attempt,
                held.lease_owner,
            )
            try:
                outcome = run_job(factory, store, settings, held, stop_event)
            except Exception:  # even its outcome could not be recorded (database gone for good): the
                # lease expires and the reaper requeues the job; this worker lives on and polls again
                log.exception("job %s: outcome not recorded; its lease will expire and it will be retried", held.job_id)
                outcome = None
            log.info("job %s: %s", held.job_id, outcome or "left to the worker that now holds its lease")
            jobs_run += 1
        if once:
            break
        if held is None:
            stop_event.wait(settings.poll_interval)
    return jobs_run


def clean_store(factory, store, settings: Settings) -> None:
    """What crashes leave in the artifact store, removed when a worker starts: temporary files of killed
    writers, and artifacts no row refers to (older than the grace period, app/registry/collection.py).
    At start because workers are what write artifacts and a restart follows the crashes that leave
    garbage; it needs no timer, and ``POST /artifacts/gc`` runs it on demand in between."""
    try:
        if removed := store.remove_stale_temporaries():
            log.info("removed %d stale temporary artifact file(s) left by killed writers", removed)
        with factory() as session:
            collected = collect_garbage(session, store, settings.artifact_gc_grace_seconds)
        if collected.removed:
            log.info("removed %d unreferenced artifact(s), %d bytes", collected.removed, collected.bytes_freed)
    except Exception:  # an unreachable store or database must not stop the worker from starting
        log.exception("could not clean the artifact store")


@dataclass
class EmbeddedWorker:
    """A worker thread inside the API process; `stop()` on shutdown."""

    thread: threading.Thread
    stop_event: threading.Event

    def stop(self, timeout: float | None = 60.0) -> None:
        """Stop claiming, hand a running job back to the queue, and wait for the thread."""
        self.stop_event.set()
        self.thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()


def start_embedded_worker(settings: Settings) -> EmbeddedWorker:
    stop_event = threading.Event()
    thread = threading.Thread(
        target=run_worker,
        args=(settings, stop_event),
        kwargs={"worker_id": f"{default_worker_id()}-embedded"},
        name="retain-embedded-worker",
        daemon=True,
    )
    thread.start()
    return EmbeddedWorker(thread=thread, stop_event=stop_event)
