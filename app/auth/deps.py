"""The key dependencies routes declare: ``PredictKey``, ``TrainKey``, ``AdminKey``.

Each is ``Annotated[ApiKey, Depends(ScopedKey(scope))]``: the bearer key → its row, or 401 with
``WWW-Authenticate: Bearer``, and 403 for a key whose scope is too low. A route
needing a scope names it in its signature (``caller: TrainKey``); nothing about keys is written
in a route body. With ``RETAIN_AUTH=off`` every request acts as an unsaved admin key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer

from app.auth.keys import VerifiedKeys
from app.auth.scopes import Scope
from app.db.tables import ApiKey
from app.errors import Forbidden, Unauthorized

ANONYMOUS_ADMIN = ApiKey(id=0, name="RETAIN_AUTH=off", scope=str(Scope.ADMIN), key_sha256="", prefix="")


async def get_verified_keys(request: Request) -> VerifiedKeys:
    return request.app.state.verified_keys


VerifiedKeysDep = Annotated[VerifiedKeys, Depends(get_verified_keys)]


class ScopedKey(HTTPBearer):
    """The bearer key of a request, checked to cover ``needed``: 401 without a valid key, 403 when
    its scope is too low.

    One dependency per route, not a chain (bearer → settings, engine, verified keys → key → scope):
    FastAPI resolves every dependency node on every request, and on the prediction routes the
    chain of seven cost more CPU than the forward pass (docs/benchmarks/measurements.md).
    Being an ``HTTPBearer`` it still marks the operation with the bearer security scheme in
    /openapi.json (the Authorize button of /docs, and the 401/403 answers of app/openapi.py). Async
    so that a key verified within the cache TTL costs no thread hop (the common case under load);
    only a lookup in the database runs on the thread pool.
    """

    def __init__(self, needed: Scope):
        super().__init__(
            auto_error=False, scheme_name="HTTPBearer", description="an API key: `Authorization: Bearer <key>`"
        )
        self.needed = needed

    async def __call__(self, request: Request) -> ApiKey:  # type: ignore[override]
        state = request.app.state
        if state.settings.auth == "off":
            return ANONYMOUS_ADMIN
        scheme, _, secret = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not secret:
            raise Unauthorized(
                "this route needs an API key: send `Authorization: Bearer <key>` (the first admin "
                "key is in the data directory's admin.key; `retain keys create` makes more)"
            )
        verified: VerifiedKeys = state.verified_keys
        key = verified.cached(secret)
        if key is None:
            key = await run_in_threadpool(verified.find_active, state.engine, secret)
        if key is None:
            raise Unauthorized("the API key is not valid (unknown or revoked)")
        if not Scope(key.scope).covers(self.needed):
            raise Forbidden(
                f"this route needs a key with scope {self.needed.value!r} or above; "
                f"key {key.id} ({key.name!r}) has scope {key.scope!r}"
            )
        return key


PredictKey = Annotated[ApiKey, Depends(ScopedKey(Scope.PREDICT))]
TrainKey = Annotated[ApiKey, Depends(ScopedKey(Scope.TRAIN))]
AdminKey = Annotated[ApiKey, Depends(ScopedKey(Scope.ADMIN))]

AUTH_RESPONSES = {
    401: {
        "description": "no API key, or an unknown or revoked one",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
        "content": {"application/json": {"example": {"detail": "the API key is not valid (unknown or revoked)"}}},
    },
    403: {
        "description": "the key's scope does not cover this route",
        "content": {
            "application/json": {
                "example": {
                    "detail": "this route needs a key with scope 'admin' or above; key 2 ('ci') has scope 'train'"
                }
            }
        },
    },
}
