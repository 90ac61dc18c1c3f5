"""What the API says about a job: its status and the progress of the update it runs."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from app.jobs.status import JobStatus

JOB_EXAMPLE: JsonDict = {
    "id": 7,
    "task_id": 7,
    "model": "digits",
    "status": "running",
    "attempt": 1,
    "max_attempts": 3,
    "progress": {
        "phase": "train",
        "fraction": 0.42,
        "epoch": 2,
        "epochs": 4,
        "loss": 0.3811,
        "samples_per_second": 5120.0,
        "eta_seconds": 6.5,
    },
    "error": None,
    "cancel_requested": False,
    "model_version": None,
    "created_at": "2025-01-01T12:00:00Z",
    "started_at": "2025-01-01T12:00:01Z",
    "finished_at": None,
}


class JobProgress(BaseModel):
    phase: str | None = Field(None, description="train | lambda_search | fisher | evaluate")
    fraction: float = Field(0.0, description="0..1 over the whole update")
    epoch: int | None = None
    epochs: int | None = None
    loss: float | None = None
    samples_per_second: float | None = None
    eta_seconds: float | None = None


class JobOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [JOB_EXAMPLE]})

    id: int
    task_id: int | None = Field(description="the task it learns; null on a failed import's job (nothing was stored)")
    model: str
    status: JobStatus = Field(description="queued | running | succeeded | failed | cancelled | rejected")
    attempt: int
    max_attempts: int
    progress: JobProgress
    error: str | None = Field(None, description="why the job failed, or the numbers that tripped the forgetting gate")
    cancel_requested: bool
    model_version: int | None = Field(None, description="number of the version this job produced")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
