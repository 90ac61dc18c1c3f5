"""GET /models, /models/{name}, /models/{name}/versions, /models/{name}/accuracy; PUT /models/{name}/serving-version;
DELETE /models/{name}, /models/{name}/versions/{version}; POST /artifacts/gc."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.auth.deps import AdminKey, PredictKey
from app.deps import INT64_MAX, LearnersDep, SessionDep, SettingsDep, StoreDep, WriteSessionDep
from app.openapi import Responses
from app.predict.cache import version_key
from app.registry import deletion, service
from app.registry.collection import collect_garbage
from app.registry.schemas import (
    AccuracyMatrixOut,
    CollectionOut,
    DeletedOut,
    ModelOut,
    ServingVersionIn,
    ServingVersionOut,
    VersionOut,
)
from app.registry.versions import load_version

router = APIRouter(prefix="/models", tags=["models"])
artifacts_router = APIRouter(prefix="/artifacts", tags=["artifacts"])

VersionNumber = Annotated[int, Path(ge=1, le=INT64_MAX, description="a version number of the model")]

NOT_FOUND: Responses = {
    404: {
        "description": "unknown model or version",
        "content": {"application/json": {"example": {"detail": "model 'nope' does not exist"}}},
    }
}
REFUSED_DELETE: Responses = {
    409: {
        "description": "the delete would remove what is still needed; the message says what to do first",
        "content": {
            "application/json": {
                "example": {
                    "detail": "version 2 of model 'digits' is serving; serve another version first "
                    "(PUT /models/digits/serving-version), then delete it"
                }
            }
        },
    }
}
UNKNOWN_REFERENCES: Responses = {
    409: {
        "description": "a kept version's consolidation cannot be read: nothing was removed",
        "content": {
            "application/json": {
                "example": {
                    "detail": (
                        "version 3 of model 'digits': its consolidation ... cannot be read "
                        "(FileNotFoundError: ...), so what it refers to is unknown; no artifact was removed"
                    )
                }
            }
        },
    }
}


@router.get("", response_model=list[ModelOut], summary="Every model")
def list_models(session: SessionDep, caller: PredictKey) -> list[ModelOut]:
    return service.list_models(session)


@router.get(
    "/{name}",
    response_model=ModelOut,
    responses=NOT_FOUND,
    summary="One model, with the serving version's parameter counts (per task for ccll)",
)
def get_model(name: str, session: SessionDep, store: StoreDep, learners: LearnersDep, caller: PredictKey) -> ModelOut:
    return service.get_model(
        session,
        name,
        load_learner=lambda v: learners.get(version_key(v), lambda: load_version(store, v, with_consolidation=False)),
    )


@router.get(
    "/{name}/versions",
    response_model=list[VersionOut],
    responses=NOT_FOUND,
    summary="Every version with its λ, λ candidates and validation scores, and Fisher recipe",
)
def list_versions(name: str, session: SessionDep, caller: PredictKey) -> list[VersionOut]:
    return service.get_versions(session, name)


@router.get(
    "/{name}/accuracy",
    response_model=AccuracyMatrixOut,
    responses=NOT_FOUND,
    summary="The accuracy matrix, with average accuracy, BWT and forgetting",
)
def accuracy_matrix(name: str, session: SessionDep, caller: PredictKey) -> AccuracyMatrixOut:
    return service.accuracy_matrix(session, name)


@router.put(
    "/{name}/serving-version",
    response_model=ServingVersionOut,
    responses=NOT_FOUND,
    summary="Serve another version (rollback or roll forward); recorded as an alias change",
)
def set_serving_version(
    name: str, body: ServingVersionIn, session: WriteSessionDep, caller: AdminKey
) -> ServingVersionOut:
    return service.change_serving_version(session, name, body.version, body.reason)


@router.delete(
    "/{name}",
    response_model=DeletedOut,
    responses={**NOT_FOUND, **REFUSED_DELETE},
    summary="Delete a model: its versions, tasks, jobs and accuracy rows, then the artifacts nothing else "
    "refers to (409 while one of its jobs is queued or running)",
)
def delete_model(
    name: str, session: SessionDep, store: StoreDep, settings: SettingsDep, caller: AdminKey
) -> DeletedOut:
    return deletion.delete_model(session, store, settings.artifact_gc_grace_seconds, name)


@router.delete(
    "/{name}/versions/{version}",
    response_model=DeletedOut,
    responses={**NOT_FOUND, **REFUSED_DELETE},
    summary="Delete a version that neither serves nor is the parent of another (409 otherwise, or while "
    "a job of the model runs); its task and job stay",
)
def delete_version(
    name: str, version: VersionNumber, session: SessionDep, store: StoreDep, settings: SettingsDep, caller: AdminKey
) -> DeletedOut:
    return deletion.delete_version(session, store, settings.artifact_gc_grace_seconds, name, version)


@artifacts_router.post(
    "/gc",
    response_model=CollectionOut,
    responses=UNKNOWN_REFERENCES,
    summary="Remove artifacts no dataset, version or consolidation manifest refers to, once older "
    "than artifact_gc_grace_seconds",
)
def collect_artifacts(
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    caller: AdminKey,
    dry_run: Annotated[bool, Query(description="count what would be removed; remove nothing")] = False,
) -> CollectionOut:
    return CollectionOut.model_validate(collect_garbage(session, store, settings.artifact_gc_grace_seconds, dry_run))
