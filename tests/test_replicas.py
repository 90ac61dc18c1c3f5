"""`retain serve --workers N`: N API processes on one port, forked by gunicorn's master (docs/replicas.md).

One server of two replicas per database kind serves the module: both replicas give the same answers,
a change of serving version made through one reaches the other within two stamp intervals, and every
job is trained by the supervisor's one embedded worker; the replicas are forked children of one master
(the supervisor's one child), so they share the pages of torch and the app. Servers of their own check
that SIGTERM and SIGINT leave no process behind.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from sqlalchemy import create_engine, select

from app.cli.serve import replica_environment, workers_argument
from app.db.tables import Job
from app.processes import LocalServer
from app.settings import Settings

pytestmark = pytest.mark.slow

CHECK_INTERVAL = 0.2  # the replicas' serving_check_interval here: long enough to see, short enough to wait out
SAMPLES = [[0.5, -1.0, 0.25, 2.0], [-0.5, 1.0, -0.25, -2.0], [2.0, 0.0, 0.0, 0.0]]


def task_file(seed: int) -> bytes:
    """A small separable two-class task: the label is the sign of the first feature."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(120, 4)).astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=(x[:, 0] > 0).astype(np.int64))
    return buffer.getvalue()


def replica_of(url: str, key: str) -> tuple[int, dict]:
    """Which process answered, and its prediction: both on one fresh connection, so from one replica."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:
        process = client.get("/livez").json()["process"]
        answer = client.post("/predict", json={"model": "m", "inputs": SAMPLES})
        assert answer.status_code == 200, answer.text
        return process, answer.json()


def answers_of_every_replica(url: str, key: str, replicas: int, tries: int = 400) -> dict[int, list[dict]]:
    """Predictions on fresh connections, eight at a time, until every replica answered (the kernel
    hands each connection to whichever replica accepts it first)."""
    answers: dict[int, list[dict]] = {}
    with ThreadPoolExecutor(8) as pool:
        for _ in range(tries // 8):
            for process, answer in pool.map(lambda _: replica_of(url, key), range(8)):
                answers.setdefault(process, []).append(answer)
            if len(answers) == replicas:
                return answers
    raise AssertionError(f"only replicas {sorted(answers)} answered {tries} connections")


def empty_postgres_database() -> tuple[str, callable]:
    admin_url = os.environ.get("RETAIN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"retain_test_replicas_{uuid.uuid4().hex[:10]}"

    def admin(statement: str) -> None:
        import psycopg

        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as connection:
            connection.execute(statement)

    try:
        admin(f'CREATE DATABASE "{name}"')
    except Exception as error:
        pytest.skip(f"Postgres is not reachable at {admin_url}: {error}")
    url = admin_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    return url, lambda: admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_processes(server: LocalServer) -> list[psutil.Process]:
    supervisor = psutil.Process(server.process.pid)
    return [supervisor, *supervisor.children(recursive=True)]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def replicas(request, tmp_path_factory):
    """Two replicas on a fresh database of the kind, with model ``m`` taught two small tasks."""
    data_dir = tmp_path_factory.mktemp(f"replicas-{request.param}")
    env = {"RETAIN_WORKERS": "2", "RETAIN_SERVING_CHECK_INTERVAL": str(CHECK_INTERVAL), "RETAIN_DEVICE": "cpu"}
    drop = None
    if request.param == "postgres":  # an empty database: `retain serve` migrates it, once, before the replicas
        env["DATABASE_URL"], drop = empty_postgres_database()
    try:
        with LocalServer(data_dir, extra_env={**env, "OMP_NUM_THREADS": "1"}, startup_timeout=180) as server:
            headers = {"Authorization": f"Bearer {server.api_key}"}
            with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
                for index in range(2):
                    form = {"model": "m", "name": f"t{index}", "epochs": "2", "ewc_lambda": "10"}
                    files = {"file": (f"t{index}.npz", task_file(index))}
                    job = client.post("/tasks", data=form, files=files)
                    assert job.status_code in (200, 201, 202), job.text
                    job_id = job.json()["job_id"]
                    deadline = time.monotonic() + 120
                    while (status := client.get(f"/jobs/{job_id}").json()["status"]) in ("queued", "running"):
                        assert time.monotonic() < deadline, f"job {job_id} still {status}:\n{server.log()[-3000:]}"
                        time.sleep(0.2)
                    assert status in ("succeeded", "rejected"), client.get(f"/jobs/{job_id}").json()
            server.database_url = server.env["DATABASE_URL"]
            yield server
    finally:
        if drop is not None:
            drop()


def test_every_replica_serves_the_same_answers(replicas):
    _, forked = replicas_and_their_master(server_processes(replicas))
    answers = answers_of_every_replica(replicas.url, replicas.api_key, replicas=2)
    assert set(answers) == {process.pid for process in forked}, "the master's children answer"
    distinct = {str(answer) for every in answers.values() for answer in every}
    assert len(distinct) == 1, distinct


def test_a_change_of_serving_version_reaches_every_replica_within_two_stamp_intervals(replicas):
    headers = {"Authorization": f"Bearer {replicas.api_key}"}
    for version in (2, 1, 2):  # roll forward to 2, back to 1, forward again: through whichever replica
        moved = httpx.put(
            f"{replicas.url}/models/m/serving-version", json={"version": version}, headers=headers, timeout=30
        )
        assert moved.status_code == 200, moved.text
        time.sleep(CHECK_INTERVAL * 2.5)  # stale while revalidate for up to two intervals, then checked first
        answers = answers_of_every_replica(replicas.url, replicas.api_key, replicas=2)
        served = {process: {answer["model_version"] for answer in every} for process, every in answers.items()}
        assert all(versions == {version} for versions in served.values()), (version, served)


def test_one_training_worker_claims_every_job_and_it_is_the_supervisors(replicas):
    engine = create_engine(replicas.database_url)
    try:
        with engine.connect() as connection:
            owners = connection.execute(select(Job.lease_owner)).scalars().all()
    finally:
        engine.dispose()
    trainer = f"{socket.gethostname()}-{replicas.process.pid}-embedded/"
    assert len(owners) == 2 and all(owner.startswith(trainer) for owner in owners), (trainer, owners)


def replicas_and_their_master(processes: list[psutil.Process]) -> tuple[psutil.Process, list[psutil.Process]]:
    """The supervisor's one child is gunicorn's master; its children are the replicas."""
    supervisor, *descendants = processes
    masters = [process for process in descendants if process.ppid() == supervisor.pid]
    assert len(masters) == 1, [(process.pid, process.ppid()) for process in descendants]
    return masters[0], [process for process in descendants if process.ppid() == masters[0].pid]


def test_the_replicas_are_forked_from_one_master_that_the_training_supervisor_forked(replicas):
    supervisor, *_ = processes = server_processes(replicas)
    master, forked = replicas_and_their_master(processes)
    assert len(forked) == 2 and len(processes) == 4, [(process.pid, process.ppid()) for process in processes]
    for process in (master, *forked):  # forked, not spawned: the same command line, no fresh interpreter
        assert process.cmdline() == supervisor.cmdline(), process.cmdline()
    threads = {process.pid: process.num_threads() for process in (master, *forked)}
    assert threads[master.pid] == 1, threads  # the master forks replicas: it must never run a thread


def test_a_replica_killed_is_forked_again_by_the_master_and_serves_the_same_answers(replicas):
    master, forked = replicas_and_their_master(server_processes(replicas))
    before = answers_of_every_replica(replicas.url, replicas.api_key, replicas=2)
    forked[0].kill()
    deadline = time.monotonic() + 120
    while True:
        children = {process.pid for process in master.children()}
        if len(children) == 2 and forked[0].pid not in children:
            break
        assert time.monotonic() < deadline, f"no new replica:\n{replicas.log()[-3000:]}"
        time.sleep(0.2)
    deadline = time.monotonic() + 120
    while True:  # the new replica answers once its app is made (after its fork)
        try:
            after = answers_of_every_replica(replicas.url, replicas.api_key, replicas=2)
            break
        except (AssertionError, httpx.TransportError):
            assert time.monotonic() < deadline, replicas.log()[-3000:]
    assert set(after) == children
    assert {str(answer) for every in after.values() for answer in every} == {
        str(answer) for every in before.values() for answer in every
    }


def test_sigterm_stops_every_replica_the_master_and_the_supervisor_with_no_process_left(tmp_path):
    with LocalServer(
        tmp_path, extra_env={"RETAIN_WORKERS": "2", "OMP_NUM_THREADS": "1"}, startup_timeout=180
    ) as server:
        processes = server_processes(server)
        _, forked = replicas_and_their_master(processes)
        assert len(forked) == 2, [process.cmdline() for process in processes]
        # The server answers once one replica is up; a replica still booting when SIGTERM comes has no
        # application to shut down, so both must be up before the signal.
        deadline = time.monotonic() + 120
        while server.log().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.1)
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=90) == 0, server.log()[-3000:]
    gone, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, f"left running: {[process.pid for process in alive]}\n{server.log()[-3000:]}"
    log = server.log()
    assert log.count("Application shutdown complete") == 2, log[-3000:]


def test_sigint_to_the_supervisor_stops_the_whole_tree(tmp_path):
    with LocalServer(
        tmp_path, extra_env={"RETAIN_WORKERS": "2", "OMP_NUM_THREADS": "1"}, startup_timeout=180
    ) as server:
        processes = server_processes(server)
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=90) == 0, server.log()[-3000:]
    gone, alive = psutil.wait_procs(processes, timeout=30)
    assert not alive, f"left running: {[process.pid for process in alive]}\n{server.log()[-3000:]}"


def test_the_supervisor_shares_out_the_cores_and_keeps_preparation_and_training_to_itself(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'r.db'}")
    environment = replica_environment(settings, workers=2)
    assert environment["RETAIN_EMBEDDED_WORKER"] == "false" and environment["RETAIN_PREPARE_ON_START"] == "false"
    assert int(environment["RETAIN_TORCH_THREADS"]) >= 1
    assert "RETAIN_TORCH_THREADS" not in replica_environment(settings.model_copy(update={"torch_threads": 3}), 2)
    assert workers_argument("auto") == "auto" and workers_argument("3") == 3
    for wrong in ("0", "-1", "many"):
        with pytest.raises(Exception, match="1 or more"):
            workers_argument(wrong)
    assert Settings(workers="auto").worker_count >= 1


def test_path_of_the_supervisor_is_the_cli(tmp_path):
    """`retain serve --help` names the option (the CLI is the way in)."""
    import subprocess
    import sys

    shown = subprocess.run(
        [sys.executable, "-m", "app.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        timeout=60,
    )
    assert shown.returncode == 0 and "--workers" in shown.stdout
