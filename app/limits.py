"""Request bodies counted as they arrive: no body over its limit is ever held in memory or on disk.

`BodyLimit` is a pure ASGI middleware (it never buffers): a ``Content-Length`` over the limit is
answered 413 before a byte of the body is read, and a body sent without one (chunked) is counted
as it streams and refused the moment it passes the limit — the multipart parser spooling an
upload to a temporary file never gets more than the limit to write. POST /tasks may carry an
upload of ``max_upload_bytes`` plus its form fields; every other route ``max_request_bytes``.
"""

from __future__ import annotations

import json

from fastapi import HTTPException

from app.settings import Settings

FORM_FIELDS_ALLOWANCE = 64 * 1024  # the form fields and multipart boundaries around an upload


def body_limit(settings: Settings, method: str, path: str) -> tuple[int, str]:
    """The byte limit of a request's body, and the setting it comes from (named in the refusal)."""
    if method == "POST" and path.rstrip("/") == "/tasks":
        return settings.max_upload_bytes + FORM_FIELDS_ALLOWANCE, "max_upload_bytes"
    if method == "POST" and path.rstrip("/") == "/models":  # an import: the weights, and base data beside them
        return 2 * settings.max_upload_bytes + FORM_FIELDS_ALLOWANCE, "max_upload_bytes"
    return settings.max_request_bytes, "max_request_bytes"


def too_large(limit: int, setting: str, size: str) -> str:
    return f"the request body is {size}; the limit is {limit} bytes ({setting})"


class BodyTooLarge(HTTPException):
    """Raised from inside `receive`; FastAPI passes HTTPExceptions from body parsing through as they are."""

    def __init__(self, limit: int, setting: str):
        super().__init__(413, too_large(limit, setting, f"over {limit} bytes"))


class BodyLimit:
    def __init__(self, app, settings: Settings):
        self.app = app
        self.settings = settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, setting = body_limit(self.settings, scope["method"], scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            detail = (
                too_large(limit, setting, f"{int(declared)} bytes (Content-Length)")
                if declared.isdigit()
                else f"Content-Length {declared.decode(errors='replace')!r} is not a byte count"
            )
            return await refuse(send, 413 if declared.isdigit() else 400, detail)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        await self.app(scope, counting_receive, send)


async def refuse(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
