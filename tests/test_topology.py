"""The docker compose topology, run as processes: what `docker compose up` starts,
without Docker.

A fresh Postgres database (the `db` service), `alembic upgrade head` (`migrate`),
uvicorn with the embedded worker off (`api`) and two `python -m workers` processes
(`worker`, scaled to 2) sharing one artifact directory (the volume). The test drives
it over real HTTP, then stops every process with SIGTERM, as `docker compose stop`
does, and expects each to exit cleanly.

Past one machine: the same API and two workers, each in a working directory of its own,
sharing only Postgres and an S3 bucket (moto's server, its own process on loopback; the
compose `s3` profile), and a second API that only serves, from the same bucket.
"""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.jobs.status import TERMINAL_STATUSES
from app.processes import UVICORN_URL, ProcessGroup

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow
ADMIN_KEY = "retain_topology-test-admin-key-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


# The tasks are cut small for speed, too small to pass the not-learnt check (tested in test_safeguards.py):
# these tests are about where processes run, so every update counts, as in the rest of the suite.
LEARNT_OR_NOT = {"RETAIN_REJECT_NOT_LEARNT": "false"}


@pytest.fixture
def small_tasks(pmnist_file):
    """Two conflicting pmnist tasks, cut small so each update takes seconds."""
    return [pmnist_file(index, n_train=400, n_test=200) for index in range(2)]


def wait_for_jobs(client: httpx.Client, job_ids: list[int], processes: ProcessGroup, timeout: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout
    finished: dict[int, dict] = {}
    while len(finished) < len(job_ids):
        assert time.monotonic() < deadline, f"jobs still pending after {timeout:.0f}s:\n{processes.logs()}"
        for job_id in job_ids:
            job = client.get(f"/jobs/{job_id}").json()
            if job["status"] in TERMINAL_STATUSES:
                finished[job_id] = job
        time.sleep(0.3)
    return finished


def migrate(env: dict) -> None:
    """The one-shot `migrate` service."""
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def teach(client: httpx.Client, path: Path, model: str, name: str) -> dict:
    with path.open("rb") as upload:
        answer = client.post(
            "/tasks",
            data={"model": model, "name": name, "epochs": "2", "ewc_lambda": "100"},
            files={"file": (path.name, upload)},
        )
    assert answer.status_code == 202, answer.text
    return answer.json()


def start_api(processes: ProcessGroup, name: str, **extra) -> str:
    """uvicorn on port 0 (it binds a free port and logs which: no race with other test runs); its URL."""
    processes.start(
        name, sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "0", **extra
    )
    return processes[name].wait_until_answers(
        lambda: processes[name].search_log(UVICORN_URL), path="/readyz", timeout=60
    )


def start_worker(processes: ProcessGroup, name: str, **extra) -> None:
    # Two CPU workers on a small machine: one math thread each, or their thread pools
    # fight over the cores and every step slows down many times over.
    processes.start(
        name, sys.executable, "-m", "workers", "--device", "cpu", "--poll-interval", "0.2", OMP_NUM_THREADS="1", **extra
    )


def test_compose_topology_as_processes(empty_postgres_url, small_tasks, tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": empty_postgres_url,
        "RETAIN_ARTIFACT_URI": str(tmp_path / "artifacts"),  # the shared artifact volume
        "RETAIN_EMBEDDED_WORKER": "false",
        "RETAIN_ADMIN_KEY": ADMIN_KEY,  # compose passes it from the environment
        **LEARNT_OR_NOT,
    }
    migrate(env)

    processes = ProcessGroup(tmp_path, env)
    for index in (1, 2):
        start_worker(processes, f"worker{index}")
    try:
        url = start_api(processes, "api")
        assert httpx.get(f"{url}/jobs").status_code == 401  # auth is on: every data route needs a key
        with httpx.Client(base_url=url, timeout=60, headers=AUTH) as client:
            a0 = teach(client, small_tasks[0], "topology-a", "task0")
            a1 = teach(client, small_tasks[1], "topology-a", "task1")
            b0 = teach(client, small_tasks[0], "topology-b", "task0")
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
                assert processes[f"worker{index}"].poll() is None, processes.logs()
    finally:
        codes = processes.stop_all()
    # Workers exit 0. uvicorn shuts down gracefully, then re-raises the SIGTERM it caught
    # (so supervisors see why it stopped): a clean API exit is -SIGTERM after its shutdown.
    assert codes == {"api": -signal.SIGTERM, "worker1": 0, "worker2": 0}, f"{codes}\n{processes.logs()}"
    assert "Application shutdown complete" in processes.log("api")
    for index in (1, 2):
        assert "stopped after" in processes.log(f"worker{index}")


def test_api_and_workers_on_separate_machines_share_only_postgres_and_a_bucket(
    empty_postgres_url, small_tasks, s3, tmp_path
):
    prefix = f"retain-data/artifacts-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,  # the AWS_* variables the `s3` fixture set: endpoint and credentials, as on every machine
        "DATABASE_URL": empty_postgres_url,
        "RETAIN_ARTIFACT_URI": f"s3://{prefix}",
        "RETAIN_EMBEDDED_WORKER": "false",
        "RETAIN_ADMIN_KEY": ADMIN_KEY,
        **LEARNT_OR_NOT,
    }
    migrate(env)
    machines = {name: tmp_path / name for name in ("api", "worker1", "worker2", "serving")}
    for directory in machines.values():
        directory.mkdir()
    processes = ProcessGroup(tmp_path, env)
    for name in ("worker1", "worker2"):
        start_worker(processes, name, cwd=machines[name])
    try:
        url = start_api(processes, "api", cwd=machines["api"])
        with httpx.Client(base_url=url, timeout=60, headers=AUTH) as client:
            a0 = teach(client, small_tasks[0], "s3-a", "task0")
            a1 = teach(client, small_tasks[1], "s3-a", "task1")
            b0 = teach(client, small_tasks[1], "s3-b", "task0")
            jobs = wait_for_jobs(client, [a0["job_id"], a1["job_id"], b0["job_id"]], processes)
            assert all(job["status"] in ("succeeded", "rejected") for job in jobs.values()), jobs
            versions = client.get("/models/s3-a/versions").json()
            assert sorted((v["number"], v["task_id"]) for v in versions) == [(1, a0["id"]), (2, a1["id"])]
            history = client.get(f"/tasks/{a0['id']}/accuracy").json()["history"]
            assert [entry["after_task_id"] for entry in history] == [a0["id"], a1["id"]]
            sample = np.load(small_tasks[1])["x_test"][:5].tolist()
            served_here = client.post("/predict", json={"model": "s3-a", "inputs": sample, "top_k": 2}).json()

        serving_url = start_api(processes, "serving", cwd=machines["serving"])
        with httpx.Client(base_url=serving_url, timeout=60, headers=AUTH) as serving:
            served_there = serving.post("/predict", json={"model": "s3-a", "inputs": sample, "top_k": 2})
            assert served_there.status_code == 200, served_there.text
            assert served_there.json()["model_version"] == served_here["model_version"]
            assert served_there.json()["predictions"] == served_here["predictions"]
    finally:
        codes = processes.stop_all()
    assert codes == {"api": -signal.SIGTERM, "worker1": 0, "worker2": 0, "serving": -signal.SIGTERM}, (
        f"{codes}\n{processes.logs()}"
    )

    # Every artifact is in the bucket: datasets, weights, consolidation; no process wrote any to its own disk.
    objects = s3.find(prefix)
    assert len(objects) >= 3 + 3 and all(path.endswith(".safetensors") for path in objects), objects
    assert not any(".tmp" in path for path in objects)
    for name, directory in machines.items():
        assert not any(directory.rglob("*.safetensors")), f"{name} wrote artifacts locally"
