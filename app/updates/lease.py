"""Keeps a claimed job's lease alive while it trains, and carries progress and stop requests
between the training thread and the database.

A background thread renews the lease every ``heartbeat_seconds`` whatever training is doing
(a long Fisher pass reports no progress, yet must not look like a dead worker), writes the
latest progress at most every ``progress_interval`` seconds (throttled: a progress callback
per batch must not mean a database write per batch), and reads back the job's
``cancel_requested`` flag. Training polls `should_stop` and stops when a user cancelled, the
lease was lost (the job is someone else's now), or the worker is shutting down.
"""

from __future__ import annotations

import logging
import threading
import time

from app.jobs import queue
from app.jobs.queue import Claim
from app.learning import Progress
from app.metrics.phases import PhaseClock
from app.settings import Settings

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, session_factory, held: Claim, settings: Settings, shutdown: threading.Event):
        self.session_factory = session_factory
        self.held = held
        self.lease_seconds = settings.lease_seconds
        self.heartbeat_seconds = settings.heartbeat_interval
        self.progress_interval = settings.progress_interval
        self.shutdown = shutdown
        self.cancel_requested = False
        self.lease_lost = False
        self._progress: dict | None = None
        self._progress_written: dict | None = None
        self._logged: tuple | None = None
        self._started = time.monotonic()
        self._clock = PhaseClock()  # phase_seconds in the progress, read by /metrics
        self._wake = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"lease-job-{held.job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._wake.set()
        self._thread.join()

    # -- called from the training thread
    def report(self, progress: Progress) -> None:
        """The learner's progress callback: remember the latest numbers; the thread writes them."""
        elapsed = time.monotonic() - self._started
        eta = elapsed * (1.0 - progress.fraction) / progress.fraction if progress.fraction > 0 else None
        with self._lock:
            self._clock.enter(progress.phase)
            self._progress = {
                "phase_seconds": self._clock.seconds(),
                "phase": progress.phase,
                "fraction": round(float(progress.fraction), 4),
                "epoch": progress.epoch,
                "epochs": progress.epochs,
                "loss": progress.loss,
                "samples_per_second": progress.samples_per_second,
                "eta_seconds": None if eta is None else round(eta, 1),
                "elapsed_seconds": round(elapsed, 1),
            }
        self._wake.set()

    def set_phase(self, phase: str, fraction: float | None = None) -> None:
        """Progress outside the learner (loading data, writing artifacts, evaluating on test)."""
        with self._lock:
            current = dict(self._progress or {"fraction": 0.0})
            current["phase"] = phase
            self._clock.enter(phase)
            current["phase_seconds"] = self._clock.seconds()
            if fraction is not None:
                current["fraction"] = fraction
            self._progress = current
        self._wake.set()

    def should_stop(self) -> bool:
        return self.cancel_requested or self.lease_lost or self.shutdown.is_set()

    def latest_progress(self) -> dict | None:
        with self._lock:
            return {**self._progress, "phase_seconds": self._clock.seconds()} if self._progress else None

    def _log_progress(self, progress: dict) -> None:
        """One log line per phase and epoch, so a worker's log shows where a long update is."""
        milestone = (progress.get("phase"), progress.get("epoch"))
        if milestone == self._logged:
            return
        self._logged = milestone
        numbers = [f"{100 * progress.get('fraction', 0):.0f}%"]
        if progress.get("epochs"):
            numbers.append(f"epoch {progress.get('epoch')}/{progress['epochs']}")
        if progress.get("loss") is not None:
            numbers.append(f"loss {progress['loss']:.3f}")
        if progress.get("samples_per_second"):
            numbers.append(f"{progress['samples_per_second']:.0f} samples/s")
        if progress.get("eta_seconds") is not None:
            numbers.append(f"eta {progress['eta_seconds']:.0f} s")
        log.info("job %s: %s %s", self.held.job_id, progress.get("phase"), ", ".join(numbers))

    # -- the heartbeat thread
    def _run(self) -> None:
        last_beat = time.monotonic()
        while not self._done.is_set():
            now = time.monotonic()
            heartbeat_due = now - last_beat >= self.heartbeat_seconds
            with self._lock:
                fresh = self._progress if self._progress is not self._progress_written else None
            if heartbeat_due or fresh is not None:
                try:
                    with self.session_factory() as session:
                        beat = queue.heartbeat(session, self.held, self.lease_seconds, fresh)
                except Exception:  # the database may be briefly unreachable: keep trying until the lease ends
                    log.exception("heartbeat of job %s failed", self.held.job_id)
                else:
                    last_beat = now
                    if fresh is not None:
                        self._log_progress(fresh)
                        self._progress_written = fresh
                    if not beat.owned:
                        log.warning("job %s: lease lost; abandoning it", self.held.job_id)
                        self.lease_lost = True
                        return
                    self.cancel_requested = beat.cancel_requested
                # at most one progress write per progress_interval (and no busy loop while the database is down)
                self._done.wait(max(self.progress_interval, 0.05))
            timeout = max(0.0, self.heartbeat_seconds - (time.monotonic() - last_beat))
            self._wake.wait(timeout)
            self._wake.clear()
