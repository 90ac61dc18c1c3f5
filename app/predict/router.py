"""POST /predict and the Open Inference Protocol v2 routes (GET/POST /v2/models/{name}[/infer])."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.deps import PredictKey
from app.deps import LearnersDep, SessionDep, SettingsDep, StoreDep
from app.predict import service
from app.predict.schemas import InferIn, InferOut, ModelMetadataOut, PredictIn, PredictOut

router = APIRouter(tags=["predict"])

ERRORS = {
    404: {"description": "unknown model or version", "content": {"application/json": {"example": {"detail": "model 'nope' does not exist"}}}},
    422: {"description": "inputs that do not fit the model", "content": {"application/json": {"example": {"detail": "each sample must have shape [784]; got samples of shape [3]"}}}},
}


@router.post("/predict", response_model=PredictOut, responses=ERRORS, summary="Predict labels with a model version")
def predict(body: PredictIn, session: SessionDep, store: StoreDep, learners: LearnersDep,
            settings: SettingsDep, caller: PredictKey) -> PredictOut:
    return service.predict(session, store, learners, body, settings.max_predict_samples)


@router.post("/v2/models/{name}/infer", response_model=InferOut, responses=ERRORS,
             summary="Open Inference Protocol v2 (KServe) inference")
def infer(name: str, body: InferIn, session: SessionDep, store: StoreDep, learners: LearnersDep,
          settings: SettingsDep, caller: PredictKey) -> InferOut:
    return service.infer_v2(session, store, learners, name, body, settings.max_predict_samples)


@router.get("/v2/models/{name}", response_model=ModelMetadataOut, responses=ERRORS,
            summary="Open Inference Protocol v2 model metadata")
def model_metadata(name: str, session: SessionDep, caller: PredictKey) -> ModelMetadataOut:
    return service.model_metadata_v2(session, name)
