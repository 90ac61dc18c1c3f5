"""Job statuses: one enum for the tables, the state machine, the API schemas and the CLI.

A ``StrEnum`` so each status is also the plain string stored in the database and sent over
HTTP; this module imports nothing, so the HTTP client can use it without the server's code.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"  # stored, not promoted: the forgetting gate tripped
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.REJECTED, JobStatus.FAILED, JobStatus.CANCELLED})
UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING)  # a tuple: used in SQL IN (...) and in membership tests
UNLANDED = frozenset({JobStatus.REJECTED, JobStatus.FAILED, JobStatus.CANCELLED})  # ended without a served version
