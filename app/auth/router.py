"""POST /keys, GET /keys, DELETE /keys/{id}: API keys, managed with an admin key."""

from __future__ import annotations

from fastapi import APIRouter

from app.auth import keys
from app.auth.deps import AdminKey, VerifiedKeysDep
from app.auth.schemas import KeyIn, KeyOut, NewKeyOut
from app.deps import RowId, WriteSessionDep

router = APIRouter(prefix="/keys", tags=["keys"])


@router.post("", response_model=NewKeyOut, status_code=201, summary="Create an API key; its secret is shown once")
def create_key(body: KeyIn, session: WriteSessionDep, caller: AdminKey) -> NewKeyOut:
    created = keys.create_key(session, scope=body.scope, name=body.name)
    session.commit()
    return NewKeyOut(**KeyOut.model_validate(created.row).model_dump(), key=created.secret)


@router.get("", response_model=list[KeyOut], summary="Every key, revoked ones included, without secrets")
def list_keys(session: WriteSessionDep, caller: AdminKey) -> list[KeyOut]:
    return keys.list_keys(session)


@router.delete(
    "/{key_id}",
    response_model=KeyOut,
    summary="Revoke a key (at once here; within RETAIN_AUTH_CACHE_SECONDS on other replicas)",
    responses={
        404: {
            "description": "unknown key",
            "content": {"application/json": {"example": {"detail": "API key 9 does not exist"}}},
        },
        409: {
            "description": "the last active admin key",
            "content": {
                "application/json": {
                    "example": {
                        "detail": "API key 1 is the last active admin key; create another admin key before revoking it"
                    }
                }
            },
        },
    },
)
def revoke_key(key_id: RowId, session: WriteSessionDep, verified: VerifiedKeysDep, caller: AdminKey) -> KeyOut:
    revoked = keys.revoke_key(session, key_id)
    verified.forget(key_id)
    return revoked
