"""Predictions from a stored version: resolve the version, load its learner (cached), run it.

Learners are cached by version id in a small LRU: a version's weights never change, so
the cache needs no invalidation, and a newly promoted version is simply a new key —
it is served on the next request, without a restart. Only the weights artifact is
loaded: serving never needs the Fisher/anchor snapshot.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
from sqlalchemy.orm import Session

from app.errors import InvalidInput
from app.learning import ContinualLearner
from app.learning.state import from_safetensors_bytes
from app.metrics import predict as metrics
from app.predict.schemas import (
    InferIn, InferOut, InferTensor, ModelMetadataOut, PredictIn, PredictionOut, PredictOut,
)
from app.registry.service import get_model_by_name, list_versions, resolve_version

V2_DATATYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


class LearnerCache:
    """The last ``capacity`` learners used, keyed by version id (thread-safe)."""

    def __init__(self, capacity: int = 8):
        self.capacity = capacity
        self._learners: OrderedDict[int, ContinualLearner] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, version_id: int, load) -> ContinualLearner:
        with self._lock:
            if version_id in self._learners:
                self._learners.move_to_end(version_id)
                metrics.cache_hit()
                return self._learners[version_id]
        metrics.cache_miss()
        with metrics.learner_load():
            learner = load()  # outside the lock: loading can take a while
        with self._lock:
            self._learners[version_id] = learner
            self._learners.move_to_end(version_id)
            while len(self._learners) > self.capacity:
                self._learners.popitem(last=False)
        return learner

    def __contains__(self, version_id: int) -> bool:
        return version_id in self._learners

    def clear(self) -> None:
        with self._lock:
            self._learners.clear()


def load_learner(store, version) -> ContinualLearner:
    """The learner of one version, weights only, on the cpu."""
    weights = from_safetensors_bytes(store.get(version.weights_uri, version.weights_sha256))
    learner = ContinualLearner.from_exports(weights)
    learner.network.eval()
    return learner


def as_samples(inputs, input_shape: tuple[int, ...]) -> np.ndarray:
    """Nested lists to an N x *input_shape float array, or a clear error."""
    try:
        x = np.asarray(inputs, dtype=np.float64)
    except (ValueError, TypeError) as error:
        raise InvalidInput(f"inputs must be nested lists of numbers of one shape: {error}") from error
    if x.size == 0 or x.ndim == 0:
        raise InvalidInput("inputs holds no samples")
    if tuple(x.shape[1:]) != tuple(input_shape):
        if x.ndim == 1 and x.shape == tuple(input_shape):
            x = x[None]
        elif x.ndim >= 2 and int(np.prod(x.shape[1:])) == int(np.prod(input_shape)):
            x = x.reshape(len(x), *input_shape)  # flat samples for an image model, or the reverse
        else:
            raise InvalidInput(f"each sample must have shape {list(input_shape)}; got samples of shape {list(x.shape[1:])}")
    if not np.isfinite(x).all():
        raise InvalidInput("inputs hold non-finite values (NaN or infinity)")
    return x.astype(np.float32)


def predict(session: Session, store, cache: LearnerCache, request: PredictIn, max_samples: int) -> PredictOut:
    model = get_model_by_name(session, request.model)
    version = resolve_version(session, model, request.version)
    if len(request.inputs) > max_samples:
        raise InvalidInput(f"at most {max_samples} samples per request; got {len(request.inputs)}")
    x = as_samples(request.inputs, tuple(model.input_shape))
    learner = cache.get(version.id, lambda: load_learner(store, version))
    task_key = task_key_for(learner, model.strategy, request.task_id)
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


def task_key_for(learner: ContinualLearner, strategy: str, task_id: int | None) -> str | None:
    if task_id is None:
        if strategy == "ccll":
            raise InvalidInput(
                "this is a ccll model: prediction needs task_id, one of "
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
