"""The docker compose topology, run as processes: what `docker compose up` starts,
without Docker.

A fresh Postgres database (the `db` service), `alembic upgrade head` (`migrate`),
uvicorn with the embedded worker off (`api`) and two `python -m workers` processes
(`worker`, scaled to 2) sharing one artifact directory (the volume). The test drives
it over real HTTP, then stops every process with SIGTERM, as `docker compose stop`
does, and expects each to exit cleanly.
"""

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest


REPO = Path(__file__).resolve().parent.parent
TASKS = REPO.parent / "shared" / "data" / "pmnist-conflict"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

pytestmark = pytest.mark.slow


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(ADMIN_URL, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture
def database():
    """A database of its own, dropped afterwards whatever happened."""
    if not postgres_available():
        pytest.skip("Postgres is not reachable on 127.0.0.1:5432 (user postgres)")
    import psycopg

    name = f"retain_topology_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def small_tasks(tmp_path):
    """Two conflicting pmnist tasks, cut small so each update takes seconds."""
    if not TASKS.exists():
        pytest.skip(f"{TASKS} not found")
    paths = []
    for index in range(2):
        data = np.load(TASKS / f"task{index}.npz")
        path = tmp_path / f"task{index}.npz"
        np.savez(path, x=data["x"][:400], y=data["y"][:400], x_test=data["x_test"][:200], y_test=data["y_test"][:200])
        paths.append(path)
    return paths


class Processes:
    """Child processes started for the test, each logging to a file; stopped with SIGTERM."""

    def __init__(self, directory: Path, env: dict[str, str]):
        self.directory, self.env = directory, env
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *command: str, **extra_env: str) -> subprocess.Popen:
        log = (self.directory / f"{name}.log").open("w")
        self.running[name] = subprocess.Popen(command, cwd=REPO, env={**self.env, **extra_env},
                                              stdout=log, stderr=subprocess.STDOUT)
        return self.running[name]

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text()

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)[-3000:]}" for name in self.running)

    def terminate_all(self, timeout: float = 60.0) -> dict[str, int]:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in self.running.items():
            try:
                codes[name] = process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = f"killed after {timeout:.0f}s without exiting"
        return codes


def wait_ready(processes: Processes, timeout: float = 60.0) -> str:
    """The API's URL once /readyz answers 200 (the port is read from uvicorn's log)."""
    deadline = time.monotonic() + timeout
    url = None
    while time.monotonic() < deadline:
        api = processes.running["api"]
        assert api.poll() is None, f"the API exited with {api.returncode}:\n{processes.logs()}"
        if url is None:
            found = re.search(r"Uvicorn running on (http://\S+)", processes.log("api"))
            url = found.group(1) if found else None
        if url is not None:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.25)
    pytest.fail(f"the API was not ready after {timeout:.0f}s:\n{processes.logs()}")


def wait_for_jobs(client: httpx.Client, job_ids: list[int], processes: Processes, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    finished: dict[int, dict] = {}
    while len(finished) < len(job_ids):
        assert time.monotonic() < deadline, f"jobs still pending after {timeout:.0f}s:\n{processes.logs()}"
        for job_id in job_ids:
            job = client.get(f"/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled", "rejected"):
                finished[job_id] = job
        time.sleep(0.3)
    return finished


def test_compose_topology_as_processes(database, small_tasks, tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "RETAIN_ARTIFACT_URI": str(tmp_path / "artifacts"),  # the shared artifact volume
        "RETAIN_EMBEDDED_WORKER": "false",
    }
    # migrate: the one-shot service
    migrate = subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=120)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr

    processes = Processes(tmp_path, env)
    # port 0: uvicorn binds a free port and logs which (no race with other test runs)
    processes.start("api", sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "0")
    for index in (1, 2):
        # Two CPU workers on a small machine: one math thread each, or their thread pools
        # fight over the cores and every step slows down many times over.
        processes.start(f"worker{index}", sys.executable, "-m", "workers", "--device", "cpu", "--poll-interval", "0.2",
                        OMP_NUM_THREADS="1")
    try:
        url = wait_ready(processes)
        with httpx.Client(base_url=url, timeout=60) as client:
            fields = {"epochs": "2", "ewc_lambda": "100"}

            def teach(path: Path, model: str, name: str) -> dict:
                with path.open("rb") as upload:
                    answer = client.post("/tasks", data={"model": model, "name": name, **fields},
                                         files={"file": (path.name, upload)})
                assert answer.status_code == 202, answer.text
                return answer.json()

            a0 = teach(small_tasks[0], "topology-a", "task0")
            a1 = teach(small_tasks[1], "topology-a", "task1")
            b0 = teach(small_tasks[0], "topology-b", "task0")
            jobs = wait_for_jobs(client, [a0["job_id"], a1["job_id"], b0["job_id"]], processes)
            for job in jobs.values():
                assert job["status"] in ("succeeded", "rejected"), job

            # registry: two versions of a, in task order; one of b
            versions_a = client.get("/models/topology-a/versions").json()
            versions_b = client.get("/models/topology-b/versions").json()
            assert sorted((v["number"], v["task_id"]) for v in versions_a) == [(1, a0["id"]), (2, a1["id"])]
            assert [(v["number"], v["task_id"]) for v in versions_b] == [(1, b0["id"])]

            # accuracy table: task0 of a measured after both updates, oldest first
            history = client.get(f"/tasks/{a0['id']}/accuracy").json()["history"]
            assert [entry["after_task_id"] for entry in history] == [a0["id"], a1["id"]]
            assert all(0.0 <= entry["accuracy"] <= 1.0 and entry["n_test"] == 200 for entry in history)

            # serving: predictions from the API process, with weights the workers wrote
            sample = np.load(small_tasks[0])["x_test"][:3].tolist()
            answer = client.post("/predict", json={"model": "topology-b", "inputs": sample, "top_k": 2})
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_version"] == 1
            assert len(answer.json()["predictions"]) == 3

            # both workers were up and polling the same queue
            for index in (1, 2):
                assert processes.running[f"worker{index}"].poll() is None, processes.logs()
    finally:
        codes = processes.terminate_all()
    # Workers exit 0. uvicorn shuts down gracefully, then re-raises the SIGTERM it caught
    # (so supervisors see why it stopped): a clean API exit is -SIGTERM after its shutdown.
    assert codes == {"api": -signal.SIGTERM, "worker1": 0, "worker2": 0}, f"{codes}\n{processes.logs()}"
    assert "Application shutdown complete" in processes.log("api")
    for index in (1, 2):
        assert "stopped after" in processes.log(f"worker{index}")
