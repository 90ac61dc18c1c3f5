"""Tasks: accept an upload as the next update of a model, and report on it afterwards.

Submitting is validate-everything-then-write: the form, the file (parsing.py), and the
fit with the model (input shape, architecture, strategy family) are all checked before
anything is stored, so a bad request leaves the database and the artifact store exactly
as they were. Only then is the parsed dataset written (content-addressed, so a repeated
upload costs nothing) and the model/dataset/task/job rows committed in one transaction.

That transaction is the only part that holds the database's write lock (`add_task_rows`):
parsing, hashing and writing the artifact take seconds for a large upload, and on SQLite the
write lock stops every other writer (cancels, heartbeats, claims, other uploads) while held.
What depends on rows another request may have changed meanwhile (the model, its queue quota,
its labels) is checked again under the lock; an upload refused there leaves at most its
dataset artifact, unreferenced, for the artifact collector (app/registry/collection.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.datasets.parsing import ParsedDataset, parse_dataset
from app.datasets.storage import store_dataset
from app.db.session import begin_write
from app.db.tables import Accuracy, Dataset, Job, Model, ModelVersion, Task
from app.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from app.jobs.queue import UNFINISHED, enqueue
from app.jobs.status import JobStatus
from app.learning import ContinualLearner, strategy_class, strategy_names
from app.learning.text_source import takes_text
from app.registry.service import serving_number, set_serving_version
from app.settings import Settings
from app.storage.artifacts import ArtifactRef
from app.tasks.schemas import AccuracyEntry, DatasetOut, PromoteOut, TaskAccuracyOut, TaskOut, TaskRequest

QUOTA_RETRY_SECONDS = 30  # a queued update takes seconds to minutes; half a minute frees a few slots


def parse_limits(settings: Settings) -> dict:
    """The limits of parse_dataset from the settings, the same for uploads and data read by reference."""
    return dict(
        max_samples=settings.max_upload_samples,
        seed=settings.split_seed,
        max_decoded_bytes=settings.decoded_bytes_limit,
        max_abs_value=settings.max_abs_value,
        max_labels=settings.max_labels_per_task,
        max_text_chars=settings.max_text_chars,
    )


def check_admission(session: Session, settings: Settings, request: TaskRequest, model: Model | None) -> None:
    """What a task is refused for before its data is looked at: its budget, and the model's queue quota."""
    request.check_limits(settings)
    if model is None:
        return
    unfinished = session.execute(
        select(func.count(Job.id)).where(Job.model_id == model.id, Job.status.in_(UNFINISHED))
    ).scalar_one()
    if unfinished >= settings.max_queued_per_model:
        raise QuotaExceeded(
            f"model {model.name!r} has {unfinished} unfinished jobs; the limit is "
            f"{settings.max_queued_per_model} (max_queued_per_model): retry once some have run",
            retry_after=QUOTA_RETRY_SECONDS,
        )


def check_labels(session: Session, settings: Settings, model: Model | None, parsed: ParsedDataset) -> None:
    """Labels per model are capped (per task, parse_dataset caps them): the classifier, Fisher (one
    backward pass per class) and every prediction grow with them."""
    if model is None or model.id is None:
        return
    known = {
        json_label
        for labels in session.scalars(
            select(Dataset.labels).join(Task, Task.dataset_id == Dataset.id).where(Task.model_id == model.id)
        )
        for json_label in map(str, labels or [])
    }
    together = len(known | {str(label) for label in parsed.labels})
    if together > settings.max_labels_per_model:
        raise InvalidInput(
            f"model {model.name!r} would hold {together} distinct labels with this task; the limit is "
            f"{settings.max_labels_per_model} (max_labels_per_model)"
        )


def submit_task(
    session: Session,
    store,
    settings: Settings,
    request: TaskRequest,
    filename: str,
    data: bytes,
    admit: Callable[[Model | None], None] | None = None,
) -> TaskOut:
    """Check, parse and store the upload with no transaction open, then write its rows (`add_task_rows`).
    ``admit(model)``, when given, is one more check made under the model's lock just before the rows
    are written (the feedback loop's one-update-at-a-time rule): it raises a DomainError to refuse."""
    model = session.scalar(select(Model).where(Model.name == request.model))
    check_admission(session, settings, request, model)
    shapeless = False
    if model is not None and not model.input_shape:  # made by a data reference not (yet) read
        shapeless = True
        request = settle_shapeless_model(session, model, request)  # 409 while that reference is still queued
    input_shape = tuple(model.input_shape) if model is not None and not shapeless else None
    session.rollback()  # no transaction stays open while the upload is parsed ...
    parsed = parse_dataset(
        filename,
        data,
        max_bytes=settings.max_upload_bytes,
        test_fraction=request.test_fraction,
        validation_fraction=request.validation_fraction,
        input_shape=input_shape,
        **parse_limits(settings),
    )
    model = session.scalar(select(Model).where(Model.name == request.model))
    checked_new = check_upload_fits(session, settings, request, model, parsed)
    session.rollback()  # ... nor while it is stored
    reference = store_dataset(store, parsed)  # idempotent: content-addressed

    def recheck(locked: Model | None, request: TaskRequest) -> TaskRequest:
        if admit is not None:
            admit(locked)
        if locked is not None and not locked.input_shape:
            request = settle_shapeless_model(session, locked, request)
        if locked is None and checked_new:
            return request  # still new: checked above, and a first task's fit depends on nothing stored
        check_upload_fits(session, settings, request, locked, parsed)
        return request

    def dataset() -> Dataset:
        return dataset_row(parsed, reference)

    return add_task_rows(session, settings, request, dataset, recheck, input_shape=list(parsed.input_shape))


def dataset_row(parsed: ParsedDataset, reference: ArtifactRef) -> Dataset:
    """The Dataset row for a parsed upload whose splits are stored at ``reference`` (a task's or an import's)."""
    return Dataset(
        sha256=parsed.sha256,
        format=parsed.format,
        n_train=parsed.n_train,
        n_validation=parsed.n_validation,
        n_test=parsed.n_test,
        input_shape=list(parsed.input_shape),
        labels=parsed.labels,
        artifact_uri=reference.uri,
        artifact_sha256=reference.sha256,
        artifact_size=reference.size,
    )


def check_upload_fits(
    session: Session, settings: Settings, request: TaskRequest, model: Model | None, parsed: ParsedDataset
) -> bool:
    """The parsed upload against its model (or as a new model's first task); True when it was checked as new."""
    check_labels(session, settings, model, parsed)
    if model is None or not model.input_shape:
        check_new_model(request, parsed)
        return model is None
    check_fits_model(model, request, parsed)
    return False


def add_task_rows(
    session: Session,
    settings: Settings,
    request: TaskRequest,
    dataset: Callable[[], Dataset],
    recheck: Callable[[Model | None, TaskRequest], TaskRequest],
    input_shape: list | None,
    extra_hyperparameters: dict | None = None,
) -> TaskOut:
    """The model (created on first use), dataset, task and job rows in one transaction that holds the
    write lock (SQLite) and the model's row (Postgres) from its first statement: the queue quota and
    ``recheck(model, request)`` (what was checked before, against the model as it is now) are judged
    under it. Two first uploads of one new model racing on Postgres: the loser's insert of the model
    breaks its unique name, and it tries again, now as a task of the model the winner made."""
    for attempt in (1, 2, 3):
        begin_write(session)
        try:
            model = session.scalar(select(Model).where(Model.name == request.model).with_for_update())
            check_admission(session, settings, request, model)
            checked = recheck(model, request)
            model = model_for_task(session, settings, checked, model, input_shape)
            row = dataset()
            session.add(row)
            session.flush()
            task = Task(
                model_id=model.id,
                name=checked.name,
                dataset_id=row.id,
                strategy=checked.strategy,
                hyperparameters={**checked.hyperparameters(), **(extra_hyperparameters or {})},
                status=JobStatus.QUEUED,
            )
            session.add(task)
            session.flush()
            job = enqueue(session, task, max_attempts=settings.max_attempts)
            session.commit()
            return task_out(session, task, job=job, model=model, dataset=row)
        except IntegrityError:
            session.rollback()
            if attempt == 3:
                raise
        except BaseException:
            session.rollback()
            raise
    raise AssertionError("unreachable")


def model_for_task(
    session: Session, settings: Settings, request: TaskRequest, model: Model | None, input_shape: list | None
) -> Model:
    """The task's model: created on first use (``input_shape`` empty for data by reference, set by the
    worker that reads it), else given the request's forgetting gate and a shapeless model its shape."""
    if model is None:
        model = Model(
            name=request.model,
            architecture=new_model_architecture(request),
            family=strategy_class(request.strategy).family,
            input_shape=input_shape or [],
            options=request.architecture_options or {},
            max_forgetting=request.max_forgetting
            if request.max_forgetting is not None
            else settings.default_max_forgetting,
        )
        session.add(model)
        session.flush()
        return model
    if request.max_forgetting is not None:
        model.max_forgetting = request.max_forgetting
    if input_shape and not model.input_shape:
        model.input_shape = input_shape
    return model


def modality(input_shape) -> str:
    """What a model or dataset takes, in words: text, images or numeric vectors."""
    if takes_text(input_shape):
        return "text"
    return "images" if len(tuple(input_shape)) == 3 else "numeric vectors"


def check_modality(model_name: str, model_shape, data_shape) -> None:
    """A text dataset for a model of images or vectors (or the reverse) is refused naming both."""
    model_kind, data_kind = modality(model_shape), modality(data_shape)
    if (model_kind == "text") != (data_kind == "text"):
        advice = (
            "import a Hugging Face sequence classifier (source hf) to learn from text"
            if data_kind == "text"
            else "send a .csv, .jsonl or Parquet file with 'text' and 'label' columns"
        )
        raise InvalidInput(f"model {model_name!r} takes {model_kind}; this file holds {data_kind}: {advice}")


def check_new_model(request: TaskRequest, parsed: ParsedDataset) -> None:
    """The first task fixes the model: its architecture must build for these inputs."""
    if takes_text(parsed.input_shape):
        raise InvalidInput(
            f"a new {new_model_architecture(request)} model takes images or numeric vectors; this file holds "
            "text: import a Hugging Face sequence classifier (source hf) to learn from text"
        )
    if len(parsed.labels) < 2 or len(set(parsed.splits["train"].label_index.tolist())) < 2:
        raise InvalidInput(
            f"the first task of a model needs at least two classes; the training data has only "
            f"{parsed.labels_of('train')[0]!r}"
        )
    architecture = new_model_architecture(request)
    strategy = strategy_class(request.strategy)
    try:  # the library's own checks: options, and the input shape the architecture needs (images for convs)
        ContinualLearner.create(
            architecture, parsed.input_shape, family=strategy.family, architecture_options=request.architecture_options
        )
    except (ValueError, TypeError) as error:
        raise InvalidInput(
            f"cannot build a {architecture} model for samples of shape {list(parsed.input_shape)} "
            f"with options {request.architecture_options or {}}: {error}"
        ) from error


def new_model_architecture(request: TaskRequest) -> str:
    """The architecture a new model gets, checked against the strategy (ccll calibrates conv blocks)."""
    strategy = strategy_class(request.strategy)
    architecture = request.architecture or strategy.default_architecture()
    try:
        strategy.check_architecture(architecture)
    except ValueError as error:
        raise InvalidInput(str(error)) from error
    return architecture


def check_fits_model(model: Model, request: TaskRequest, parsed: ParsedDataset) -> None:
    check_modality(model.name, model.input_shape, parsed.input_shape)
    if tuple(parsed.input_shape) != tuple(model.input_shape):
        raise InvalidInput(
            f"model {model.name!r} takes samples of shape {list(model.input_shape)}; "
            f"this file has samples of shape {list(parsed.input_shape)}"
        )
    check_request_fits_model(model, request)
    if strategy_class(model.family).predicts_per_task and len(set(parsed.splits["train"].label_index.tolist())) < 2:
        raise InvalidInput(f"a {model.family} task needs at least two classes (each task has its own classifier)")


def check_request_fits_model(model: Model, request: TaskRequest) -> None:
    """What a task must share with its model, known before its data is read: architecture, options, family."""
    if request.architecture is not None and request.architecture != model.architecture:
        raise InvalidInput(
            f"model {model.name!r} is a {model.architecture}; the architecture is fixed when a model is "
            f"created (asked for {request.architecture})"
        )
    if request.architecture_options and request.architecture_options != (model.options or {}):
        raise InvalidInput(f"model {model.name!r} was created with options {model.options or {}}; they cannot change")
    if strategy_class(request.strategy).family != model.family:
        raise InvalidInput(
            f"model {model.name!r} is a {model.family} model; strategy {request.strategy} cannot update "
            f"it ({model.family} models take {' or '.join(strategy_names(model.family))} tasks only)"
        )


def settle_shapeless_model(session: Session, model: Model, request: TaskRequest) -> TaskRequest:
    """For an upload to a shapeless model: 409 while a reference may still fix its shape; else the
    request as a first task under the model's own architecture and options.

    A model is *shapeless* when its first task's data is a reference no worker has read yet (its
    ``input_shape`` is empty until then, see app/updates/read_by_uri.py): an upload cannot be checked
    against a shape that does not exist. Once every such task has failed, the next task is the
    model's first again, under the architecture, options and family it was created with."""
    pending = session.scalar(
        select(Job.id).where(Job.model_id == model.id, Job.status.in_(UNFINISHED)).order_by(Job.id).limit(1)
    )
    if pending is not None:
        raise Conflict(
            f"model {model.name!r} takes its input shape from its first task, whose data is read by "
            f"job {pending} (still queued or running); submit this task once that job has finished, "
            "or send it by reference too"
        )
    check_request_fits_model(model, request)
    return replace(request, architecture=model.architecture, architecture_options=model.options or None)


def get_task_row(session: Session, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"task {task_id} does not exist")
    return task


def latest_job(session: Session, task: Task) -> Job | None:
    return session.scalar(select(Job).where(Job.task_id == task.id).order_by(Job.id.desc()).limit(1))


def task_out(
    session: Session, task: Task, job: Job | None = None, model: Model | None = None, dataset: Dataset | None = None
) -> TaskOut:
    job = job or latest_job(session, task)
    model = model or session.get_one(Model, task.model_id)
    dataset = dataset or session.get_one(Dataset, task.dataset_id)
    version_number = session.scalar(select(ModelVersion.number).where(ModelVersion.task_id == task.id))
    return TaskOut(
        id=task.id,
        job_id=job.id if job else None,
        status=job.status if job else task.status,
        model=model.name,
        name=task.name,
        strategy=task.strategy,
        hyperparameters=task.hyperparameters or {},
        dataset=DatasetOut(
            id=dataset.id,
            sha256=dataset.sha256,
            format=dataset.format,
            n_train=dataset.n_train,
            n_validation=dataset.n_validation,
            n_test=dataset.n_test,
            input_shape=list(dataset.input_shape),
            labels=list(dataset.labels),
        ),
        model_version=version_number,
        created_at=task.created_at,
    )


def get_task(session: Session, task_id: int) -> TaskOut:
    return task_out(session, get_task_row(session, task_id))


def list_tasks(session: Session, model: str | None = None, after_id: int = 0, limit: int = 1000) -> list[TaskOut]:
    query = select(Task).where(Task.id > after_id).order_by(Task.id).limit(limit)
    if model is not None:
        query = query.join(Model, Task.model_id == Model.id).where(Model.name == model)
    return [task_out(session, task) for task in session.scalars(query)]


def task_accuracy(session: Session, task_id: int) -> TaskAccuracyOut:
    """The task's row of the accuracy table over time: one entry per version that measured it, oldest first."""
    task = get_task_row(session, task_id)
    model = session.get_one(Model, task.model_id)
    rows = session.execute(
        select(Accuracy, ModelVersion)
        .join(ModelVersion, Accuracy.model_version_id == ModelVersion.id)
        .where(Accuracy.task_id == task.id)
        .order_by(ModelVersion.number)
    ).all()
    history = [
        AccuracyEntry(
            model_version=version.number,
            after_task_id=version.task_id,
            accuracy=row.accuracy,
            loss=row.loss,
            n_test=row.n_test,
            promoted=version.promoted,
            created_at=row.created_at,
        )
        for row, version in rows
    ]
    if not history:
        return TaskAccuracyOut(task_id=task.id, history=[], initial=None, current=None, best=None, forgetting=None)
    serving = next(
        (entry for entry, (_, version) in zip(history, rows, strict=True) if version.id == model.serving_version_id),
        None,
    )
    current = (serving or history[-1]).accuracy
    best = max(entry.accuracy for entry in history)
    return TaskAccuracyOut(
        task_id=task.id,
        history=history,
        initial=history[0].accuracy,
        current=current,
        best=best,
        forgetting=best - current,
    )


def promote_task(session: Session, task_id: int) -> PromoteOut:
    """Accept a version the forgetting gate rejected (or re-point the alias at a task's version).

    The job keeps its ``rejected`` status: it records what the gate decided; the version's
    ``promoted`` flag and the alias change record that a user overruled it.
    """
    task = get_task_row(session, task_id)
    model = session.get_one(Model, task.model_id)
    version = session.scalar(select(ModelVersion).where(ModelVersion.task_id == task.id))
    if version is None:
        job = latest_job(session, task)
        raise Conflict(
            f"task {task_id} has no stored version to promote (its job is "
            f"{job.status if job else 'missing'}); only a trained task can be promoted"
        )
    previous = serving_number(session, model)
    if model.serving_version_id != version.id:  # promoting what already serves changes nothing
        version.promoted = True
        set_serving_version(session, model, version, f"task {task_id} promoted through the API")
        session.commit()
    job = latest_job(session, task)
    return PromoteOut(
        task_id=task.id,
        model=model.name,
        model_version=version.number,
        previous_version=previous,
        status=job.status if job else task.status,
    )
