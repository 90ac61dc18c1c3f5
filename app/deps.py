"""Typed dependencies of the routes, as in full-stack-fastapi-template's ``deps.py``.

A route's signature says what it needs — ``session: SessionDep, store: StoreDep`` — and never
reaches into ``request.app.state`` itself, so tests can replace any of these with
``app.dependency_overrides[get_store] = ...``. The objects themselves are built once per app
in app/main.py (`create_app`) and kept on ``app.state``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.db.session import write_locking
from app.predict.cache import LearnerCache
from app.predict.service import Serving
from app.settings import Settings
from app.storage.artifacts import ArtifactStore


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_engine(request: Request) -> Engine:
    return request.app.state.engine


async def get_store(request: Request) -> ArtifactStore:
    return request.app.state.store


async def get_learners(request: Request) -> LearnerCache:
    return request.app.state.serving.learners


async def get_serving(request: Request) -> Serving:
    """Async: a sync dependency would cost every prediction a hop to the thread pool."""
    return request.app.state.serving


INT64_MAX = 2**63 - 1
RowId = Annotated[int, Path(ge=1, le=INT64_MAX, description="a row id (64-bit)")]
"""A path id: bounded so that no integer past 64 bits reaches the database."""


def get_embedded_worker(request: Request):
    """The embedded worker thread (app/updates/loop.py EmbeddedWorker), or None when there is none."""
    return getattr(request.app.state, "worker", None)


SettingsDep = Annotated[Settings, Depends(get_settings)]
EmbeddedWorkerDep = Annotated[object | None, Depends(get_embedded_worker)]
EngineDep = Annotated[Engine, Depends(get_engine)]
StoreDep = Annotated[ArtifactStore, Depends(get_store)]
LearnersDep = Annotated[LearnerCache, Depends(get_learners)]
ServingDep = Annotated[Serving, Depends(get_serving)]


def get_session(engine: EngineDep) -> Iterator[Session]:
    """For reads, and writes that do not read first."""
    with Session(engine, expire_on_commit=False) as session:
        yield session


def get_write_session(engine: EngineDep) -> Iterator[Session]:
    """For routes that read and then write (cancel, promote, submit, set the serving version): on
    SQLite a transaction that started reading cannot take the write lock once a worker has written
    meanwhile ("database is locked"), so these take it when their transaction begins."""
    with Session(write_locking(engine), expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
WriteSessionDep = Annotated[Session, Depends(get_write_session)]
