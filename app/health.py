"""/livez (the process answers, and says which: its process id tells replicas apart) and /readyz (the
database is reachable and migrated to head, and the embedded worker thread, where there is one, is still
running: a service that accepts tasks it will never train is not ready); the Open Inference Protocol's
/v2/health/* (app/predict/router.py) answer the same questions."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine, text

from app.db.migrate import migration_heads
from app.deps import EmbeddedWorkerDep, EngineDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok", "detail": None}]})

    status: str
    detail: str | None = None


class Liveness(Health):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok", "detail": None, "process": 4242}]})

    process: int = Field(
        description="the id of the process that answered: under `retain serve --workers N`, which replica"
    )


@router.get("/livez", response_model=Liveness, summary="The process is alive")
def livez() -> Liveness:
    return Liveness(status="ok", process=os.getpid())


@router.get(
    "/readyz",
    response_model=Health,
    summary="The database is reachable and its schema is at the migration head",
    responses={
        503: {
            "description": "not ready",
            "content": {
                "application/json": {
                    "example": {"status": "not ready", "detail": "database schema at abc123, head is def456"}
                }
            },
        }
    },
)
def readyz(engine: EngineDep, worker: EmbeddedWorkerDep):
    problem = database_problem(engine)
    if problem is None and worker is not None and not worker.alive:
        problem = "the embedded worker thread has stopped: queued tasks would never train"
    if problem is not None:
        return JSONResponse(status_code=503, content={"status": "not ready", "detail": problem})
    return Health(status="ok")


def database_problem(engine: Engine) -> str | None:
    """Why the database cannot serve (unreachable, or not at the migration head), or None."""
    try:
        with engine.connect() as connection:
            current = set(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    except Exception as error:  # any failure to reach or read the database means not ready
        return f"database unavailable: {error}"
    heads = migration_heads()
    if current != heads:
        return f"database schema at {sorted(current)}, migration head is {sorted(heads)}"
    return None
