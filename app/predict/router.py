"""POST /predict and the Open Inference Protocol v2 routes (/v2, /v2/health/*, /v2/models/{name}[/versions/{v}]...).

The prediction routes are async: their only waits (a query on a stale alias, a learner load,
the batched forward) run off the event loop in app/predict/service.py, so a request costs the
loop no thread hop of its own. Protocol routes answer errors as ``{"error": ...}`` (oip.OIPRoute).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app import health
from app.auth.deps import PredictKey
from app.deps import EngineDep, ServingDep, SessionDep
from app.predict import oip, service
from app.predict.schemas import InferOut, ModelMetadataOut, PredictIn, PredictOut

router = APIRouter(tags=["predict"])
oip_router = APIRouter(prefix="/v2", tags=["open inference protocol"], route_class=oip.OIPRoute)

ERRORS = {
    404: {"description": "unknown model or version", "content": {"application/json": {"example": {"detail": "model 'nope' does not exist"}}}},
    413: {"description": "more samples than max_predict_samples"},
    422: {"description": "inputs that do not fit the model", "content": {"application/json": {"example": {"detail": "each sample must have shape [784]; got samples of shape [3]"}}}},
}
OIP_ERRORS = {
    400: {"description": "a request the model cannot serve", "content": {"application/json": {"example": {"error": "input 'input-0': data does not fit shape [1, 64]"}}}},
    404: {"description": "unknown model or version", "content": {"application/json": {"example": {"error": "model 'nope' does not exist"}}}},
}
INFER_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": oip.InferRequest.model_json_schema(),
                         "example": {"id": "req-1", "parameters": {"top_k": 1},
                                     "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32",
                                                 "data": [0.0, 0.5, 1.0, 0.25]}]}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary",
                                            "description": f"binary tensor data: a JSON header of "
                                                           f"{oip.HEADER_LENGTH} bytes, then the tensors"}}}}}


@router.post("/predict", response_model=PredictOut, responses=ERRORS, summary="Predict labels with a model version")
async def predict(body: PredictIn, serving: ServingDep, caller: PredictKey) -> Response:
    answer = await service.predict(serving, body)
    # serialised once here: returning the model would have FastAPI validate it again first
    return Response(answer.model_dump_json(), media_type="application/json")


@oip_router.post("/models/{name}/infer", response_model=InferOut, responses=OIP_ERRORS, openapi_extra=INFER_BODY,
                 summary="Inference with the serving version (JSON or binary tensor data)")
@oip_router.post("/models/{name}/versions/{version}/infer", response_model=InferOut, responses=OIP_ERRORS,
                 openapi_extra=INFER_BODY, summary="Inference with one version (JSON or binary tensor data)")
async def infer(name: str, request: Request, serving: ServingDep, caller: PredictKey,
                version: str | None = None) -> Response:
    return await service.infer(serving, name, version, await request.body(), request.headers)


@oip_router.get("", summary="Server metadata")
async def server_metadata(request: Request, caller: PredictKey) -> dict:
    return {"name": "retain", "version": request.app.version, "extensions": ["binary_tensor_data"]}


@oip_router.get("/health/live", summary="The server is live")
async def server_live() -> dict:
    return {"live": True}


@oip_router.get("/health/ready", summary="The server is ready (its database is reachable and migrated)",
                responses={503: {"description": "not ready"}})
def server_ready(engine: EngineDep) -> dict:
    problem = health.database_problem(engine)
    if problem is not None:
        raise oip.ServerNotReady(problem)
    return {"ready": True}


@oip_router.get("/models/{name}/ready", responses=OIP_ERRORS, summary="The model's serving version can serve")
@oip_router.get("/models/{name}/versions/{version}/ready", responses=OIP_ERRORS, summary="The version can serve")
def model_ready(name: str, serving: ServingDep, caller: PredictKey, version: str | None = None) -> dict:
    return service.model_ready(serving, name, version)


@oip_router.get("/models/{name}", response_model=ModelMetadataOut, responses=OIP_ERRORS,
                summary="Model metadata: its versions, input and outputs")
@oip_router.get("/models/{name}/versions/{version}", response_model=ModelMetadataOut, responses=OIP_ERRORS,
                summary="Model version metadata")
def model_metadata(name: str, session: SessionDep, caller: PredictKey,
                   version: str | None = None) -> ModelMetadataOut:
    return service.model_metadata_v2(session, name, version)
