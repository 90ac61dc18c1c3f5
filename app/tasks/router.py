"""POST /tasks (upload a dataset as the next update of a model), its reads, and promote."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile

from app.auth.deps import AdminKey, PredictKey, TrainKey
from app.deps import INT64_MAX, RowId, SessionDep, SettingsDep, StoreDep, WriteSessionDep
from app.errors import InvalidInput
from app.openapi import Responses
from app.tasks import service
from app.tasks.schemas import PromoteOut, TaskAccuracyOut, TaskOut, TaskRequest
from app.tasks.submit_by_uri import submit_reference

router = APIRouter(prefix="/tasks", tags=["tasks"])

NOT_FOUND: Responses = {
    404: {
        "description": "unknown task",
        "content": {"application/json": {"example": {"detail": "task 99 does not exist"}}},
    }
}
BAD_UPLOAD: Responses = {
    413: {
        "description": "body, file or sample count over the configured limits",
        "content": {
            "application/json": {"example": {"detail": "the file holds 2,000,000 samples; the limit is 1,000,000"}}
        },
    },
    422: {
        "description": "the upload or a field is wrong; the message says what",
        "content": {
            "application/json": {
                "example": {
                    "detail": "model 'digits' takes samples of shape [1, 28, 28]; this file has samples of shape [3]"
                }
            }
        },
    },
    409: {
        "description": "the model's shape is still to be read from a queued reference",
        "content": {
            "application/json": {
                "example": {
                    "detail": (
                        "model 'm' takes its input shape from its first task, whose data is read by job 4 "
                        "(still queued or running)"
                    )
                }
            }
        },
    },
    415: {
        "description": "a file format the service does not read",
        "content": {"application/json": {"example": {"detail": "pickled files are never loaded (they can run code)"}}},
    },
    429: {
        "description": "the model's queue is full (max_queued_per_model); retry after Retry-After seconds",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
        "content": {
            "application/json": {
                "example": {
                    "detail": (
                        "model 'm' has 100 unfinished jobs; the limit is 100 (max_queued_per_model): "
                        "retry once some have run"
                    )
                }
            }
        },
    },
}


@router.post(
    "",
    response_model=TaskOut,
    status_code=202,
    responses=BAD_UPLOAD,
    summary="Upload a labelled dataset; a worker learns it as the next update of the model",
)
def submit_task(
    session: SessionDep,  # no write lock while the upload is parsed and stored: the service takes it for the rows
    settings: SettingsDep,
    store: StoreDep,
    caller: TrainKey,
    model: Annotated[str, Form(description="model name; created on first use", examples=["digits"])],
    file: Annotated[
        UploadFile | None,
        File(
            description=".npz with x, y (optional x_test, y_test), .csv or Parquet "
            "with a 'label' column, or a .zip of image folders"
        ),
    ] = None,
    uri: Annotated[
        str | None,
        Form(
            description="instead of a file: s3://bucket/key or an absolute path under "
            "RETAIN_DATA_ROOTS; a worker reads it",
            examples=["s3://data/t1.parquet"],
        ),
    ] = None,
    name: Annotated[str | None, Form(description="a name for the task", examples=["permuted digits"])] = None,
    architecture: Annotated[
        str | None, Form(description="mlp (default) | cnn | resnet18; fixed at model creation")
    ] = None,
    architecture_options: Annotated[
        str | None, Form(description='JSON object, e.g. {"hidden": [100, 100]} or {"alpha": 2, "beta": 1}')
    ] = None,
    strategy: Annotated[
        str,
        Form(
            description="auto (default: ewc for a task of known labels, ewc_replay for one that brings new "
            "labels) | ewc | finetune | replay | ewc_replay | ccll; the replay memory's size is the architecture "
            "option memory_size"
        ),
    ] = "auto",
    ewc_lambda: Annotated[str, Form(description="a number, or auto (chosen on validation data)")] = "auto",
    epochs: Annotated[
        int | None,
        Form(
            description="exactly this many epochs; without it the service chooses "
            "(4, or more to reach 320 optimizer steps on a small task, then "
            "early stopping on validation up to twice that)"
        ),
    ] = None,
    batch_size: Annotated[int | None, Form()] = None,
    lr: Annotated[float | None, Form()] = None,
    test_fraction: Annotated[float, Form(description="held out for test when the file has no x_test")] = 0.2,
    validation_fraction: Annotated[
        float, Form(description="of the training part, for λ search and the forgetting gate")
    ] = 0.1,
    max_forgetting: Annotated[
        float | None, Form(description="forgetting gate of the model (validation accuracy drop)")
    ] = None,
    nproc: Annotated[
        int | None,
        Form(
            description="processes the update runs on (data-parallel, torch.distributed); at most the max_nproc setting"
        ),
    ] = None,
) -> TaskOut:
    task_request = TaskRequest.from_form(
        model=model,
        name=name,
        architecture=architecture,
        architecture_options=architecture_options,
        strategy=strategy,
        ewc_lambda=ewc_lambda,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        max_forgetting=max_forgetting,
        nproc=nproc,
        max_nproc=settings.max_nproc,
    )
    if uri is not None:
        if file is not None:
            raise InvalidInput("send the data as a file or as a uri, not both")
        return submit_reference(session, settings, task_request, uri)
    if file is None:
        raise InvalidInput("send the data as a file or as a uri (data by reference)")
    # A plain `def` route: FastAPI runs it in its thread pool, so parsing, hashing and storing an upload
    # never block the event loop (the body itself was counted as it streamed in: app/limits.py).
    data = file.file.read(settings.max_upload_bytes + 1)  # one byte over the limit is enough to refuse it
    return service.submit_task(session, store, settings, task_request, file.filename or "", data)


@router.get("", response_model=list[TaskOut], summary="Tasks, oldest first, a page at a time (after_id, limit)")
def list_tasks(
    session: SessionDep,
    caller: PredictKey,
    model: str | None = None,
    after_id: Annotated[int, Query(ge=0, le=INT64_MAX, description="tasks with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> list[TaskOut]:
    return service.list_tasks(session, model=model, after_id=after_id, limit=limit)


@router.get("/{task_id}", response_model=TaskOut, responses=NOT_FOUND, summary="One task and its job's status")
def get_task(task_id: RowId, session: SessionDep, caller: PredictKey) -> TaskOut:
    return service.get_task(session, task_id)


@router.get(
    "/{task_id}/accuracy",
    response_model=TaskAccuracyOut,
    responses=NOT_FOUND,
    summary="The task's test accuracy after every update since it was learnt",
)
def task_accuracy(task_id: RowId, session: SessionDep, caller: PredictKey) -> TaskAccuracyOut:
    return service.task_accuracy(session, task_id)


@router.post(
    "/{task_id}/promote",
    response_model=PromoteOut,
    responses={
        **NOT_FOUND,
        409: {
            "description": "the task has no stored version yet",
            "content": {
                "application/json": {
                    "example": {"detail": "task 8 has no stored version to promote (its job is running)"}
                }
            },
        },
    },
    summary="Promote the task's version (e.g. one the forgetting gate rejected) and serve it",
)
def promote_task(task_id: RowId, session: WriteSessionDep, caller: AdminKey) -> PromoteOut:
    return service.promote_task(session, task_id)
