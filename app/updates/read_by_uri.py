"""Step 0 of an update whose data is a reference: read it, check it as an upload, store it.

The bytes are read under the same policy as at submit (app/datasets/data_uris.py), parsed
and split by the upload parser with the task's fractions and the service's seed (so the
split is the one an upload of the same file gets), and checked against the model as
POST /tasks checks an upload: the model's input shape, or, for a model without one, the
first-task rules. Only then is the parsed dataset stored and, in one transaction under the
job's lease, the dataset row filled in (format, sha256 of the referenced bytes, counts,
shape, labels, the stored artifact) and a shapeless model given its shape. Anything wrong
raises ``ReferenceUnusable``, a ValueError, so the job fails with that message as its reason
and nothing is stored.
"""

from __future__ import annotations

import posixpath

from app.datasets.data_uris import ReferencePolicy, read_reference
from app.datasets.parsing import parse_dataset
from app.datasets.storage import store_dataset
from app.db.session import begin_write
from app.db.tables import Dataset, Model
from app.errors import DomainError
from app.jobs import queue
from app.settings import Settings
from app.tasks.schemas import TaskRequest
from app.tasks.service import check_fits_model, check_new_model, parse_limits
from app.tasks.submit_by_uri import DATA_URI, REFERENCE_FORMAT


class ReferenceUnusable(ValueError):
    """The referenced data cannot be read or fails validation; the message is the job's error."""


def is_unread_reference(dataset: Dataset) -> bool:
    return dataset.format == REFERENCE_FORMAT


def read_referenced_dataset(session_factory, store, settings: Settings, held, plan) -> bool:
    """Read, check and store the task's referenced data; False when the lease was lost meanwhile."""
    task, model, dataset = plan.task, plan.model, plan.datasets[plan.task.id]
    hyperparameters = task.hyperparameters or {}
    uri = hyperparameters.get(DATA_URI) or dataset.artifact_uri
    policy = ReferencePolicy.of(settings)
    try:
        data = read_reference(uri, policy)
    except DomainError as error:
        raise ReferenceUnusable(f"the data {uri}: {error.message}") from None
    except Exception as error:  # missing since submit, credentials, network
        raise ReferenceUnusable(f"the data {uri} cannot be read: {type(error).__name__}: {error}") from None
    request = TaskRequest(
        model=model.name,
        name=task.name,
        architecture=model.architecture,
        architecture_options=model.options or None,
        strategy=task.strategy,
        ewc_lambda=hyperparameters.get("ewc_lambda", "auto"),
        epochs=None,
        batch_size=None,
        lr=None,
        test_fraction=hyperparameters.get("test_fraction", 0.2),
        validation_fraction=hyperparameters.get("validation_fraction", 0.1),
        max_forgetting=None,
    )
    try:
        parsed = parse_dataset(
            posixpath.basename(uri),
            data,
            max_bytes=policy.max_bytes,
            test_fraction=request.test_fraction,
            validation_fraction=request.validation_fraction,
            input_shape=tuple(model.input_shape) or None,
            **parse_limits(settings),
        )
        if model.input_shape:
            check_fits_model(model, request, parsed)
        else:
            check_new_model(request, parsed)
    except DomainError as error:
        raise ReferenceUnusable(f"the data {uri}: {error.message}") from None
    artifact = store_dataset(store, parsed)
    with session_factory() as session:
        begin_write(session)
        if queue.lock_owned_job(session, held) is None:
            session.rollback()
            return False
        row = session.get_one(Dataset, dataset.id)
        row.sha256, row.format = parsed.sha256, parsed.format
        row.n_train, row.n_validation, row.n_test = parsed.n_train, parsed.n_validation, parsed.n_test
        row.input_shape, row.labels = list(parsed.input_shape), parsed.labels
        row.artifact_uri, row.artifact_sha256, row.artifact_size = artifact.uri, artifact.sha256, artifact.size
        owner = session.get_one(Model, model.id)
        if not owner.input_shape:
            owner.input_shape = list(parsed.input_shape)
        session.commit()
    return True
