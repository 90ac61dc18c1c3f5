"""Predictions from a stored version: resolve the version, load its learner (cached), run it batched.

The request path touches no database while the cached serving aliases are fresh
(app/predict/served_versions.py), loads each version once however many requests ask for it at once
(app/predict/cache.py), and runs the forward pass on a serving thread, batched with the
concurrent requests for the same version (app/predict/batching.py). Whatever could block — a
query, a load — runs in the thread pool, never on the event loop. Only the weights artifact is
loaded: serving never needs the Fisher/anchor snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast
from weakref import WeakKeyDictionary

from fastapi import Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.datasets.text import text_problem
from app.db.tables import Dataset, FeedbackPolicy, Model, ModelVersion, Task
from app.errors import InvalidInput, PayloadTooLarge
from app.feedback.prediction_log import PredictionLog, log_rate
from app.learning import ContinualLearner, Prediction, as_samples
from app.learning.data import Label
from app.learning.text_source import takes_text
from app.predict import oip
from app.predict.batching import DynamicBatcher
from app.predict.cache import LearnerCache, version_key
from app.predict.schemas import ModelMetadataOut, PredictIn, PredictionOut, PredictOut
from app.predict.served_versions import ServedModel, ServingDirectory
from app.registry.service import get_model_by_name, list_versions, resolve_version
from app.registry.versions import load_version
from app.storage.artifacts import ArtifactStore


def model_input(model: Model) -> dict:
    """The protocol's description of the one input tensor: N texts (BYTES); N images as pixel values
    (UINT8) for an imported model that scales its inputs by 1/255, so that a client sends 0..255 and
    not the [0, 1] floats torchvision users are used to (which would be scaled a second time); else N
    samples of FP32. Every numeric datatype is accepted either way."""
    if takes_text(model.input_shape):
        return {"name": "input-0", "datatype": "BYTES", "shape": [-1]}
    scale = ((model.options or {}).get("import") or {}).get("input_scale")
    datatype = "UINT8" if isinstance(scale, float) and math.isclose(scale, 1 / 255) else "FP32"
    return {"name": "input-0", "datatype": datatype, "shape": [-1, *model.input_shape]}


@dataclass
class Serving:
    """Everything the prediction path holds for the life of the app (one per API process)."""

    directory: ServingDirectory
    learners: LearnerCache
    batcher: DynamicBatcher
    store: ArtifactStore
    max_samples: int
    prediction_log: PredictionLog  # the models whose policy logs predictions (app/feedback/)
    max_text_chars: int = 100_000


async def resolve(serving: Serving, name: str, number: int | None) -> tuple[ServedModel, ModelVersion]:
    """The model and version a request for ``number`` (None: the serving one) uses: from the cache
    when fresh (no SQL, no thread hop), else looked up in the thread pool; NotFound otherwise."""
    cached = serving.directory.cached(name, number)
    if cached is not None:
        return cached
    return await run_in_threadpool(serving.directory.resolve, name, number)


async def run_predictions(
    serving: Serving, resolved: tuple[ServedModel, ModelVersion], inputs, task_id: int | None, top_k: int
) -> tuple[int, list[Prediction], ContinualLearner, list[str | None] | None]:
    """The version number that answered, one prediction per sample of ``inputs``, the learner that
    made them, and their ``prediction_id``s when the model's feedback policy logs them (else None: one
    dict lookup)."""
    model, version = resolved
    samples = checked_samples(model, inputs, serving.max_samples, serving.max_text_chars)

    def load() -> ContinualLearner:
        return load_version(serving.store, version, with_consolidation=False)

    # a loaded learner is taken inline; a load (artifact reads) runs in the thread pool
    key = version_key(version)
    learner = (
        serving.learners.get(key, load)
        if key in serving.learners
        else await run_in_threadpool(serving.learners.get, key, load)
    )
    task_key = task_key_for(learner, task_id)
    try:
        predictions = await serving.batcher.predict((key, task_key), learner, model.name, task_key, samples, top_k)
    except ValueError as error:
        raise InvalidInput(str(error)) from error
    policy = serving.prediction_log.policies.get(model.name)
    if policy is None:
        return version.number, predictions, learner, None
    return version.number, predictions, learner, serving.prediction_log.record(policy, version.id, samples, predictions)


def checked_samples(model: ServedModel, inputs, max_samples: int, max_text_chars: int = 100_000):
    """The samples as a float tensor (texts: a list of strings), checked before any learner is loaded for them."""
    count = len(inputs)
    if count > max_samples:
        raise PayloadTooLarge(f"at most {max_samples} samples per request (max_predict_samples); got {count}")
    if takes_text(model.input_shape):
        return checked_texts(model.name, inputs, max_text_chars)
    if count and any(isinstance(sample, str) for sample in inputs):
        raise InvalidInput(
            f"model {model.name!r} takes {'images' if len(model.input_shape) == 3 else 'numeric vectors'} of shape "
            f"{list(model.input_shape)}; the inputs are text"
        )
    try:
        return as_samples(inputs, cast(tuple[int, ...], model.input_shape))
    except ValueError as error:
        raise InvalidInput(str(error)) from error


def checked_texts(name: str, inputs, max_text_chars: int) -> list[str]:
    """A text model's inputs: a non-empty list of non-empty strings, each within the character limit."""
    if not len(inputs):
        raise InvalidInput("inputs holds no texts")
    for i, text in enumerate(inputs):
        if not isinstance(text, str):
            raise InvalidInput(
                f"model {name!r} takes text: inputs must be a list of strings; input {i} is {type(text).__name__}"
            )
        problem, status = text_problem(text, max_text_chars)
        if problem is not None:
            raise (PayloadTooLarge if status == 413 else InvalidInput)(f"input {i} {problem}")
    return list(inputs)


def task_key_for(learner: ContinualLearner, task_id: int | None) -> str | None:
    if task_id is None:
        if learner.predicts_per_task:
            raise InvalidInput(
                f"this is a {learner.family} model: prediction needs task_id, one of "
                f"{', '.join(learner.task_keys)} (each task has its own calibration modules and classifier)"
            )
        return None
    if str(task_id) not in learner.task_keys:
        raise InvalidInput(
            f"task {task_id} was not learnt by this version; it knows tasks {', '.join(learner.task_keys)}"
        )
    return str(task_id)


async def predict(serving: Serving, request: PredictIn) -> PredictOut:
    number, predictions, _, prediction_ids = await run_predictions(
        serving, await resolve(serving, request.model, request.version), request.inputs, request.task_id, request.top_k
    )
    ranked = request.top_k > 1
    if prediction_ids is None:
        answers = [
            PredictionOut(label=p.label, probability=p.probability, top_k=p.top_k if ranked else None)
            for p in predictions
        ]
    else:  # given to the constructor: a pydantic attribute set afterwards costs more
        answers = [
            PredictionOut(label=p.label, probability=p.probability, top_k=p.top_k if ranked else None, prediction_id=i)
            for p, i in zip(predictions, prediction_ids, strict=True)
        ]
    return PredictOut(model=request.model, model_version=number, task_id=request.task_id, predictions=answers)


async def infer(serving: Serving, name: str, version: str | None, body: bytes, raw_headers) -> Response:
    """Open Inference Protocol v2 inference: the one input tensor holds the samples. An unknown model
    or version is 404 before the body is read (a cached lookup, no SQL), as the protocol's servers answer."""
    number = oip.version_number(version)
    resolved = await resolve(serving, name, number)
    request, samples = oip.read_request(body, raw_headers)
    options = oip.request_options(request)
    asked, top_k, task_id = oip.integer_options(options)
    if number is None and asked is not None:
        resolved = await resolve(serving, name, asked)
    answered, predictions, learner, prediction_ids = await run_predictions(serving, resolved, samples, task_id, top_k)
    return oip.infer_response(
        request, name, answered, predictions, top_k, options, learned_label_datatype(learner), prediction_ids
    )


# a loaded learner's labels never change: their datatype is worked out once per learner held in the cache
LABEL_DATATYPES: WeakKeyDictionary[ContinualLearner, str] = WeakKeyDictionary()


def learned_label_datatype(learner: ContinualLearner) -> str:
    """The protocol datatype of a loaded version's labels (`oip.label_datatype` of all it knows)."""
    datatype = LABEL_DATATYPES.get(learner)
    if datatype is None:
        datatype = LABEL_DATATYPES[learner] = oip.label_datatype(learner.labels)
    return datatype


def model_ready(serving: Serving, name: str, version: str | None) -> dict:
    """Ready when the version (default: the serving one) exists; NotFound otherwise."""
    serving.directory.resolve(name, oip.version_number(version))
    return {"name": name, "ready": True}


def model_metadata_v2(session: Session, name: str, version: str | None = None) -> ModelMetadataOut:
    """The protocol's model metadata. Its label outputs have the datatype inference answers them in: that of
    the version asked for, else of the serving one (what an inference naming no version runs). A model
    whose feedback policy logs predictions declares their ids too (``prediction_id``)."""
    model = get_model_by_name(session, name)
    number = oip.version_number(version)
    described = resolve_version(session, model, number) if number is not None else serving_version(session, model)
    versions = [str(v.number) for v in list_versions(session, model.name)] if number is None else [str(number)]
    label_type = oip.label_datatype(version_labels(session, model, described))
    return ModelMetadataOut(
        name=model.name,
        versions=versions,
        platform="pytorch",
        inputs=[model_input(model)],
        outputs=[
            {"name": "label", "datatype": label_type, "shape": [-1]},
            {"name": "probability", "datatype": "FP32", "shape": [-1]},
            {"name": "top_k_labels", "datatype": label_type, "shape": [-1, -1]},
            {"name": "top_k_probabilities", "datatype": "FP32", "shape": [-1, -1]},
            *(
                [{"name": oip.PREDICTION_ID, "datatype": "BYTES", "shape": [-1]}]
                if logs_predictions(session, model)
                else []
            ),
        ],
    )


def logs_predictions(session: Session, model: Model) -> bool:
    policy = session.get(FeedbackPolicy, model.id)
    return policy is not None and log_rate(policy.policy) > 0


def serving_version(session: Session, model: Model) -> ModelVersion | None:
    if model.serving_version_id is None:
        return None
    return session.get(ModelVersion, model.serving_version_id)


def version_labels(session: Session, model: Model, version: ModelVersion | None) -> list[Label]:
    """Every label a version knows: those of the tasks along its parent chain (a version is its parent
    plus one task, and deletion keeps every kept version's chain whole). Without a version (none
    serves yet), the labels of all the model's tasks."""
    if version is None:
        task_ids = list(session.scalars(select(Task.id).where(Task.model_id == model.id)))
    else:
        chain = {
            row.id: row
            for row in session.execute(
                select(ModelVersion.id, ModelVersion.parent_id, ModelVersion.task_id).where(
                    ModelVersion.model_id == model.id
                )
            )
        }
        task_ids, link = [], chain.get(version.id)
        while link is not None:
            if link.task_id is not None:
                task_ids.append(link.task_id)
            link = chain.get(link.parent_id) if link.parent_id is not None else None
    query = select(Dataset.labels).join(Task, Task.dataset_id == Dataset.id).where(Task.id.in_(task_ids))
    return [label for labels in session.scalars(query) for label in labels]
