"""Domain errors: what a service function raises when a request cannot be served.

Each carries a message for the user; app/main.py maps the class to an HTTP status in one
exception handler, so routes never build error answers by hand.
"""


class DomainError(Exception):
    """Base class; ``status_code`` is the HTTP status the API answers with."""

    status_code = 400
    headers: dict[str, str] | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    """The request or the uploaded data is wrong (shape, values, format, fields)."""

    status_code = 422


class UnsupportedFormat(InvalidInput):
    status_code = 415


class PayloadTooLarge(InvalidInput):
    """Over a configured limit (bytes or samples)."""

    status_code = 413


class Unauthorized(DomainError):
    """No API key, or one the service does not know (or revoked)."""

    status_code = 401
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError):
    """A valid API key whose scope does not cover the route."""

    status_code = 403


class QuotaExceeded(DomainError):
    """Too much queued work for one model; try again after ``retry_after`` seconds."""

    status_code = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class NotFound(DomainError):
    status_code = 404


class Conflict(DomainError):
    """The request clashes with the current state (e.g. cancelling a finished job)."""

    status_code = 409


class IllegalTransition(Conflict):
    """A job status change the state machine does not allow (e.g. a finished job started again)."""


class ArtifactCorrupt(DomainError):
    """A stored artifact does not match its recorded sha256 (torn write or tampering): never used."""

    status_code = 500
