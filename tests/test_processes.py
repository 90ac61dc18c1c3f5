"""`app.processes`: real child processes started, awaited over HTTP, stopped with SIGTERM or killed.

The children are small Python programs (an HTTP server that logs its port like
uvicorn does, one that ignores SIGTERM), so each case takes about a second; the last
starts the service itself, twice.
"""

from __future__ import annotations

import signal
import sys
import textwrap
import time

import httpx
import pytest

from app.processes import UVICORN_URL, LocalServer, ManagedProcess, ProcessGroup, ServiceStartError

# Binds a free port, says so in uvicorn's words, serves 200 on /readyz, exits 0 on SIGTERM.
HTTP_CHILD = textwrap.dedent("""
    import signal, sys
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/readyz" else 404)
            self.end_headers()
        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Ready)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"Uvicorn running on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
""")
STUBBORN_CHILD = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
)


def test_waits_for_the_url_read_from_the_log_then_stops_with_sigterm(tmp_path):
    with ProcessGroup(tmp_path, env={"PYTHONUNBUFFERED": "1"}) as group:
        api = group.start("api", sys.executable, "-c", HTTP_CHILD, EXTRA="1")
        assert api.env["EXTRA"] == "1" and api.log_path == tmp_path / "api.log"
        url = api.wait_until_answers(lambda: api.search_log(UVICORN_URL), path="/readyz", timeout=30)
        assert url.startswith("http://127.0.0.1:") and api.running
        assert group.stop_all(timeout=10) == {"api": 0}
    assert not api.killed and "Uvicorn running on" in group.log("api")


def test_one_that_ignores_sigterm_is_killed_after_the_grace_period(tmp_path):
    stubborn = ManagedProcess([sys.executable, "-c", STUBBORN_CHILD], tmp_path / "stubborn.log").start()
    while "up" not in stubborn.log():  # its handler is set before it says so
        assert stubborn.running
        time.sleep(0.05)
    assert stubborn.stop(timeout=0.5) == -signal.SIGKILL
    assert stubborn.killed


def test_a_child_that_exits_early_fails_the_wait_with_its_log(tmp_path):
    with (
        ManagedProcess(
            [sys.executable, "-c", "print('bad config'); raise SystemExit(4)"], tmp_path / "short.log", name="short"
        ) as short,
        pytest.raises(ServiceStartError, match=r"(?s)short exited with 4:.*bad config"),
    ):
        short.wait_until_answers("http://127.0.0.1:9", timeout=30)


@pytest.mark.slow
def test_the_local_server_runs_under_a_command_prefix(tmp_path):
    """How benchmarks/serving_instructions.py runs the service under valgrind; here the prefix is `env`
    turning auth off, which the answers show."""
    with LocalServer(tmp_path, embedded_worker=False, command_prefix=["env", "RETAIN_AUTH=off"]) as server:
        assert server.process.argv[:2] == ["env", "RETAIN_AUTH=off"]
        assert httpx.get(f"{server.url}/tasks").status_code == 200  # no key needed: the prefix took effect
    with LocalServer(tmp_path / "plain", embedded_worker=False) as server:
        assert httpx.get(f"{server.url}/tasks").status_code == 401
