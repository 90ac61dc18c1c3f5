"""Apply one update, exactly once: where a task is learnt, stored and measured.

1. Read the plan (model, task, parent = the model's serving version) in a short transaction.
2. Load the parent's learner (weights + consolidation: Fisher and anchors), or create the
   learner on the model's first task; learn the task with the validation split of every
   learnt task (λ search and the forgetting gate use validation only). Of an old task only
   its validation and test splits are read (the evaluation payload its manifest lists), not
   its training data, unless the strategy says it replays old training data. A task that asks
   for ``nproc`` > 1 is learnt by that many processes (``app.updates.ranks``); this worker
   still does steps 4 and 5, once.
3. Evaluate every learnt task on its *test* split (the accuracy table).
4. Write the artifacts (content-addressed, so a retry rewrites nothing): the weights, this
   task's evaluation splits and consolidation state, and the version's manifest, which refers
   to the earlier tasks' artifacts instead of copying them (``app.registry.consolidation``).
5. ONE transaction: check the lease is still ours, then the version row (+ λ, λ search,
   Fisher recipe, validation numbers), one accuracy row per learnt task, and either
   promote (serving alias) + job succeeded, or — when the forgetting gate trips — keep the
   version unpromoted and end the job `rejected` with the numbers.

A crash anywhere before the commit leaves no version row (at most unreferenced artifacts, which
garbage collection removes later: app/registry/collection.py) and the job is retried when its
lease expires; after the commit it is done. A worker that
lost its lease cannot commit (the ownership check and ``UNIQUE(model_versions.task_id)``),
so a retried job yields exactly one version.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.datasets.storage import evaluation_payload, load_dataset_splits, splits_from_bytes
from app.db.session import begin_write
from app.db.tables import Accuracy, Dataset, Model, ModelVersion, Task
from app.imports import IMPORT_STRATEGY
from app.jobs import queue, state_machine
from app.jobs.queue import Claim
from app.jobs.status import JobStatus
from app.learning import ContinualLearner, Evaluation, TaskData, TrainingStopped, UpdateResult
from app.learning.data import plain_labels
from app.learning.strategies import strategy_class
from app.learning.training import resolve_device
from app.registry.consolidation import write_consolidation
from app.registry.service import set_serving_version
from app.registry.versions import load_for_update
from app.settings import Settings
from app.storage.artifacts import ArtifactRef, ArtifactStore
from app.updates.adopt import adopt_and_evaluate, imported_learner
from app.updates.budget import check_update_budget
from app.updates.gate import GateDecision, forgetting_gate, learning_check
from app.updates.learn import learn_and_evaluate
from app.updates.lease import LeaseKeeper
from app.updates.ranks import RankLost, learn_across_processes
from app.updates.read_by_uri import is_unread_reference, read_referenced_dataset
from app.updates.retry import with_retries

log = logging.getLogger(__name__)


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
    task = session.get_one(Task, held.task_id)
    model = session.get_one(Model, held.model_id)
    parent = session.get(ModelVersion, model.serving_version_id) if model.serving_version_id else None
    rows = session.execute(
        select(Task.id, Dataset).join(Dataset, Task.dataset_id == Dataset.id).where(Task.model_id == model.id)
    ).all()
    max_forgetting = model.max_forgetting if model.max_forgetting is not None else default_max_forgetting
    return UpdatePlan(
        model=model,
        task=task,
        parent=parent,
        datasets={task_id: ds for task_id, ds in rows},
        max_forgetting=max_forgetting,
    )


def new_learner(model: Model, first_task: TaskData) -> ContinualLearner:
    """The model's first task fixes the input scaling: samples sent as uint8 (images) are scaled by
    1/255; other samples are standardized per feature on the first task's statistics (the learner
    fits them, ``app.learning.preprocessing``) unless the model's options say ``standardize: false``."""
    input_scale = 1 / 255 if np.asarray(first_task.x).dtype == np.uint8 else 1.0
    return ContinualLearner.create(
        model.architecture,
        tuple(model.input_shape),
        family=model.family,
        architecture_options={"standardize": True, **(model.options or {})},
        input_scale=input_scale,
    )


def run_update(
    session_factory, store: ArtifactStore, settings: Settings, held: Claim, keeper: LeaseKeeper
) -> JobStatus:
    """Steps 1-5 of the module docstring; returns the job's new status (succeeded | rejected | cancelled)."""
    with session_factory() as session:
        plan = read_plan(session, held, settings.default_max_forgetting)
    if is_unread_reference(plan.datasets[held.task_id]):  # data by reference: read and stored first
        keeper.set_phase("read_data", 0.0)
        if not read_referenced_dataset(session_factory, store, settings, held, plan):
            raise LeaseLost()
        with session_factory() as session:
            plan = read_plan(session, held, settings.default_max_forgetting)
    model, task = plan.model, plan.task
    device = str(resolve_device(settings.device))
    keeper.set_phase("load", 0.0)
    current = store.get(plan.datasets[task.id].artifact_uri, plan.datasets[task.id].artifact_sha256)
    splits_of = {task.id: splits_from_bytes(current)}
    manifest = None
    importing = task.strategy == IMPORT_STRATEGY
    if plan.parent is not None and not importing:
        learner, manifest = load_for_update(store, plan.parent)  # Fisher + anchors: it learns on
    elif "import" in (model.options or {}):  # made by POST /models: its first version is the user's weights
        learner = imported_learner(store, model, settings.decoded_bytes_limit, settings.max_model_parameters)
    else:
        learner = new_learner(model, splits_of[task.id]["train"])
    evaluation = dict(manifest.evaluation) if manifest is not None else {}
    whole = not importing and getattr(strategy_class(task.strategy or model.family), "reads_old_training_data", False)
    refs_of = {task.id: (plan.datasets[task.id].artifact_uri, plan.datasets[task.id].artifact_sha256)}
    written_early: list[bytes] = []  # evaluation payloads stored before training, referenced by no row until the commit
    for key in learner.task_keys:
        splits_of[int(key)], evaluation[key] = learnt_task_splits(
            store, plan.datasets[int(key)], evaluation.get(key), whole, written_early
        )
        dataset = plan.datasets[int(key)]
        refs_of[int(key)] = (
            (dataset.artifact_uri, dataset.artifact_sha256) if whole else (evaluation[key].uri, evaluation[key].sha256)
        )
    check_update_budget(learner, settings.max_update_bytes)  # refuse with a reason, not be killed for memory
    learner.to(device)
    learner.ewc.fisher = replace(learner.ewc.fisher, max_samples=settings.fisher_samples)  # this worker's budget

    nproc = int((task.hyperparameters or {}).get("nproc") or 1)
    if importing:  # no training: the weights as they came, with base data as task 0 (app.updates.adopt)
        keeper.set_phase("fisher", 0.0)
        result, accuracy = adopt_and_evaluate(learner, task.id, splits_of[task.id], device, progress=keeper.report)
    elif nproc > 1:  # N processes on this machine (app/updates/ranks.py); they read the splits themselves
        keeper.set_phase("train", 0.0)
        learner, result, accuracy = learn_across_processes(
            learner,
            nproc,
            device,
            store,
            refs_of,
            task.id,
            task.strategy,
            task.hyperparameters or {},
            settings.fisher_samples,
        )
    else:
        result, accuracy = learn_and_evaluate(
            learner,
            task.id,
            task.strategy,
            task.hyperparameters,
            splits_of,
            device,
            progress=keeper.report,
            should_stop=keeper.should_stop,
            on_evaluate=lambda: keeper.set_phase("evaluate"),
        )
    if keeper.lease_lost:
        raise LeaseLost()
    keeper.set_phase("store")
    for payload in written_early:  # young again (or back, if collected while a long update trained): see collection.py
        store.put(payload)
    weights = store.put_tensors(*learner.export_weights())
    evaluation[str(task.id)] = store.put(evaluation_payload(current))
    consolidation = write_consolidation(store, learner, manifest, evaluation)
    new_task = splits_of[task.id]
    not_learnt = (
        learning_check(
            str(task.id),
            result.validation_after.get(str(task.id)),
            plain_labels(new_task["validation"].y),
            plain_labels(new_task["train"].y),
            result.train_config,
        )
        if settings.reject_not_learnt and not importing  # an import learns nothing: its base data is measured
        else None
    )
    gate = forgetting_gate(result, plan.max_forgetting, not_learnt)

    def commit() -> JobStatus:
        with session_factory() as session:
            return commit_update(
                session,
                held=held,
                plan=plan,
                result=result,
                weights=weights,
                consolidation=consolidation,
                accuracy=accuracy,
                gate=gate,
                last_progress=keeper.latest_progress(),
            )

    return with_retries(commit, f"job {held.job_id}: storing its version")


def learnt_task_splits(
    store: ArtifactStore, dataset: Dataset, evaluation: ArtifactRef | None, whole: bool, written: list[bytes]
) -> tuple[dict[str, TaskData], ArtifactRef]:
    """An old task's splits for this update, and the reference of its evaluation payload: that
    payload alone when the parent's manifest lists it, else (a version stored before manifests,
    or a strategy that replays old training data) the whole dataset, its evaluation payload
    written once on the way (now: the ranks of a many-process update read it) and added to
    ``written``, to be stored again right before the commit."""
    if evaluation is not None and not whole:
        return load_dataset_splits(store, evaluation.uri, evaluation.sha256), evaluation
    data = store.get(dataset.artifact_uri, dataset.artifact_sha256)
    if evaluation is None:
        written.append(evaluation_payload(data))
        evaluation = store.put(written[-1])
    return splits_from_bytes(data), evaluation


def commit_update(
    session: Session,
    *,
    held: Claim,
    plan: UpdatePlan,
    result: UpdateResult,
    weights: ArtifactRef,
    consolidation: ArtifactRef,
    accuracy: dict[int, Evaluation],
    gate: GateDecision,
    last_progress: dict | None = None,
) -> JobStatus:
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
    model = session.get_one(Model, plan.model.id)
    number = (session.scalar(select(func.max(ModelVersion.number)).where(ModelVersion.model_id == model.id)) or 0) + 1
    version = ModelVersion(
        model_id=model.id,
        number=number,
        parent_id=plan.parent.id if plan.parent else None,
        task_id=plan.task.id,
        weights_uri=weights.uri,
        weights_sha256=weights.sha256,
        weights_size=weights.size,
        consolidation_uri=consolidation.uri,
        consolidation_sha256=consolidation.sha256,
        consolidation_size=consolidation.size,
        ewc_lambda=result.ewc_lambda,
        lambda_search=result.lambda_search,
        fisher_recipe=result.fisher_recipe,
        train_config={**result.train_config, "replay_memory": result.replay_memory},
        validation=gate.as_dict(),
        train_seconds=result.train_seconds,
        search_seconds=result.search_seconds,
        promoted=gate.passed,
    )
    session.add(version)
    session.flush()
    for task_id, evaluation in accuracy.items():
        session.add(
            Accuracy(
                model_version_id=version.id,
                task_id=task_id,
                accuracy=evaluation.accuracy,
                loss=evaluation.loss,
                n_test=evaluation.n,
            )
        )
    parent_id = plan.parent.id if plan.parent else None
    if gate.passed and model.serving_version_id != parent_id:
        # Someone served another version (a rollback, a promote) while this update trained on the
        # old one: promoting it now would silently undo their choice. Stored, not promoted, and why.
        version.promoted = False
        serving = session.get(ModelVersion, model.serving_version_id) if model.serving_version_id else None
        state_machine.reject(
            session,
            job,
            (
                f"version {number} was learnt on version {plan.parent.number if plan.parent else 'none'}, but version "
                f"{serving.number if serving else 'none'} was put in service while it trained: stored, not promoted "
                f"(promote it with POST /tasks/{plan.task.id}/promote)"
            ),
            last_progress,
        )
    elif gate.passed:
        set_serving_version(session, model, version, f"task {plan.task.id} learnt")
        state_machine.succeed(session, job, last_progress)
    else:
        state_machine.reject(session, job, gate.reason(number, plan.task.id), last_progress)
    session.commit()
    log.info(
        "job %s: version %s of model %s %s",
        held.job_id,
        number,
        model.name,
        "promoted"
        if gate.passed
        else "stored, not promoted (not learnt)"
        if gate.not_learnt
        else f"stored, not promoted ({gate.tripped_by} forgot)",
    )
    return JobStatus(job.status)


def run_job(session_factory, store: ArtifactStore, settings: Settings, held: Claim, shutdown) -> JobStatus | None:
    """Run a claimed job under its lease; whatever happens, the job ends in a clear state:
    succeeded/rejected (committed), cancelled, failed (with the reason), back in the queue
    (shutdown), or untouched when the lease was lost (the new owner finishes it).

    Returns the status this worker left the job in, or None when it lost the lease and so
    left the job to its new owner."""
    with LeaseKeeper(session_factory, held, settings, shutdown) as keeper:
        try:
            return run_update(session_factory, store, settings, held, keeper)
        except RankLost as lost:  # retried (or failed after its last attempt) as if the worker had been lost
            log.warning("job %s: %s", held.job_id, lost)
            with session_factory() as session:
                return queue.retry_lost(session, held, str(lost))
        except (TrainingStopped, LeaseLost) as stop:
            if isinstance(stop, LeaseLost) or keeper.lease_lost:
                log.warning("job %s: lease lost; another worker will finish it", held.job_id)
                return None
            if keeper.cancel_requested:
                record(
                    session_factory,
                    held,
                    "cancel",
                    lambda session: queue.finish(session, held, JobStatus.CANCELLED, "cancelled while running"),
                )
                return JobStatus.CANCELLED
            record(
                session_factory,
                held,
                "requeue",
                lambda session: queue.release(session, held, "worker shut down; requeued"),
            )
            return JobStatus.QUEUED
        except Exception as error:  # an update that cannot be applied must not kill the worker
            log.exception("job %s failed", held.job_id)
            reason = str(error) if isinstance(error, ValueError) else f"{type(error).__name__}: {error}"
            record(
                session_factory, held, "failure", lambda session: queue.finish(session, held, JobStatus.FAILED, reason)
            )
            return JobStatus.FAILED


def record(session_factory, held: Claim, what: str, write) -> None:
    """``write(session)`` in a fresh session, retried while the database is unreachable."""

    def attempt():
        with session_factory() as session:
            return write(session)

    with_retries(attempt, f"job {held.job_id}: recording its {what}")
