"""Predictions from a stored version: resolve the version, load its learner (cached), run it.

Learners are cached by version id in a small LRU: a version's weights never change, so
the cache needs no invalidation, and a newly promoted version is simply a new key —
it is served on the next request, without a restart. Only the weights artifact is
loaded: serving never needs the Fisher/anchor snapshot.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.learning import ContinualLearner, as_samples
from app.metrics import predict as metrics
from app.predict.cache import LearnerCache
from app.predict.schemas import (
    InferIn, InferOut, InferTensor, ModelMetadataOut, PredictIn, PredictionOut, PredictOut,
)
from app.registry.service import get_model_by_name, list_versions, resolve_version
from app.registry.versions import load_version

V2_DATATYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


def predict(session: Session, store, cache: LearnerCache, request: PredictIn, max_samples: int) -> PredictOut:
    model = get_model_by_name(session, request.model)
    version = resolve_version(session, model, request.version)
    if len(request.inputs) > max_samples:
        raise InvalidInput(f"at most {max_samples} samples per request; got {len(request.inputs)}")
    try:  # checked before a learner is loaded for it
        x = as_samples(request.inputs, model.input_shape)
    except ValueError as error:
        raise InvalidInput(str(error)) from error
    learner = cache.get(version.id, lambda: load_version(store, version, with_consolidation=False))
    task_key = task_key_for(learner, request.task_id)
    try:
        with metrics.inference(model.name, len(x)):
            predictions = learner.predict(x, task_key=task_key, top_k=request.top_k)
    except ValueError as error:
        raise InvalidInput(str(error)) from error
    return PredictOut(
        model=model.name, model_version=version.number, task_id=request.task_id,
        predictions=[PredictionOut(label=p.label, probability=p.probability,
                                   top_k=p.top_k if request.top_k > 1 else None) for p in predictions],
    )


def task_key_for(learner: ContinualLearner, task_id: int | None) -> str | None:
    if task_id is None:
        if learner.predicts_per_task:
            raise InvalidInput(
                f"this is a {learner.family} model: prediction needs task_id, one of "
                f"{', '.join(learner.task_keys)} (each task has its own calibration modules and classifier)"
            )
        return None
    if str(task_id) not in learner.task_keys:
        raise InvalidInput(f"task {task_id} was not learnt by this version; it knows tasks {', '.join(learner.task_keys)}")
    return str(task_id)


def infer_v2(session: Session, store, cache: LearnerCache, name: str, body: InferIn, max_samples: int) -> InferOut:
    """Open Inference Protocol v2: the first input tensor holds the samples (row-major data)."""
    tensor = body.inputs[0]
    dtype = V2_DATATYPES.get(tensor.datatype.upper())
    if dtype is None:
        raise InvalidInput(f"datatype {tensor.datatype!r} is not supported; use one of {', '.join(V2_DATATYPES)}")
    try:
        data = np.asarray(tensor.data, dtype=dtype).reshape(-1)
        samples = data.reshape(tensor.shape)
    except (ValueError, TypeError) as error:
        raise InvalidInput(f"input {tensor.name!r}: data does not fit shape {tensor.shape}: {error}") from error
    parameters = {**(tensor.parameters or {}), **(body.parameters or {})}
    request = PredictIn(model=name, inputs=samples.tolist(), version=parameters.get("version"),
                        task_id=parameters.get("task_id"), top_k=int(parameters.get("top_k", 1)))
    answer = predict(session, store, cache, request, max_samples)
    labels = [p.label for p in answer.predictions]
    label_type = "BYTES" if any(isinstance(label, str) for label in labels) else "INT64"
    n = len(labels)
    return InferOut(model_name=name, model_version=str(answer.model_version), id=body.id, outputs=[
        InferTensor(name="label", shape=[n], datatype=label_type, data=labels),
        InferTensor(name="probability", shape=[n], datatype="FP32", data=[p.probability for p in answer.predictions]),
    ])


def model_metadata_v2(session: Session, name: str) -> ModelMetadataOut:
    model = get_model_by_name(session, name)
    versions = [str(v.number) for v in list_versions(session, model.name)]
    return ModelMetadataOut(
        name=model.name, versions=versions, platform="pytorch",
        inputs=[{"name": "input-0", "datatype": "FP32", "shape": [-1, *model.input_shape]}],
        outputs=[{"name": "label", "datatype": "INT64", "shape": [-1]},
                 {"name": "probability", "datatype": "FP32", "shape": [-1]}],
    )
