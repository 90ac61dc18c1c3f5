"""A failed or cancelled import stores nothing: its model, task and dataset rows go, its job stays.

POST /models stores the model row (which takes the name), the import task, its dataset and its job
in one transaction before a worker builds version 1. When that job ends failed or cancelled
(``app/jobs/state_machine.py`` calls ``discard_failed_import`` on every such transition) the model
never had a version, and keeping its rows would hold the name for a model that can never serve. So,
in the same transaction as the status change:

* the model's other unfinished jobs (tasks taught to it while the import waited) are cancelled,
  saying why;
* every job of the model stays as a record (status, reason, times), detached from the rows it
  named (``task_id`` and ``model_id`` empty, ``model_name`` the name), so ``GET /jobs/{id}`` still
  answers with the reason;
* the model's tasks, their datasets (unless another task shares one), its feedback rows and the
  model row are deleted, so the name can be imported again.

A model that has a version is never touched (an import that failed cannot have one: its version
and its job's success are one commit, ``app/updates/apply.py``). The artifacts the import stored
(the weights, the base data) are referred to by no row any more; garbage collection removes them
once past its grace period (``app/registry/collection.py``), as after a deleted model.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.db.tables import (
    AliasChange,
    Dataset,
    FeedbackPolicy,
    Job,
    LoggedSample,
    Model,
    ModelVersion,
    Task,
    TriggerDecision,
)
from app.imports import IMPORT_STRATEGY
from app.jobs.status import UNFINISHED


def discard_failed_import(session: Session, job: Job, task: Task | None, cancel) -> bool:
    """If ``job`` (just moved to failed or cancelled) imported a model that has no version, remove
    that model's rows as the module docstring says; True if it did. ``cancel(session, job, reason)``
    is the state machine's own cancel, for the model's other unfinished jobs."""
    if task is None or task.strategy != IMPORT_STRATEGY or job.model_id is None:
        return False
    model = session.get(Model, job.model_id)
    if model is None or session.scalar(select(ModelVersion.id).where(ModelVersion.model_id == model.id).limit(1)):
        return False
    name = model.name
    jobs = list(session.scalars(select(Job).where(Job.model_id == model.id).order_by(Job.id)))
    for other in jobs:
        if other.id != job.id and other.status in UNFINISHED:
            cancel(session, other, f"model {name!r} was not imported (import job {job.id} {job.status})")
    job.error = f"{job.error or job.status}; the import stored nothing, and the name {name!r} is free again"
    for record in jobs:
        record.model_name, record.model_id, record.task_id = name, None, None
    session.flush()
    dataset_ids = list(session.scalars(select(Task.dataset_id).where(Task.model_id == model.id)))
    for table in (LoggedSample, TriggerDecision, FeedbackPolicy, AliasChange):
        session.execute(delete(table).where(table.model_id == model.id))
    session.execute(delete(Task).where(Task.model_id == model.id))
    shared = select(Task.id).where(Task.dataset_id == Dataset.id).exists()
    session.execute(delete(Dataset).where(Dataset.id.in_(dataset_ids), ~shared))
    session.execute(delete(Model).where(Model.id == model.id))
    return True
