"""Polling for what a test waits on (a job's phase, a process's log line, a trigger's decision)."""

from __future__ import annotations

import time


def wait_until(condition, timeout: float = 60.0, what: str = "condition", poll: float = 0.1):
    """``condition()``'s first truthy value, polled every ``poll`` s; fails the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)
