"""Job reads and cancellation for the API (status changes themselves go through state_machine.py)."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.db.tables import Job, Model, ModelVersion
from app.errors import Conflict, NotFound
from app.jobs import state_machine
from app.jobs.schemas import JobOut, JobProgress
from app.jobs.status import TERMINAL_STATUSES, JobStatus


def job_out(session: Session, job: Job) -> JobOut:
    name = session.get_one(Model, job.model_id).name if job.model_id is not None else job.model_name or ""
    version_number = (
        session.scalar(select(ModelVersion.number).where(ModelVersion.task_id == job.task_id))
        if job.task_id is not None
        else None
    )
    progress = dict(job.progress or {})
    return JobOut(
        id=job.id,
        task_id=job.task_id,
        model=name,
        status=job.status,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        progress=JobProgress(**{k: v for k, v in progress.items() if k in JobProgress.model_fields}),
        error=job.error,
        cancel_requested=job.cancel_requested,
        model_version=version_number,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def get_job_row(session: Session, job_id: int, lock: bool = False) -> Job:
    """The job row; ``lock`` reads it FOR UPDATE (Postgres) for a read-then-write."""
    job = session.get(Job, job_id, with_for_update=True if lock else None, populate_existing=lock)
    if job is None:
        raise NotFound(f"job {job_id} does not exist")
    return job


def get_job(session: Session, job_id: int) -> JobOut:
    return job_out(session, get_job_row(session, job_id))


def list_jobs(
    session: Session, *, model: str | None = None, status: JobStatus | None = None, limit: int = 200
) -> list[JobOut]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if model is not None:
        query = query.outerjoin(Model, Job.model_id == Model.id).where(  # a failed import's job keeps the name
            or_(Model.name == model, Job.model_name == model)
        )
    if status is not None:
        query = query.where(Job.status == status)
    return [job_out(session, job) for job in session.scalars(query)]


def cancel_job(session: Session, job_id: int) -> JobOut:
    """A queued job is cancelled at once; a running one is asked to stop (the worker checks between steps).

    Called with a write session (the SQLite write lock is taken when its transaction begins) and
    the row read FOR UPDATE on Postgres, so a worker claiming the job at the same moment either
    sees it cancelled or is seen running."""
    job = get_job_row(session, job_id, lock=True)
    if job.status in TERMINAL_STATUSES:
        raise Conflict(f"job {job_id} already finished ({job.status}); there is nothing to cancel")
    state_machine.request_cancel(session, job)
    session.commit()
    session.refresh(job)
    return job_out(session, job)
