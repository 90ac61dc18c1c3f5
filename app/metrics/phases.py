"""Seconds an update spends in each phase (load, train or lambda_search, fisher, evaluate, store).

The worker's lease keeper enters a phase whenever the update reports one, and writes
``seconds()`` into the job's progress as ``phase_seconds``; workers are other processes, so
/metrics reads these figures back from the jobs table (app/metrics/database.py).
"""

from __future__ import annotations

import time


class PhaseClock:
    """Accumulates monotonic time per phase name; re-entering a phase adds to it."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._phase: str | None = None
        self._since = 0.0
        self._seconds: dict[str, float] = {}

    def enter(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        now = self._clock()
        self._close(now)
        self._phase, self._since = phase, now

    def _close(self, now: float) -> None:
        if self._phase is not None:
            self._seconds[self._phase] = self._seconds.get(self._phase, 0.0) + now - self._since

    def seconds(self) -> dict[str, float]:
        """Seconds per phase so far, the current phase up to now included."""
        totals = dict(self._seconds)
        if self._phase is not None:
            totals[self._phase] = totals.get(self._phase, 0.0) + self._clock() - self._since
        return {phase: round(value, 4) for phase, value in totals.items()}
