"""The durable queue: the jobs table is the source of truth. Enqueue, atomic claim under a
lease, heartbeat (lease renewal + progress + cancel flag), reaper.

Claiming takes the oldest queued job whose model has no earlier job still queued or
running, so a model's updates run strictly in submission order however many workers
poll, while jobs of different models run in parallel. Two workers never get the same
job: on Postgres the candidate row is locked with ``FOR UPDATE SKIP LOCKED`` (a second
worker skips it, and sees the job before it as unfinished, so it cannot jump ahead
either); on SQLite the whole claim runs under the database write lock (``BEGIN
IMMEDIATE``). Every status change goes through app/jobs/state_machine.py.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, aliased

from app.db.session import begin_write
from app.db.tables import Job, Task, utcnow
from app.jobs import state_machine
from app.jobs.counters import carried
from app.jobs.status import UNFINISHED, JobStatus


@dataclass(frozen=True)
class Claim:
    """What a worker holds while it runs a job: the lease token proves the job is still its own."""

    job_id: int
    task_id: int
    model_id: int
    lease_owner: str
    attempt: int


@dataclass(frozen=True)
class Heartbeat:
    owned: bool  # False: the lease expired and the job went back to the queue (or elsewhere)
    cancel_requested: bool


def enqueue(session: Session, task: Task, max_attempts: int = 3) -> Job:
    """Queue the update that learns ``task``; the caller commits (with the task, atomically)."""
    job = Job(
        task_id=task.id,
        model_id=task.model_id,
        status=JobStatus.QUEUED,
        attempt=1,
        max_attempts=max_attempts,
        progress={"fraction": 0.0},
        cancel_requested=False,
    )
    session.add(job)
    session.flush()
    return job


def _any(session: Session, query) -> bool:
    """A plain read (no lock) in its own short transaction."""
    found = session.scalar(query.limit(1)) is not None
    session.rollback()
    return found


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def database_now(session: Session) -> datetime:
    """The time on the database server, so that leases granted, renewed and judged expired by
    workers on different machines all use one clock (a worker whose clock runs ahead would reap
    live jobs). SQLite has no server: its workers share the machine that holds the file."""
    if _is_postgres(session):
        return session.execute(select(func.now())).scalar_one()
    return utcnow()


def claim(session: Session, worker_id: str, lease_seconds: float, now: datetime | None = None) -> Claim | None:
    """Claim the next runnable job for ``worker_id`` (queued -> running) and commit; None when idle."""
    if not _any(session, select(Job.id).where(Job.status == JobStatus.QUEUED)):
        return None  # idle polls never take the write lock
    begin_write(session)
    earlier = aliased(Job)
    unfinished_before = (
        select(earlier.id)
        .where(earlier.model_id == Job.model_id, earlier.id < Job.id, earlier.status.in_(UNFINISHED))
        .exists()
    )
    query = select(Job).where(Job.status == JobStatus.QUEUED, ~unfinished_before).order_by(Job.id).limit(1)
    if _is_postgres(session):
        query = query.with_for_update(skip_locked=True, of=Job)
    job = session.scalar(query)
    if job is None:
        session.rollback()
        return None
    lease_owner = f"{worker_id}/{uuid.uuid4().hex[:8]}"  # unique per claim: a retried job gets a new token
    assert job.task_id is not None and job.model_id is not None  # detached only once finished (failed_import.py)
    state_machine.start(session, job, lease_owner, lease_seconds, now or database_now(session))
    held = Claim(
        job_id=job.id, task_id=job.task_id, model_id=job.model_id, lease_owner=lease_owner, attempt=job.attempt
    )
    session.commit()
    return held


def lock_owned_job(session: Session, held: Claim) -> Job | None:
    """In a write transaction: the job row, locked, if ``held`` still owns it (running, same lease); else None."""
    query = select(Job).where(Job.id == held.job_id).execution_options(populate_existing=True)
    if _is_postgres(session):
        query = query.with_for_update()
    job = session.scalar(query)
    if job is None or job.status != JobStatus.RUNNING or job.lease_owner != held.lease_owner:
        return None
    return job


def heartbeat(
    session: Session, held: Claim, lease_seconds: float, progress: dict | None = None, now: datetime | None = None
) -> Heartbeat:
    """Renew the lease (and record progress, when given); tells whether the job is still ours and
    whether a user asked to cancel it. Commits."""
    begin_write(session)
    job = lock_owned_job(session, held)
    if job is None:
        session.rollback()
        return Heartbeat(owned=False, cancel_requested=False)
    now = now or database_now(session)
    job.heartbeat_at = now
    job.lease_expires_at = now + timedelta(seconds=lease_seconds)
    if progress is not None:
        job.progress = {**carried(job.progress), **progress}
    beat = Heartbeat(owned=True, cancel_requested=bool(job.cancel_requested))
    session.commit()
    return beat


def reap(session: Session, now: datetime | None = None) -> dict[int, JobStatus]:
    """Requeue every running job whose lease expired (attempt + 1), or fail it after its last
    attempt; returns {job id: new status}. Commits."""
    expired = (Job.status == JobStatus.RUNNING) & (Job.lease_expires_at < (now or database_now(session)))
    if not _any(session, select(Job.id).where(expired)):
        return {}
    begin_write(session)
    query = select(Job).where(expired).order_by(Job.id)
    if _is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    outcome = {job.id: state_machine.expire_lease(session, job) for job in session.scalars(query).all()}
    session.commit()
    return outcome


def release(session: Session, held: Claim, reason: str) -> bool:
    """Hand a running job back to the queue (worker shutting down); False if it was no longer ours."""
    begin_write(session)
    job = lock_owned_job(session, held)
    if job is None:
        session.rollback()
        return False
    state_machine.release(session, job, reason)
    session.commit()
    return True


def retry_lost(session: Session, held: Claim, reason: str) -> JobStatus | None:
    """A job whose update lost one of its processes: retried or failed exactly as a job whose
    worker was lost (``state_machine.expire_lease``); None if it was no longer ours."""
    begin_write(session)
    job = lock_owned_job(session, held)
    if job is None:
        session.rollback()
        return None
    status = state_machine.expire_lease(session, job, reason)
    session.commit()
    return status


def finish(session: Session, held: Claim, outcome: str, reason: str) -> bool:
    """End a job we still own as failed or cancelled (success goes through the update's own
    transaction); False if the lease was lost meanwhile (then the job is someone else's)."""
    begin_write(session)
    job = lock_owned_job(session, held)
    if job is None:
        session.rollback()
        return False
    {JobStatus.FAILED: state_machine.fail, JobStatus.CANCELLED: state_machine.cancel}[JobStatus(outcome)](
        session, job, reason
    )
    session.commit()
    return True
