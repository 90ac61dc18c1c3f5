"""Retrying what a worker writes about a job when the database drops the connection.

A worker that finished (or failed) an update must get its outcome recorded, or the job stays
``running`` until its lease expires and the work is done again. Connection errors (a restarted
or failed-over database, a terminated backend, SQLite busy) are retried with exponential
backoff; any other error is a bug or a constraint and is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

log = logging.getLogger(__name__)
T = TypeVar("T")
TRANSIENT = (OperationalError, InterfaceError)


def with_retries(action: Callable[[], T], what: str, attempts: int = 6, first_delay: float = 0.25) -> T:
    """``action()``, tried up to ``attempts`` times on connection errors (delays 0.25, 0.5, 1, ... s)."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except TRANSIENT as error:
            if attempt == attempts:
                raise
            log.warning(
                "%s failed (attempt %d of %d: %s); retrying in %.2f s",
                what,
                attempt,
                attempts,
                type(error.orig).__name__ if getattr(error, "orig", None) else type(error).__name__,
                delay,
            )
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")
