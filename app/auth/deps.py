"""The key dependencies routes declare: ``PredictKey``, ``TrainKey``, ``AdminKey``.

Each is ``Annotated[ApiKey, Depends(...)]`` built on `authenticate` (bearer key → its row, or
401 with ``WWW-Authenticate: Bearer``), and refuses with 403 a key whose scope is too low. A route
needing a scope names it in its signature (``caller: TrainKey``); nothing about keys is written
in a route body. With ``RETAIN_AUTH=off`` every request acts as an unsaved admin key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.keys import VerifiedKeys
from app.auth.scopes import Scope
from app.db.tables import ApiKey
from app.deps import EngineDep, SettingsDep
from app.errors import Forbidden, Unauthorized

bearer = HTTPBearer(auto_error=False, description="an API key: `Authorization: Bearer <key>`")
ANONYMOUS_ADMIN = ApiKey(id=0, name="RETAIN_AUTH=off", scope=str(Scope.ADMIN), key_sha256="", prefix="")


async def get_verified_keys(request: Request) -> VerifiedKeys:
    return request.app.state.verified_keys


VerifiedKeysDep = Annotated[VerifiedKeys, Depends(get_verified_keys)]


async def authenticate(engine: EngineDep, verified: VerifiedKeysDep, settings: SettingsDep,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> ApiKey:
    """Async so that a key verified within the cache TTL costs no thread hop (the common case under
    load); only a lookup in the database runs on the thread pool."""
    if settings.auth == "off":
        return ANONYMOUS_ADMIN
    if credentials is None:
        raise Unauthorized("this route needs an API key: send `Authorization: Bearer <key>` (the first admin key "
                           "is in the data directory's admin.key; `retain keys create` makes more)")
    key = verified.cached(credentials.credentials)
    if key is None:
        key = await run_in_threadpool(verified.find_active, engine, credentials.credentials)
    if key is None:
        raise Unauthorized("the API key is not valid (unknown or revoked)")
    return key


def requiring(needed: Scope):
    async def check(key: Annotated[ApiKey, Depends(authenticate)]) -> ApiKey:
        if not Scope(key.scope).covers(needed):
            raise Forbidden(f"this route needs a key with scope {needed.value!r} or above; "
                            f"key {key.id} ({key.name!r}) has scope {key.scope!r}")
        return key

    check.__name__ = f"require_{needed.value}"
    return check


PredictKey = Annotated[ApiKey, Depends(requiring(Scope.PREDICT))]
TrainKey = Annotated[ApiKey, Depends(requiring(Scope.TRAIN))]
AdminKey = Annotated[ApiKey, Depends(requiring(Scope.ADMIN))]

AUTH_RESPONSES = {
    401: {"description": "no API key, or an unknown or revoked one", "headers": {
        "WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
        "content": {"application/json": {"example": {"detail": "the API key is not valid (unknown or revoked)"}}}},
    403: {"description": "the key's scope does not cover this route",
          "content": {"application/json": {"example": {
              "detail": "this route needs a key with scope 'admin' or above; key 2 ('ci') has scope 'train'"}}}},
}
