"""Apply one update, exactly once: where a task is learnt, stored and measured.

1. Read the plan (model, task, parent = the model's serving version) in a short transaction.
2. Load the parent's learner (weights + consolidation: Fisher and anchors), or create the
   learner on the model's first task; learn the task with the validation split of every
   learnt task (λ search and the forgetting gate use validation only).
3. Evaluate every learnt task on its *test* split (the accuracy table).
4. Write the artifacts (content-addressed, so a retry rewrites nothing).
5. ONE transaction: check the lease is still ours, then the version row (+ λ, λ search,
   Fisher recipe, validation numbers), one accuracy row per learnt task, and either
   promote (serving alias) + job succeeded, or — when the forgetting gate trips — keep the
   version unpromoted and end the job `rejected` with the numbers.

A crash anywhere before the commit leaves no version row (at most unreferenced artifacts)
and the job is retried when its lease expires; after the commit it is done. A worker that
lost its lease cannot commit (the ownership check and ``UNIQUE(model_versions.task_id)``),
so a retried job yields exactly one version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.datasets.storage import load_dataset_splits
from app.db.session import begin_write
from app.db.tables import Accuracy, Dataset, Model, ModelVersion, Task
from app.jobs import queue, state_machine
from app.jobs.queue import Claim
from app.jobs.status import JobStatus
from app.learning import ContinualLearner, Evaluation, TaskData, TrainConfig, TrainingStopped, UpdateResult
from app.learning.training import resolve_device
from app.registry.service import set_serving_version
from app.registry.versions import load_version
from app.storage.artifacts import ArtifactRef, ArtifactStore
from app.updates.gate import GateDecision, forgetting_gate
from app.updates.lease import LeaseKeeper

log = logging.getLogger(__name__)

TRAIN_CONFIG_KEYS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "seed")


class LeaseLost(Exception):
    """The job's lease expired while we worked on it: another worker owns it now."""


@dataclass
class UpdatePlan:
    """What the update needs from the database, read before training (no transaction stays open)."""

    model: Model
    task: Task
    parent: ModelVersion | None
    datasets: dict[int, Dataset]  # task id -> dataset row, for every task of the model
    max_forgetting: float


def read_plan(session: Session, held: Claim, default_max_forgetting: float) -> UpdatePlan:
    task = session.get(Task, held.task_id)
    model = session.get(Model, held.model_id)
    parent = session.get(ModelVersion, model.serving_version_id) if model.serving_version_id else None
    rows = session.execute(select(Task.id, Dataset).join(Dataset, Task.dataset_id == Dataset.id)
                           .where(Task.model_id == model.id)).all()
    max_forgetting = model.max_forgetting if model.max_forgetting is not None else default_max_forgetting
    return UpdatePlan(model=model, task=task, parent=parent, datasets={task_id: ds for task_id, ds in rows},
                      max_forgetting=max_forgetting)


def new_learner(model: Model, first_task: TaskData) -> ContinualLearner:
    """The model's first task fixes the input scale: samples sent as uint8 (images) are scaled by
    1/255, now and in every later update and prediction."""
    input_scale = 1 / 255 if np.asarray(first_task.x).dtype == np.uint8 else 1.0
    return ContinualLearner.create(model.architecture, tuple(model.input_shape), family=model.family,
                                   architecture_options=model.options or {}, input_scale=input_scale)


def train_config_of(task: Task, device: str) -> TrainConfig:
    """The task's training settings over the library's defaults. Epochs the user gave are the budget,
    exactly; without them the library chooses it (4 epochs, or more to reach ``min_steps`` on a small task)."""
    hyperparameters = task.hyperparameters or {}
    given = {key: hyperparameters[key] for key in TRAIN_CONFIG_KEYS if hyperparameters.get(key) is not None}
    return TrainConfig(device=device, **given, **({"min_steps": 0} if "epochs" in given else {}))


def run_update(session_factory, store: ArtifactStore, settings, held: Claim, keeper: LeaseKeeper) -> JobStatus:
    """Steps 1-5 of the module docstring; returns the job's new status (succeeded | rejected | cancelled)."""
    with session_factory() as session:
        plan = read_plan(session, held, settings.default_max_forgetting)
    model, task = plan.model, plan.task
    device = str(resolve_device(settings.device))
    keeper.set_phase("load", 0.0)
    splits_of = {task.id: load_dataset_splits(store, plan.datasets[task.id].artifact_uri,
                                              plan.datasets[task.id].artifact_sha256)}
    if plan.parent is not None:
        learner = load_version(store, plan.parent, with_consolidation=True)  # Fisher + anchors: it learns on
    else:
        learner = new_learner(model, splits_of[task.id]["train"])
    for key in learner.task_keys:
        dataset = plan.datasets[int(key)]
        splits_of[int(key)] = load_dataset_splits(store, dataset.artifact_uri, dataset.artifact_sha256)
    learner.to(device)
    learner.ewc.fisher = replace(learner.ewc.fisher, max_samples=settings.fisher_samples)  # this worker's budget

    result = learner.learn_task(
        str(task.id), splits_of[task.id]["train"], strategy=task.strategy,
        validation={str(task_id): splits["validation"] for task_id, splits in splits_of.items()
                    if len(splits["validation"].y) > 0},
        train_config=train_config_of(task, device), ewc_lambda=(task.hyperparameters or {}).get("ewc_lambda"),
        progress=keeper.report, should_stop=keeper.should_stop,
    )
    if keeper.lease_lost:
        raise LeaseLost()

    keeper.set_phase("evaluate")
    per_task = learner.predicts_per_task  # scored as the model answers: per task (ccll) or over every label
    accuracy = {task_id: learner.evaluate(splits["test"], task_key=str(task_id) if per_task else None)
                for task_id, splits in splits_of.items() if len(splits["test"].y) > 0}
    keeper.set_phase("store")
    weights = store.put_tensors(*learner.export_weights())
    consolidation = store.put_tensors(*learner.export_consolidation())
    gate = forgetting_gate(result, plan.max_forgetting)
    with session_factory() as session:
        return commit_update(session, held=held, plan=plan, result=result, weights=weights,
                             consolidation=consolidation, accuracy=accuracy, gate=gate,
                             last_progress=keeper.latest_progress())


def commit_update(session: Session, *, held: Claim, plan: UpdatePlan, result: UpdateResult, weights: ArtifactRef,
                  consolidation: ArtifactRef, accuracy: dict[int, Evaluation], gate: GateDecision,
                  last_progress: dict | None = None) -> JobStatus:
    """Step 5: everything the update produced becomes visible at once, or not at all."""
    begin_write(session)
    job = queue.lock_owned_job(session, held)
    if job is None:
        session.rollback()
        raise LeaseLost()
    if job.cancel_requested:  # asked while we were storing: the user's word wins over a finished update
        state_machine.cancel(session, job, "cancelled while running (after training, before it was stored)")
        session.commit()
        return JobStatus.CANCELLED
    model = session.get(Model, plan.model.id)
    number = (session.scalar(select(func.max(ModelVersion.number)).where(ModelVersion.model_id == model.id)) or 0) + 1
    version = ModelVersion(
        model_id=model.id, number=number, parent_id=plan.parent.id if plan.parent else None, task_id=plan.task.id,
        weights_uri=weights.uri, weights_sha256=weights.sha256, weights_size=weights.size,
        consolidation_uri=consolidation.uri, consolidation_sha256=consolidation.sha256,
        consolidation_size=consolidation.size, ewc_lambda=result.ewc_lambda, lambda_search=result.lambda_search,
        fisher_recipe=result.fisher_recipe, train_config=result.train_config, validation=gate.as_dict(),
        train_seconds=result.train_seconds, search_seconds=result.search_seconds, promoted=gate.passed,
    )
    session.add(version)
    session.flush()
    for task_id, evaluation in accuracy.items():
        session.add(Accuracy(model_version_id=version.id, task_id=task_id, accuracy=evaluation.accuracy,
                             loss=evaluation.loss, n_test=evaluation.n))
    if gate.passed:
        set_serving_version(session, model, version, f"task {plan.task.id} learnt")
        state_machine.succeed(session, job, last_progress)
    else:
        state_machine.reject(session, job, gate.reason(number, plan.task.id), last_progress)
    session.commit()
    log.info("job %s: version %s of model %s %s", held.job_id, number, model.name,
             "promoted" if gate.passed else f"stored, not promoted ({gate.tripped_by} forgot)")
    return JobStatus(job.status)


def run_job(session_factory, store: ArtifactStore, settings, held: Claim, shutdown) -> JobStatus | None:
    """Run a claimed job under its lease; whatever happens, the job ends in a clear state:
    succeeded/rejected (committed), cancelled, failed (with the reason), back in the queue
    (shutdown), or untouched when the lease was lost (the new owner finishes it).

    Returns the status this worker left the job in, or None when it lost the lease and so
    left the job to its new owner."""
    with LeaseKeeper(session_factory, held, settings, shutdown) as keeper:
        try:
            return run_update(session_factory, store, settings, held, keeper)
        except (TrainingStopped, LeaseLost) as stop:
            if isinstance(stop, LeaseLost) or keeper.lease_lost:
                log.warning("job %s: lease lost; another worker will finish it", held.job_id)
                return None
            with session_factory() as session:
                if keeper.cancel_requested:
                    queue.finish(session, held, JobStatus.CANCELLED, "cancelled while running")
                    return JobStatus.CANCELLED
                queue.release(session, held, "worker shut down; requeued")
                return JobStatus.QUEUED
        except Exception as error:  # an update that cannot be applied must not kill the worker
            log.exception("job %s failed", held.job_id)
            reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
            with session_factory() as session:
                queue.finish(session, held, JobStatus.FAILED, reason)
            return JobStatus.FAILED
