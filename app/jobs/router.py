"""GET /jobs, GET /jobs/{id}, POST /jobs/{id}/cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.auth.deps import PredictKey, TrainKey
from app.deps import RowId, SessionDep, WriteSessionDep
from app.jobs import service
from app.jobs.schemas import JobOut
from app.jobs.status import JobStatus
from app.openapi import Responses

router = APIRouter(prefix="/jobs", tags=["jobs"])

NOT_FOUND: Responses = {
    404: {
        "description": "unknown job",
        "content": {"application/json": {"example": {"detail": "job 99 does not exist"}}},
    }
}


@router.get("", response_model=list[JobOut], summary="Jobs, newest first")
def list_jobs(
    session: SessionDep,
    caller: PredictKey,
    model: str | None = None,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[JobOut]:
    return service.list_jobs(session, model=model, status=status, limit=limit)


@router.get("/{job_id}", response_model=JobOut, responses=NOT_FOUND, summary="A job's status and progress")
def get_job(job_id: RowId, session: SessionDep, caller: PredictKey) -> JobOut:
    return service.get_job(session, job_id)


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a queued job or stop a running one",
    responses={
        **NOT_FOUND,
        409: {
            "description": "the job already finished",
            "content": {
                "application/json": {
                    "example": {"detail": "job 3 already finished (succeeded); there is nothing to cancel"}
                }
            },
        },
    },
)
def cancel_job(job_id: RowId, session: WriteSessionDep, caller: TrainKey) -> JobOut:
    return service.cancel_job(session, job_id)
