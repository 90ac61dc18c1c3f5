"""The registry read side and the serving alias: models, versions, the accuracy matrix.

A model's serving version is what predictions use by default; changing it (rollback,
roll forward, promote) is recorded as an alias change so one can always tell which
version served when.
"""

from __future__ import annotations

import itertools

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from app.db.tables import Accuracy, AliasChange, Model, ModelVersion, Task
from app.errors import InvalidInput, NotFound
from app.learning import accuracy_matrix_metrics
from app.registry.schemas import (
    AccuracyMatrixOut,
    MatrixCell,
    MatrixRow,
    MatrixTask,
    ModelOut,
    ParameterCounts,
    ServingVersionOut,
    VersionOut,
)

_alias_commits = itertools.count(1)
_committed_alias_changes = 0


def committed_alias_changes() -> int:
    """Serving-alias changes committed by this process: replicas poll the alias stamp
    (app/predict/served_versions.py); this tells the one that made a change at once."""
    return _committed_alias_changes


@event.listens_for(Session, "after_commit")
def _note_alias_commit(session: Session) -> None:
    global _committed_alias_changes
    if session.info.pop("alias_changed", False):
        _committed_alias_changes = next(_alias_commits)


@event.listens_for(Session, "after_rollback")
def _forget_alias_change(session: Session) -> None:
    session.info.pop("alias_changed", None)


def get_model_by_name(session: Session, name: str) -> Model:
    model = session.scalar(select(Model).where(Model.name == name))
    if model is None:
        raise NotFound(f"model {name!r} does not exist")
    return model


def locked_model(session: Session, name: str) -> Model:
    """The model's row for a transaction that changes its versions or alias: locked (FOR UPDATE on Postgres;
    on SQLite the transaction holds the write lock), so a delete and an alias move never cross."""
    model = session.scalar(select(Model).where(Model.name == name).with_for_update())
    if model is None:
        raise NotFound(f"model {name!r} does not exist")
    return model


def versions_of(session: Session, model: Model) -> list[ModelVersion]:
    return list(
        session.scalars(select(ModelVersion).where(ModelVersion.model_id == model.id).order_by(ModelVersion.number))
    )


def list_versions(session: Session, name: str) -> list[ModelVersion]:
    return versions_of(session, get_model_by_name(session, name))


def serving_number(session: Session, model: Model) -> int | None:
    if model.serving_version_id is None:
        return None
    return session.scalar(select(ModelVersion.number).where(ModelVersion.id == model.serving_version_id))


def resolve_version(session: Session, model: Model, number: int | None) -> ModelVersion:
    """The version asked for, or the serving one; NotFound when there is none."""
    if number is None:
        if model.serving_version_id is None:
            raise NotFound(
                f"model {model.name!r} has no serving version yet (its first task is still training, "
                "or no update was promoted)"
            )
        return session.get_one(ModelVersion, model.serving_version_id)
    version = session.scalar(
        select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.number == number)
    )
    if version is None:
        raise NotFound(f"model {model.name!r} has no version {number}")
    return version


def model_out(
    session: Session, model: Model, parameter_counts: dict | None = None, replay_memory: dict | None = None
) -> ModelOut:
    n_versions = session.scalar(select(func.count()).select_from(ModelVersion).where(ModelVersion.model_id == model.id))
    n_tasks = session.scalar(select(func.count()).select_from(Task).where(Task.model_id == model.id))
    counts = None
    if parameter_counts is not None:
        base = parameter_counts.get("base") or 0
        per_task = {str(k): int(v) for k, v in (parameter_counts.get("per_task") or {}).items()}
        counts = ParameterCounts(
            base=base,
            per_task=per_task,
            total=parameter_counts.get("total", base + sum(per_task.values())),
            per_task_percent_of_base={k: round(100.0 * v / base, 3) for k, v in per_task.items()} if base else {},
        )
    return ModelOut(
        replay_memory=replay_memory,
        name=model.name,
        architecture=model.architecture,
        family=model.family,
        input_shape=list(model.input_shape),
        options=model.options or {},
        serving_version=serving_number(session, model),
        max_forgetting=model.max_forgetting,
        n_versions=n_versions,
        n_tasks=n_tasks,
        parameter_counts=counts,
        created_at=model.created_at,
    )


def list_models(session: Session) -> list[ModelOut]:
    return [model_out(session, model) for model in session.scalars(select(Model).order_by(Model.id))]


def get_model(session: Session, name: str, load_learner=None) -> ModelOut:
    """One model; with ``load_learner(version)`` also the serving version's parameter counts (per task for ccll)."""
    model = get_model_by_name(session, name)
    counts, memory = None, None
    if model.serving_version_id is not None:
        serving = session.get_one(ModelVersion, model.serving_version_id)
        memory = (serving.train_config or {}).get("replay_memory")  # recorded by the update that made it
        if load_learner is not None:
            counts = load_learner(serving).parameter_counts()
    return model_out(session, model, counts, memory)


def version_out(
    version: ModelVersion, numbers: dict[int, int], tasks: dict[int, Task], serving_id: int | None
) -> VersionOut:
    task = tasks.get(version.task_id) if version.task_id is not None else None
    return VersionOut(
        id=version.id,
        number=version.number,
        parent_number=numbers.get(version.parent_id) if version.parent_id is not None else None,
        task_id=version.task_id,
        task_name=task.name if task else None,
        strategy=task.strategy if task else None,
        strategy_choice=(version.train_config or {}).get("strategy_choice"),
        ewc_lambda=version.ewc_lambda,
        lambda_search=version.lambda_search,
        fisher_recipe=version.fisher_recipe,
        train_config=version.train_config,
        validation=version.validation,
        capacity_warning=(version.validation or {}).get("capacity_warning"),
        new_labels=(version.validation or {}).get("new_labels") or [],
        train_seconds=version.train_seconds,
        search_seconds=version.search_seconds,
        promoted=version.promoted,
        serving=version.id == serving_id,
        weights_uri=version.weights_uri,
        weights_sha256=version.weights_sha256,
        weights_size=version.weights_size,
        consolidation_sha256=version.consolidation_sha256,
        consolidation_size=version.consolidation_size,
        created_at=version.created_at,
    )


def get_versions(session: Session, name: str) -> list[VersionOut]:
    model = get_model_by_name(session, name)
    versions = versions_of(session, model)
    numbers = {v.id: v.number for v in versions}
    tasks = {t.id: t for t in session.scalars(select(Task).where(Task.model_id == model.id))}
    return [version_out(v, numbers, tasks, model.serving_version_id) for v in versions]


def accuracy_matrix(session: Session, name: str) -> AccuracyMatrixOut:
    """Every version's row; R and its metrics over the promoted versions (the line users were served)."""
    model = get_model_by_name(session, name)
    versions = versions_of(session, model)
    tasks = {t.id: t for t in session.scalars(select(Task).where(Task.model_id == model.id))}
    cells: dict[int, list[Accuracy]] = {v.id: [] for v in versions}
    rows_of_accuracy = session.scalars(
        select(Accuracy)
        .join(ModelVersion, Accuracy.model_version_id == ModelVersion.id)
        .where(ModelVersion.model_id == model.id)
        .order_by(Accuracy.task_id)
    )
    for row in rows_of_accuracy:
        cells[row.model_version_id].append(row)
    learnt_order = [v.task_id for v in versions if v.promoted and v.task_id is not None]
    rows = [
        MatrixRow(
            model_version=v.number,
            task_id=v.task_id,
            task_name=tasks[v.task_id].name if v.task_id in tasks else None,
            promoted=v.promoted,
            serving=v.id == model.serving_version_id,
            accuracy=[
                MatrixCell(task_id=c.task_id, accuracy=c.accuracy, loss=c.loss, n_test=c.n_test) for c in cells[v.id]
            ],
        )
        for v in versions
    ]
    matrix = []
    for v in versions:
        if not v.promoted or v.task_id is None:
            continue
        by_task = {c.task_id: c.accuracy for c in cells[v.id]}
        matrix.append([by_task.get(task_id) for task_id in learnt_order])
    metrics = accuracy_matrix_metrics(matrix)
    task_ids = sorted({c.task_id for v in versions for c in cells[v.id]} | {t for t in learnt_order})
    return AccuracyMatrixOut(
        model=model.name,
        tasks=[MatrixTask(task_id=t, name=tasks[t].name if t in tasks else None) for t in task_ids],
        rows=rows,
        matrix=matrix,
        average_accuracy=metrics["average_accuracy"],
        bwt=metrics["bwt"],
        forgetting=metrics["forgetting"],
    )


def set_serving_version(session: Session, model: Model, version: ModelVersion, reason: str | None) -> int | None:
    """Point the model's alias at ``version`` and record the change; returns the previous number. Caller commits."""
    previous = serving_number(session, model)
    if version.model_id != model.id:
        raise InvalidInput(f"version {version.number} does not belong to model {model.name!r}")
    session.add(
        AliasChange(
            model_id=model.id, from_version_id=model.serving_version_id, to_version_id=version.id, reason=reason
        )
    )
    model.serving_version_id = version.id
    session.info["alias_changed"] = True
    return previous


def change_serving_version(session: Session, name: str, number: int, reason: str | None) -> ServingVersionOut:
    model = locked_model(session, name)
    version = resolve_version(session, model, number)
    previous = set_serving_version(session, model, version, reason or "serving version set through the API")
    session.commit()
    return ServingVersionOut(model=model.name, serving_version=version.number, previous_version=previous, reason=reason)
