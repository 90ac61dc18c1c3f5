"""Models whose input shape is not known yet: created by a task whose data is a reference.

The shape of a new model comes from its first task's data; when that data is a reference,
the worker learns the shape when it reads the file (app/worker/reference.py) and until then
the model's ``input_shape`` is empty. While such a task is still queued or running, an
upload to the model is refused (409): its data could not be checked against a shape that
does not exist yet. Once every such task has failed, the next task is the model's first
again, under the architecture, options and strategy family the model was created with.
"""

from __future__ import annotations

from dataclasses import replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import Job, Model
from app.errors import Conflict, InvalidInput
from app.jobs.queue import UNFINISHED
from app.tasks.schemas import TaskRequest


def family_of(strategy: str) -> str:
    return "ccll" if strategy == "ccll" else "ewc"


def check_request_fits_model(model: Model, request: TaskRequest) -> None:
    """The checks of ``service.check_fits_model`` that need no data: fixed architecture, options, family."""
    if request.architecture is not None and request.architecture != model.architecture:
        raise InvalidInput(f"model {model.name!r} is a {model.architecture}; the architecture is fixed when a model is "
                           f"created (asked for {request.architecture})")
    if request.architecture_options and request.architecture_options != (model.options or {}):
        raise InvalidInput(f"model {model.name!r} was created with options {model.options or {}}; they cannot change")
    if model.strategy != family_of(request.strategy):
        raise InvalidInput(f"model {model.name!r} is a {model.strategy} model; strategy {request.strategy} "
                           "cannot update it (ccll models take ccll tasks only)")


def settle_shapeless_model(session: Session, model: Model, request: TaskRequest) -> TaskRequest:
    """For an upload to a shapeless model: 409 while a reference may still fix its shape; else the
    request as a first task under the model's own architecture and options."""
    pending = session.scalar(select(Job.id).where(Job.model_id == model.id, Job.status.in_(UNFINISHED))
                             .order_by(Job.id).limit(1))
    if pending is not None:
        raise Conflict(f"model {model.name!r} takes its input shape from its first task, whose data is read by "
                       f"job {pending} (still queued or running); submit this task once that job has finished, "
                       "or send it by reference too")
    check_request_fits_model(model, request)
    return replace(request, architecture=model.architecture, architecture_options=model.options or None)
