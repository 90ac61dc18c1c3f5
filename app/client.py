"""The retain API seen from outside: an HTTP client for the CLI, the demo, tests and scripts.

JSON in, JSON out; every failure (server unreachable, a 4xx/5xx answer) is one
`ClientError` whose message is the server's own explanation, ready to show a user.
Following a job is polling it until its status is terminal; a callback sees every
poll, so a caller can draw progress without this module knowing how.

Only httpx and `app.jobs.status` (which imports nothing) are imported here, never the
server's code: the client works where only the client is installed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from app.jobs.status import TERMINAL_STATUSES
from app.uploads import UploadError, import_body, teach_body

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_KEY_FILE = Path("data") / "admin.key"
"""Where `retain serve` on the embedded default writes the admin key it creates on a first start."""


def find_api_key(explicit: str | None = None) -> str | None:
    """The key to send: ``explicit`` (--api-key), else $RETAIN_API_KEY, else the admin key file the
    server on this machine wrote ($RETAIN_ADMIN_KEY_FILE, default ./data/admin.key), else None."""
    if explicit:
        return explicit
    if os.environ.get("RETAIN_API_KEY"):
        return os.environ["RETAIN_API_KEY"]
    path = Path(os.environ.get("RETAIN_ADMIN_KEY_FILE") or DEFAULT_KEY_FILE)
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


JobCallback = Callable[[str, dict], None]
"""Called as ``on_poll(label, job)`` with each job's latest state, every time it is polled."""


class ClientError(Exception):
    """A failure to report to the user as one line (the CLI prints it and exits non-zero)."""


class StoppedFollowing(ClientError):
    """Following was interrupted (Ctrl-C); the jobs in `pending` keep running on the server."""

    def __init__(self, pending: list[int]):
        self.pending = pending
        super().__init__(f"stopped following; job(s) {', '.join(map(str, pending))} keep running on the server")


def server_message(response: httpx.Response) -> str:
    """The server's own explanation of an error answer, whatever shape it came in."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "message", "error"):
            value = body.get(key)
            if isinstance(value, str):
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return value["message"]
            if isinstance(value, list):  # FastAPI request validation errors
                return "; ".join(_validation_issue(item) for item in value)
    return json.dumps(body)


def _validation_issue(item: Any) -> str:
    if not isinstance(item, dict):
        return str(item)
    location = ".".join(str(part) for part in item.get("loc", []) if part not in ("body", "query", "path"))
    return f"{location}: {item.get('msg', item)}" if location else str(item.get("msg", item))


class RetainClient:
    """One connection to a retain API; use it as a context manager so the connection closes."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, timeout: float = 30.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RetainClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """The decoded JSON answer (None when empty); transport and HTTP errors as ClientError."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise ClientError(
                f"cannot reach the retain server at {self.url} ({exc}). "
                "Start one with `retain serve`, or point the CLI at yours with --url or RETAIN_URL."
            ) from exc
        except httpx.TimeoutException as exc:
            raise ClientError(f"the retain server at {self.url} did not answer {method} {path} in time") from exc
        except httpx.TransportError as exc:
            raise ClientError(f"{method} {self.url}{path} failed: {exc}") from exc
        if response.is_error:
            hint = (
                " Pass a key with --api-key or RETAIN_API_KEY (the server's first admin key is in its data "
                "directory's admin.key)."
                if response.status_code == 401
                else ""
            )
            raise ClientError(f"{method} {path} failed ({response.status_code}): {server_message(response)}{hint}")
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        """GET with query parameters; a parameter given as None is left out."""
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def send_feedback(
        self, model: str, labels: Mapping[str, Any] | None = None, file: str | Path | None = None
    ) -> dict:
        """POST /feedback with true labels by prediction id (``labels``), or POST /feedback/file with a
        CSV of prediction_id,label or a file of labelled samples (any format POST /tasks takes)."""
        if file is None:
            items = [{"prediction_id": key, "label": label} for key, label in (labels or {}).items()]
            return self.request("POST", "/feedback", json={"model": model, "items": items})
        path = Path(file)
        if not path.is_file():
            raise ClientError(f"{path}: no such file")
        with path.open("rb") as upload:
            return self.request(
                "POST", "/feedback/file", data={"model": model}, files={"file": (path.name, upload)}, timeout=600.0
            )

    def set_feedback_policy(self, model: str, policy: Mapping[str, Any]) -> dict:
        """PUT /models/{model}/feedback-policy: turns the loop on (or changes it)."""
        return self.request("PUT", f"/models/{model}/feedback-policy", json=dict(policy))

    def feedback_status(self, model: str) -> dict:
        """The policy (None when unset), live accuracy and the trigger decisions of one model."""
        try:
            policy = self.get(f"/models/{model}/feedback-policy")
        except ClientError as error:
            if "(404)" not in str(error) or "no feedback policy" not in str(error):
                raise
            policy = None
        return {
            "policy": policy,
            "live_accuracy": self.get(f"/models/{model}/live-accuracy"),
            "triggers": self.get(f"/models/{model}/triggers"),
        }

    def submit_task(
        self, source: str | Path, fields: Mapping[str, Any], progress: Callable[[int, int], None] | None = None
    ) -> dict:
        """POST /tasks: a dataset file, a folder of image folders (zipped on the fly) or a reference the
        server reads (s3://, file://) as a new task of a model; fields set to None are left out.
        ``progress(sent, total)`` follows the bytes of an upload as they go."""
        try:
            with teach_body(source, fields, progress) as body:
                return self.request("POST", "/tasks", **body, timeout=600.0)
        except UploadError as error:
            raise ClientError(str(error)) from error

    def import_model(
        self,
        weights: str | Path,
        fields: Mapping[str, Any],
        base_data: str | Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict:
        """POST /models: import trained weights (a .safetensors file, or a Hugging Face save_pretrained
        folder, zipped on the fly) as a new model, with optional base data; returns the import task."""
        try:
            with import_body(weights, fields, base_data, progress) as body:
                return self.request("POST", "/models", **body, timeout=600.0)
        except UploadError as error:
            raise ClientError(str(error)) from error

    def follow_jobs(
        self,
        jobs: Mapping[str, int],
        on_poll: JobCallback | None = None,
        poll_seconds: float = 0.5,
        timeout: float | None = None,
    ) -> dict[str, dict]:
        """Poll jobs (by label) until each reaches a terminal status; returns each one's final state.

        `on_poll(label, job)` sees every poll. Ctrl-C stops following only, as
        StoppedFollowing: the jobs keep running on the server. With a timeout, jobs
        still pending after it raise ClientError.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        finished: dict[str, dict] = {}
        try:
            while len(finished) < len(jobs):
                for label, job_id in jobs.items():
                    if label in finished:
                        continue
                    job = self.get(f"/jobs/{job_id}")
                    if on_poll is not None:
                        on_poll(label, job)
                    if job["status"] in TERMINAL_STATUSES:
                        finished[label] = job
                if len(finished) == len(jobs):
                    break
                if deadline is not None and time.monotonic() > deadline:
                    pending = ", ".join(str(jobs[label]) for label in jobs if label not in finished)
                    raise ClientError(f"job(s) {pending} still not finished after {timeout:g}s")
                time.sleep(poll_seconds)
        except KeyboardInterrupt:
            raise StoppedFollowing([jobs[label] for label in jobs if label not in finished]) from None
        return finished

    def follow_job(
        self, job_id: int, on_poll: JobCallback | None = None, poll_seconds: float = 0.5, timeout: float | None = None
    ) -> dict:
        """One job's final state (see follow_jobs); its label is ``job <id>``."""
        label = f"job {job_id}"
        return self.follow_jobs({label: job_id}, on_poll, poll_seconds, timeout)[label]
