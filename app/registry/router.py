"""GET /models, /models/{name}, /models/{name}/versions, /models/{name}/accuracy; PUT /models/{name}/serving-version."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth.deps import AdminKey, PredictKey
from app.deps import LearnersDep, SessionDep, StoreDep, WriteSessionDep
from app.registry import service
from app.registry.schemas import AccuracyMatrixOut, ModelOut, ServingVersionIn, ServingVersionOut, VersionOut
from app.registry.versions import load_version

router = APIRouter(prefix="/models", tags=["models"])

NOT_FOUND = {404: {"description": "unknown model or version",
                   "content": {"application/json": {"example": {"detail": "model 'nope' does not exist"}}}}}


@router.get("", response_model=list[ModelOut], summary="Every model")
def list_models(session: SessionDep, caller: PredictKey) -> list[ModelOut]:
    return service.list_models(session)


@router.get("/{name}", response_model=ModelOut, responses=NOT_FOUND,
            summary="One model, with the serving version's parameter counts (per task for ccll)")
def get_model(name: str, session: SessionDep, store: StoreDep, learners: LearnersDep, caller: PredictKey) -> ModelOut:
    return service.get_model(session, name, load_learner=lambda v: learners.get(
        v.id, lambda: load_version(store, v, with_consolidation=False)))


@router.get("/{name}/versions", response_model=list[VersionOut], responses=NOT_FOUND,
            summary="Every version with its λ, λ candidates and validation scores, and Fisher recipe")
def list_versions(name: str, session: SessionDep, caller: PredictKey) -> list[VersionOut]:
    return service.get_versions(session, name)


@router.get("/{name}/accuracy", response_model=AccuracyMatrixOut, responses=NOT_FOUND,
            summary="The accuracy matrix, with average accuracy, BWT and forgetting")
def accuracy_matrix(name: str, session: SessionDep, caller: PredictKey) -> AccuracyMatrixOut:
    return service.accuracy_matrix(session, name)


@router.put("/{name}/serving-version", response_model=ServingVersionOut, responses=NOT_FOUND,
            summary="Serve another version (rollback or roll forward); recorded as an alias change")
def set_serving_version(name: str, body: ServingVersionIn, session: WriteSessionDep,
                        caller: AdminKey) -> ServingVersionOut:
    return service.change_serving_version(session, name, body.version, body.reason)
