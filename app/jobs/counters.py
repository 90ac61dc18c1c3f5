"""What a job counts across its attempts, kept in its ``progress`` JSON: how often its lease
expired and how often it went back to the queue (a lease expiry, or a worker shutting down).

The progress JSON is rewritten at every start and by every heartbeat; the state machine and the
heartbeat carry these keys over (`carried`) and count with `counted`, so the numbers outlive the
attempt that made them and /metrics can add them up from the jobs table (no migration).
"""

from __future__ import annotations

LEASE_EXPIRIES = "lease_expiries"
REQUEUES = "requeues"
KEPT = (LEASE_EXPIRIES, REQUEUES)


def carried(progress: dict | None) -> dict:
    """The counts in ``progress``, to merge into the progress that replaces it."""
    held = progress or {}
    return {key: held[key] for key in KEPT if key in held}


def counted(progress: dict | None, *keys: str) -> dict:
    """A new progress dict (JSON columns notice reassignment, not mutation) with each of ``keys`` one higher."""
    updated = dict(progress or {})
    for key in keys:
        updated[key] = int(updated.get(key, 0)) + 1
    return updated
