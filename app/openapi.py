"""Answers every operation can give that FastAPI does not list by itself, added to /openapi.json once.

An operation that depends on an API key (FastAPI marks it with the bearer security scheme) may
answer 401 and 403; one that takes a body may answer 400 (a body that cannot be parsed, FastAPI's
own answer) and 413 (over its byte limit, app/limits.py). Documented here so that every status
code the service sends is in the schema (Schemathesis checks that, tests/service/test_fuzz.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from app.auth.deps import AUTH_RESPONSES

Responses = dict[int | str, dict[str, Any]]
"""The ``responses`` of a route, as FastAPI takes them: status code -> description, content, ..."""


def _answer(description: str, example: str) -> dict:
    return {"description": description, "content": {"application/json": {"example": {"detail": example}}}}


BODY_RESPONSES: Responses = {
    400: _answer("the body cannot be parsed (not JSON, a broken form)", "There was an error parsing the body"),
    413: _answer(
        "the body is over its byte limit (max_upload_bytes for POST /tasks, else max_request_bytes)",
        "the request body is 70000000 bytes (Content-Length); the limit is 67108864 bytes (max_request_bytes)",
    ),
}


def document_common_answers(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    if not isinstance(operation, dict):
                        continue
                    extra = {
                        **(AUTH_RESPONSES if operation.get("security") else {}),
                        **(BODY_RESPONSES if "requestBody" in operation else {}),
                    }
                    for status, answer in extra.items():
                        operation["responses"].setdefault(str(status), answer)
        return app.openapi_schema

    app.openapi = openapi
