"""POST /tasks with ``uri`` instead of a file: queue a task whose data a worker reads.

Only the cheap checks run here (app/datasets/data_uris.py: scheme, allowed root, the object
exists and is within the byte limit; and the request against the model: architecture,
options, strategy family). The rows are written with the dataset still unread: format
``reference``, no sha256, counts 0, the source URI as its location. The worker reads,
validates and stores the data before it trains (app/updates/read_by_uri.py) and fills the row
in; a file that fails there fails the job with the reason and stores nothing. The source
URI stays on the task as ``hyperparameters["data_uri"]`` (how the task was asked for, next
to its split fractions), so it is still shown after the row points at the parsed data.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.datasets.data_uris import ReferencePolicy, check_reference
from app.db.tables import Dataset, Model
from app.errors import InvalidInput
from app.settings import Settings
from app.tasks.schemas import TaskOut, TaskRequest
from app.tasks.service import add_task_rows, check_admission, check_request_fits_model, new_model_architecture

REFERENCE_FORMAT = "reference"  # datasets.format of a row whose data no worker has read yet
DATA_URI = "data_uri"  # the key in tasks.hyperparameters


def check_fractions(request: TaskRequest) -> None:
    """What parse_dataset would refuse at once, refused at submit instead of in the worker."""
    for name in ("test_fraction", "validation_fraction"):
        value = getattr(request, name)
        if not 0.0 < value < 1.0:
            raise InvalidInput(f"{name} must be between 0 and 1 (exclusive), got {value}")


def submit_reference(session: Session, settings: Settings, request: TaskRequest, uri: str) -> TaskOut:
    """Cheap checks (the reference is looked at: a stat or a HEAD) with no transaction open, then the rows."""
    check_fractions(request)
    model = session.scalar(select(Model).where(Model.name == request.model))
    check_admission(session, settings, request, model)
    if model is not None:
        check_request_fits_model(model, request)
    else:
        new_model_architecture(request)
    session.rollback()  # nothing is held while the reference is looked at
    reference = check_reference(uri, ReferencePolicy.of(settings))

    def recheck(locked: Model | None, request: TaskRequest) -> TaskRequest:
        if locked is not None:
            check_request_fits_model(locked, request)
        return request

    def dataset() -> Dataset:
        return Dataset(
            sha256="",
            format=REFERENCE_FORMAT,
            n_train=0,
            n_validation=0,
            n_test=0,
            input_shape=[],
            labels=[],
            artifact_uri=reference.uri,
            artifact_sha256="",
            artifact_size=reference.size,
        )

    return add_task_rows(
        session, settings, request, dataset, recheck, input_shape=None, extra_hyperparameters={DATA_URI: reference.uri}
    )
