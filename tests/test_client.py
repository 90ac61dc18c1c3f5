"""`RetainClient` over real HTTP, against a small scripted server: the error messages a user
sees for each shape of error answer, and following jobs until they end.

The full API behind the client is exercised by tests/cli and tests/test_demo.py; here
the server's answers are fixed, so each case of the client is hit exactly.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.client import ClientError, RetainClient, StoppedFollowing

ANSWERS = {
    "/plain-detail": (404, {"detail": "task 7 not found"}),
    "/domain-error": (409, {"error": {"code": "conflict", "message": "model m is busy"}}),
    "/validation": (
        422,
        {"detail": [{"loc": ["body", "epochs"], "msg": "must be positive"}, {"loc": ["query"], "msg": "bad query"}]},
    ),
    "/not-json": (502, "upstream went away"),
}


class ScriptedAPI(BaseHTTPRequestHandler):
    """Fixed error answers, and jobs that go queued -> running -> their final status, one step per poll."""

    polls: dict[int, int] = {}
    finals = {1: "succeeded", 2: "rejected", 3: "running"}  # job 3 never ends

    def do_GET(self) -> None:
        if self.path.startswith("/jobs/"):
            job_id = int(self.path.rsplit("/", 1)[1])
            seen = self.polls[job_id] = self.polls.get(job_id, 0) + 1
            status = ["queued", "running"][seen - 1] if seen <= 2 else self.finals[job_id]
            self.answer(200, {"id": job_id, "status": status, "progress": {"fraction": min(seen / 3, 1.0)}})
        elif self.path in ANSWERS:
            self.answer(*ANSWERS[self.path])
        else:
            self.answer(200, {"path": self.path})

    def answer(self, status: int, body) -> None:
        payload = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def api():
    ScriptedAPI.polls = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), ScriptedAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with RetainClient(f"http://127.0.0.1:{server.server_address[1]}") as client:
        yield client
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/plain-detail", "GET /plain-detail failed (404): task 7 not found"),
        ("/domain-error", "GET /domain-error failed (409): model m is busy"),
        ("/validation", "GET /validation failed (422): epochs: must be positive; bad query"),
        ("/not-json", "GET /not-json failed (502): upstream went away"),
    ],
)
def test_an_error_answer_becomes_the_servers_own_message(api, path, message):
    with pytest.raises(ClientError) as raised:
        api.get(path)
    assert str(raised.value) == message


def test_get_leaves_out_parameters_given_as_none(api):
    assert api.get("/jobs", model="m", status=None) == {"path": "/jobs?model=m"}


def test_an_unreachable_server_says_how_to_start_one():
    with socket.socket() as probe:  # bound, never listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
        with RetainClient(url) as client, pytest.raises(ClientError, match="cannot reach the retain server"):
            client.get("/jobs")


def test_following_jobs_polls_each_until_its_status_is_terminal(api):
    seen: list[tuple[str, str]] = []
    finished = api.follow_jobs(
        {"a": 1, "b": 2}, on_poll=lambda label, job: seen.append((label, job["status"])), poll_seconds=0.01
    )
    assert {label: job["status"] for label, job in finished.items()} == {"a": "succeeded", "b": "rejected"}
    assert [status for label, status in seen if label == "a"] == ["queued", "running", "succeeded"]
    assert ScriptedAPI.polls == {1: 3, 2: 3}  # no poll after a job ended

    assert api.follow_job(1, poll_seconds=0.01)["status"] == "succeeded"  # already over: one poll


def test_following_times_out_naming_the_pending_jobs(api):
    with pytest.raises(ClientError, match=r"job\(s\) 3 still not finished"):
        api.follow_jobs({"a": 1, "stuck": 3}, poll_seconds=0.01, timeout=0.2)


def test_ctrl_c_stops_following_and_names_the_jobs_left_running(api):
    def interrupt_on_running(label: str, job: dict) -> None:
        if job["status"] == "running":
            raise KeyboardInterrupt

    with pytest.raises(StoppedFollowing) as raised:
        api.follow_jobs({"a": 1, "b": 2}, on_poll=interrupt_on_running, poll_seconds=0.01)
    assert raised.value.pending == [1, 2]
    assert "job(s) 1, 2 keep running on the server" in str(raised.value)
