"""Deleting a version or a whole model (admin), never anything a kept version still needs.

The rules, in the order they are checked (each refusal is a 409 that says what to do instead):

* **A model** can be deleted when none of its jobs is queued or running (cancel them first). Its
  versions, accuracy rows, alias changes, jobs, tasks and their dataset rows go, in one transaction.
* **A version** can be deleted when it is not the serving version (serve another first), when no
  other version was learnt from it (no version names it as parent: delete those first, newest
  first), and when none of the model's jobs is running (a running update may have started from
  it, and would commit a child of a deleted version). Its accuracy rows and the alias changes that
  name it go with it; its task, the task's job and dataset stay (what was taught, and what the gate
  decided), so the task can be taught again. A row in ``alias_changes`` records the delete, so API
  replicas drop the version from their caches (app/predict/served_versions.py).

So the parent chain of every kept version is whole. Artifacts are never deleted by row: after the
rows are committed, garbage collection (app/registry/collection.py) removes what *no* remaining row
refers to, directly or through a kept version's consolidation manifest (per-task Fisher, anchors and
evaluation splits are shared by every later version, and identical bytes by any model), and only
once older than the grace period. A crash between the two leaves garbage for the next collection,
never a row without its artifacts.

Version numbers are ``max + 1`` per model: deleting the newest version frees its number for the
next update.
"""

from __future__ import annotations

import logging

from sqlalchemy import CursorResult, Delete, delete, or_, select, update
from sqlalchemy.orm import Session

from app.db.session import begin_write
from app.db.tables import (
    Accuracy,
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
from app.errors import Conflict
from app.jobs.queue import UNFINISHED
from app.jobs.status import JobStatus
from app.registry.collection import collect_garbage
from app.registry.schemas import CollectionOut, DeletedOut
from app.registry.service import locked_model, resolve_version
from app.storage.artifacts import ArtifactStore

log = logging.getLogger(__name__)


def busy_job(session: Session, model: Model, statuses) -> Job | None:
    return session.scalar(
        select(Job).where(Job.model_id == model.id, Job.status.in_(statuses)).order_by(Job.id).limit(1)
    )


def delete_version(session: Session, store: ArtifactStore, grace_seconds: float, name: str, number: int) -> DeletedOut:
    """Delete one version (rules in the module docstring), commit, then collect the artifacts it freed."""
    begin_write(session)
    model = locked_model(session, name)
    version = resolve_version(session, model, number)
    if model.serving_version_id == version.id:
        raise Conflict(
            f"version {number} of model {name!r} is serving; serve another version first "
            f"(PUT /models/{name}/serving-version), then delete it"
        )
    child = session.scalar(
        select(ModelVersion.number).where(ModelVersion.parent_id == version.id).order_by(ModelVersion.number).limit(1)
    )
    if child is not None:
        raise Conflict(
            f"version {child} of model {name!r} was learnt from version {number} (its parent); a kept "
            f"version's lineage stays whole: delete version {child} first"
        )
    running = busy_job(session, model, (JobStatus.RUNNING,))
    if running is not None:
        raise Conflict(
            f"job {running.id} of model {name!r} is running and may have started from version {number}; "
            "delete it once the job has finished"
        )
    session.execute(delete(Accuracy).where(Accuracy.model_version_id == version.id))
    session.execute(
        delete(AliasChange).where(
            or_(AliasChange.from_version_id == version.id, AliasChange.to_version_id == version.id)
        )
    )
    if model.serving_version_id is not None:  # the record of the delete, and the stamp replicas watch
        session.add(
            AliasChange(
                model_id=model.id,
                from_version_id=model.serving_version_id,
                to_version_id=model.serving_version_id,
                reason=f"version {number} deleted",
            )
        )
        session.flush()
    # its logged predictions stay (their labels still teach), as samples of no known version
    session.execute(
        update(LoggedSample).where(LoggedSample.model_version_id == version.id).values(model_version_id=None)
    )
    session.execute(delete(ModelVersion).where(ModelVersion.id == version.id))
    session.info["alias_changed"] = True  # this process's serving directory looks again at once
    session.commit()
    return DeletedOut(
        model=name, versions=[number], tasks=0, jobs=0, artifacts=collect_after_delete(session, store, grace_seconds)
    )


def delete_model(session: Session, store: ArtifactStore, grace_seconds: float, name: str) -> DeletedOut:
    """Delete a model and every row of it (rules in the module docstring), commit, then collect the
    artifacts that freed."""
    begin_write(session)
    model = locked_model(session, name)
    unfinished = busy_job(session, model, UNFINISHED)
    if unfinished is not None:
        raise Conflict(
            f"job {unfinished.id} of model {name!r} is {unfinished.status}; cancel it "
            f"(POST /jobs/{unfinished.id}/cancel) or let it finish, then delete the model"
        )
    numbers = list(
        session.scalars(
            select(ModelVersion.number).where(ModelVersion.model_id == model.id).order_by(ModelVersion.number)
        )
    )
    task_ids = select(Task.id).where(Task.model_id == model.id)
    dataset_ids = list(session.scalars(select(Task.dataset_id).where(Task.model_id == model.id)))
    session.execute(update(Model).where(Model.id == model.id).values(serving_version_id=None))
    for feedback_table in (LoggedSample, TriggerDecision, FeedbackPolicy):
        session.execute(delete(feedback_table).where(feedback_table.model_id == model.id))
    session.execute(delete(AliasChange).where(AliasChange.model_id == model.id))
    session.execute(
        delete(Accuracy).where(
            or_(
                Accuracy.task_id.in_(task_ids),
                Accuracy.model_version_id.in_(select(ModelVersion.id).where(ModelVersion.model_id == model.id)),
            )
        )
    )
    session.execute(delete(ModelVersion).where(ModelVersion.model_id == model.id))
    jobs = deleted_rows(session, delete(Job).where(Job.model_id == model.id))
    tasks = deleted_rows(session, delete(Task).where(Task.model_id == model.id))
    session.execute(
        delete(Dataset).where(
            Dataset.id.in_(dataset_ids), ~select(Task.id).where(Task.dataset_id == Dataset.id).exists()
        )
    )
    session.execute(delete(Model).where(Model.id == model.id))
    session.info["alias_changed"] = True  # this process's serving directory looks again at once
    session.commit()
    return DeletedOut(
        model=name,
        versions=numbers,
        tasks=tasks,
        jobs=jobs,
        artifacts=collect_after_delete(session, store, grace_seconds),
    )


def deleted_rows(session: Session, statement: Delete) -> int:
    """How many rows a DELETE removed (a DELETE's result is a cursor result, which counts them)."""
    result = session.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount


def collect_after_delete(session: Session, store: ArtifactStore, grace_seconds: float) -> CollectionOut | None:
    """The collection after a committed delete; None (logged) when it cannot run now: the rows are gone
    either way, and the next collection removes what they referred to."""
    try:
        return CollectionOut.model_validate(collect_garbage(session, store, grace_seconds))
    except Exception:
        log.exception("the artifacts freed by a delete were not collected; the next collection will")
        return None
