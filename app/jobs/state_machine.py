"""THE job state machine: the only place a job's status changes.

    queued --start--> running --succeed--> succeeded
       |                 |----reject---->  rejected   (stored, not promoted: the forgetting gate)
       |                 |----fail------>  failed
       |                 |----cancel---->  cancelled
       |                 '----requeue--->  queued     (lease expired: attempt + 1; or worker shut down)
       '----cancel-----------------------> cancelled

Every change also mirrors the status onto the job's task (``tasks.status``) and stamps the
times, so a reader never sees a job and its task disagree. A job that imported a model (POST
/models) and ends failed or cancelled takes that model's rows with it, in the same transaction,
and stays as their only record (``app/jobs/failed_import.py``). A job that ends without landing
(rejected, failed, cancelled) gives the labels its task took from the feedback buffer back to it
(``logged_samples.task_id`` cleared, app/feedback/), in the same transaction: the next trigger-made
update learns them, and no restart can lose them in between. An illegal move raises
``IllegalTransition`` and changes nothing. Callers commit.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from app.db.tables import Job, LoggedSample, Task, utcnow
from app.errors import IllegalTransition
from app.jobs.counters import LEASE_EXPIRIES, REQUEUES, carried, counted
from app.jobs.failed_import import discard_failed_import
from app.jobs.status import TERMINAL_STATUSES as TERMINAL
from app.jobs.status import UNLANDED, JobStatus

QUEUED, RUNNING = JobStatus.QUEUED, JobStatus.RUNNING
ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    QUEUED: frozenset({RUNNING, JobStatus.CANCELLED}),
    RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.REJECTED, JobStatus.FAILED, JobStatus.CANCELLED, QUEUED}),
    **{status: frozenset() for status in TERMINAL},
}


def transition(session: Session, job: Job, status: JobStatus | str, *, error: str | None = None) -> None:
    """Move ``job`` to ``status`` (mirrored on its task); raises IllegalTransition if not allowed."""
    if status not in ALLOWED:
        raise IllegalTransition(f"unknown job status {status!r}; statuses are {', '.join(JobStatus)}")
    status = JobStatus(status)
    if status not in ALLOWED[JobStatus(job.status)]:
        raise IllegalTransition(f"job {job.id} cannot go from {job.status} to {status}")
    job.status = status
    now = utcnow()
    if status == RUNNING:
        job.started_at = now
        job.finished_at = None
    if status in TERMINAL:
        job.finished_at = now
    if status != RUNNING:
        job.lease_expires_at = None  # no lease to renew; lease_owner stays as the record of who ran it
    if status == QUEUED:
        job.lease_owner = None
    if error is not None:
        job.error = error
    task = session.get(Task, job.task_id) if job.task_id is not None else None
    if task is not None:
        task.status = status
    if status in UNLANDED and job.task_id is not None:
        give_back_labels(session, job)
    if status in (JobStatus.FAILED, JobStatus.CANCELLED):  # an import that failed leaves only this job
        discard_failed_import(session, job, task, cancel)


def give_back_labels(session: Session, job: Job) -> None:
    """The labels a trigger-made task took from its model's feedback buffer return to it (no rows for
    any other task: one indexed UPDATE that matches nothing)."""
    session.execute(
        update(LoggedSample)
        .where(LoggedSample.model_id == job.model_id, LoggedSample.task_id == job.task_id)
        .values(task_id=None)
    )


def start(session: Session, job: Job, lease_owner: str, lease_seconds: float, now: datetime | None = None) -> None:
    """queued -> running under a lease held by ``lease_owner`` until now + lease_seconds."""
    transition(session, job, RUNNING)
    now = now or utcnow()
    job.lease_owner = lease_owner
    job.heartbeat_at = now
    job.lease_expires_at = now + timedelta(seconds=lease_seconds)
    job.progress = {**carried(job.progress), "fraction": 0.0, "phase": "load"}


def _finished_progress(job: Job, last_progress: dict | None) -> dict:
    """The final progress: the worker's latest numbers (throttled writes may have skipped them), done."""
    return {**(job.progress or {}), **(last_progress or {}), "phase": "done", "fraction": 1.0, "eta_seconds": 0.0}


def succeed(session: Session, job: Job, last_progress: dict | None = None) -> None:
    transition(session, job, JobStatus.SUCCEEDED)
    job.error = None  # an earlier lost lease is history, not an error of this job
    job.progress = _finished_progress(job, last_progress)


def reject(session: Session, job: Job, reason: str, last_progress: dict | None = None) -> None:
    """The update was stored but not promoted (the forgetting gate tripped); ``reason`` has the numbers."""
    transition(session, job, JobStatus.REJECTED, error=reason)
    job.progress = _finished_progress(job, last_progress)


def fail(session: Session, job: Job, reason: str) -> None:
    transition(session, job, JobStatus.FAILED, error=reason)


def cancel(session: Session, job: Job, reason: str) -> None:
    transition(session, job, JobStatus.CANCELLED, error=reason)


def expire_lease(session: Session, job: Job, lost: str | None = None) -> JobStatus:
    """A running job whose worker stopped heartbeating (or, ``lost``, one of the processes of its
    update died): retry it (attempt + 1), or fail it after ``max_attempts`` tries. Returns the new status."""
    reason = lost or f"worker {job.lease_owner} stopped renewing its lease"
    lost = f"{reason} (attempt {job.attempt} of {job.max_attempts})"
    if job.cancel_requested:  # the user asked to stop it: a lost worker is no reason to run it again
        transition(session, job, JobStatus.CANCELLED, error=f"{lost}; cancel had been requested, so not retried")
        job.progress = counted(job.progress, LEASE_EXPIRIES)
        return JobStatus.CANCELLED
    if job.attempt >= job.max_attempts:
        transition(session, job, JobStatus.FAILED, error=f"{lost}; no attempts left")
        job.progress = counted(job.progress, LEASE_EXPIRIES)
        return JobStatus.FAILED
    transition(session, job, QUEUED, error=f"{lost}; retrying")
    job.progress = counted(job.progress, LEASE_EXPIRIES, REQUEUES)
    job.attempt += 1
    return QUEUED


def release(session: Session, job: Job, reason: str) -> None:
    """A worker shutting down hands its running job back (running -> queued); the try is not
    counted against ``max_attempts`` because nothing went wrong with the job itself."""
    transition(session, job, QUEUED, error=reason)
    job.progress = counted({**carried(job.progress), "fraction": 0.0}, REQUEUES)


def request_cancel(session: Session, job: Job) -> None:
    """Queued jobs are cancelled now; running ones are flagged and stopped by their worker."""
    if job.status in TERMINAL:
        raise IllegalTransition(f"job {job.id} already finished ({job.status}); there is nothing to cancel")
    job.cancel_requested = True
    if job.status == QUEUED:
        cancel(session, job, "cancelled before it started")
