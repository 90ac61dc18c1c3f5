"""POST /predict and the Open Inference Protocol v2 routes (/v2, /v2/health/*, /v2/models/{name}[/versions/{v}]...).

The prediction routes are async: their only waits (a query on a stale alias, a learner load,
the batched forward) run off the event loop in app/predict/service.py, so a request costs the
loop no thread hop of its own. The three inference routes are lean Starlette routes at the head of
the app (``prediction_routes``) and FastAPI declarations that document them (``prediction_router``).
Protocol routes answer errors as ``{"error": ...}`` (oip.protocol_answer, oip.OIPRoute).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import StringConstraints

from app import health
from app.auth.deps import PredictKey
from app.deps import EngineDep, ServingDep, SessionDep
from app.openapi import Responses
from app.predict import oip, service
from app.predict.lean_route import LeanRoute
from app.predict.schemas import InferOut, ModelMetadataOut, PredictIn, PredictOut

OIP_TAGS: list[str | Enum] = ["open inference protocol"]  # as FastAPI types its tags
oip_router = APIRouter(prefix="/v2", tags=OIP_TAGS, route_class=oip.OIPRoute)

ERRORS: Responses = {
    404: {
        "description": "unknown model or version",
        "content": {"application/json": {"example": {"detail": "model 'nope' does not exist"}}},
    },
    413: {"description": "more samples than max_predict_samples"},
    422: {
        "description": "inputs that do not fit the model",
        "content": {
            "application/json": {"example": {"detail": "each sample must have shape [784]; got samples of shape [3]"}}
        },
    },
}
OIP_ERRORS: Responses = {
    400: {
        "description": "a request the model cannot serve",
        "content": {"application/json": {"example": {"error": "input 'input-0': data does not fit shape [1, 64]"}}},
    },
    404: {
        "description": "unknown model or version",
        "content": {"application/json": {"example": {"error": "model 'nope' does not exist"}}},
    },
}
# A model version in a path or query: 1 … 2^63−1 as digits (tritonclient sends versions as strings).
VersionText = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,17}$")]


def inlined(schema: dict) -> dict:
    """A pydantic JSON schema with its ``$defs`` substituted in place: a schema embedded in the
    OpenAPI document cannot point at ``#/$defs/...``, which would mean the document's own root."""
    definitions = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


# Only the JSON body is in the schema: the binary tensor data extension (a JSON header whose length
# is the `Inference-Header-Content-Length` header, then raw tensors) cannot be described as an
# OpenAPI media type without every random byte string looking valid to a schema-driven client.
INFER_BODY: dict[str, Any] = {
    "description": "A JSON inference request, whatever Content-Type it is sent with; or, with the header "
    f"`{oip.HEADER_LENGTH}: N`, the binary tensor data extension: N bytes of that JSON, then "
    "the tensors' bytes (as tritonclient sends with binary_data=True).",
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": inlined(oip.INFER_REQUEST.json_schema()),
                "example": {
                    "id": "req-1",
                    "parameters": {"top_k": 1},
                    "inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [0.0, 0.5, 1.0, 0.25]}],
                },
            }
        },
    },
}


async def predict(body: PredictIn, serving: ServingDep, caller: PredictKey) -> Response:
    answer = await service.predict(serving, body)
    # serialised once here: returning the model would have FastAPI validate it again first
    return Response(answer.model_dump_json(), media_type="application/json")


async def infer(name: str, request: Request, serving: ServingDep, caller: PredictKey) -> Response:
    return await service.infer(serving, name, None, await request.body(), request.scope["headers"])


async def infer_version(
    name: str, version: VersionText, request: Request, serving: ServingDep, caller: PredictKey
) -> Response:
    return await service.infer(serving, name, version, await request.body(), request.scope["headers"])


PREDICT_PATH = "/predict"
INFER_PATH = "/v2/models/{name}/infer"
INFER_VERSION_PATH = "/v2/models/{name}/versions/{version}/infer"


def prediction_routes() -> list[LeanRoute]:
    """``POST /predict`` and the protocol's two inference routes as lean Starlette routes, for
    ``FastAPI(routes=...)``: first in the app's table, before the documentation routes FastAPI adds
    (``/openapi.json``, ``/docs``, ...) and every router included afterwards, so a prediction is matched
    at once (an included router's routes are matched twice per request by FastAPI 0.160 and later,
    each through a per-route context layer) and every other request is refused by them by its path's
    end in a few opcodes (app/predict/lean_route.py)."""
    return [
        LeanRoute(PREDICT_PATH, predict, methods=["POST"]),
        LeanRoute(INFER_PATH, infer, methods=["POST"], answer_error=oip.protocol_answer),
        LeanRoute(INFER_VERSION_PATH, infer_version, methods=["POST"], answer_error=oip.protocol_answer),
    ]


# The same endpoints declared as FastAPI routes: what /openapi.json documents. Behind the lean routes of
# `prediction_routes` they see no request; without them they would give the same answers.
prediction_router = APIRouter()
prediction_router.add_api_route(
    PREDICT_PATH,
    predict,
    methods=["POST"],
    response_model=PredictOut,
    responses=ERRORS,
    tags=["predict"],
    summary="Predict labels with a model version",
)
for path, endpoint, summary in (
    (INFER_PATH, infer, "Inference with the serving version (JSON or binary tensor data)"),
    (INFER_VERSION_PATH, infer_version, "Inference with one version (JSON or binary tensor data)"),
):
    prediction_router.add_api_route(
        path,
        endpoint,
        methods=["POST"],
        route_class_override=oip.OIPRoute,
        tags=OIP_TAGS,
        response_model=InferOut,
        responses=OIP_ERRORS,
        openapi_extra=INFER_BODY,
        summary=summary,
    )


@oip_router.get("", summary="Server metadata")
async def server_metadata(request: Request, caller: PredictKey) -> dict:
    return {"name": "retain", "version": request.app.version, "extensions": ["binary_tensor_data"]}


@oip_router.get("/health/live", summary="The server is live")
async def server_live() -> dict:
    return {"live": True}


@oip_router.get(
    "/health/ready",
    summary="The server is ready (its database is reachable and migrated)",
    responses={503: {"description": "not ready"}},
)
def server_ready(engine: EngineDep) -> dict:
    problem = health.database_problem(engine)
    if problem is not None:
        raise oip.ServerNotReady(problem)
    return {"ready": True}


@oip_router.get("/models/{name}/ready", responses=OIP_ERRORS, summary="The model's serving version can serve")
def model_ready(name: str, serving: ServingDep, caller: PredictKey) -> dict:
    return service.model_ready(serving, name, None)


@oip_router.get("/models/{name}/versions/{version}/ready", responses=OIP_ERRORS, summary="The version can serve")
def version_ready(name: str, version: VersionText, serving: ServingDep, caller: PredictKey) -> dict:
    return service.model_ready(serving, name, version)


@oip_router.get(
    "/models/{name}",
    response_model=ModelMetadataOut,
    responses=OIP_ERRORS,
    summary="Model metadata: its versions, input and outputs",
)
def model_metadata(name: str, session: SessionDep, caller: PredictKey) -> ModelMetadataOut:
    return service.model_metadata_v2(session, name, None)


@oip_router.get(
    "/models/{name}/versions/{version}",
    response_model=ModelMetadataOut,
    responses=OIP_ERRORS,
    summary="Model version metadata",
)
def version_metadata(name: str, version: VersionText, session: SessionDep, caller: PredictKey) -> ModelMetadataOut:
    return service.model_metadata_v2(session, name, version)
