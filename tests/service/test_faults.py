"""Faults that lose nothing: a rollback made while an update trains is kept, a cancelled job whose
worker died is not rerun, the database dropping the worker's connections mid-job is survived, an
artifact store that refuses writes mid-job stores no half version, and /readyz says so when the
embedded worker thread is gone."""

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select
from test_updates import LONG_TRAINING, job_of, versions_of, wait_for_training
from waiting import wait_until

from app.db.tables import Accuracy, AliasChange, Dataset, Job, Model, ModelVersion, Task
from app.jobs import queue
from app.updates.loop import run_worker


@pytest.fixture
def worker(settings):
    """The real worker loop in a thread until the test ends; yields the thread (to check it lives)."""
    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(settings, stop), daemon=True)
    thread.start()
    yield thread
    stop.set()
    thread.join(60)


def finished(session_factory, job_id: int, timeout: float = 180) -> Job:
    return wait_until(
        lambda: (job := job_of(session_factory, job_id)).status not in ("queued", "running") and job,
        timeout,
        f"job {job_id} to finish",
    )


def test_a_rollback_made_while_an_update_trains_is_not_undone_by_its_commit(
    client, session_factory, teach, pmnist_file, worker
):
    for index in (0, 1):
        second = teach(pmnist_file(index), max_forgetting="1").json()["job_id"]
        assert finished(session_factory, second).status == "succeeded"
    answer = teach(  # seconds of training on any machine: time to roll back
        pmnist_file(2, n_train=LONG_TRAINING["n_train"]), epochs=str(LONG_TRAINING["epochs"]), batch_size="32"
    ).json()
    task, third = answer["id"], answer["job_id"]
    wait_for_training(session_factory, third)
    assert client.put("/models/m/serving-version", json={"version": 1, "reason": "bad v2"}).status_code == 200

    job = finished(session_factory, third)
    assert job.status == "rejected" and "put in service while it trained" in job.error, job.error
    assert client.get("/models/m").json()["serving_version"] == 1  # the user's rollback stands
    stored = versions_of(session_factory)[-1]
    assert stored.task_id == task and not stored.promoted  # stored, promotable later
    assert client.post(f"/tasks/{task}/promote").json()["model_version"] == stored.number


def test_the_reaper_cancels_a_cancel_requested_job_instead_of_rerunning_it(client, session_factory, make_job):
    job_id = make_job()
    with session_factory() as session:
        queue.claim(session, "a-worker-that-dies", lease_seconds=0.2)
    assert client.post(f"/jobs/{job_id}/cancel").json()["cancel_requested"] is True
    time.sleep(0.3)  # the worker never heartbeats again
    with session_factory() as session:
        assert queue.reap(session) == {job_id: "cancelled"}
    job = job_of(session_factory, job_id)
    assert job.status == "cancelled" and "not retried" in job.error
    with session_factory() as session:
        assert queue.claim(session, "another-worker", lease_seconds=5) is None


def terminate_backends(database_url: str) -> int:
    """pg_terminate_backend on every other connection to the test database (never the shared server)."""
    name = database_url.rsplit("/", 1)[1]
    admin = database_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        return len(
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchall()
        )


def test_connections_killed_mid_job_are_survived_and_the_update_lands_once(
    database_url, client, session_factory, teach, pmnist_file, worker
):
    if not database_url.startswith("postgresql"):
        pytest.skip("terminating backend connections is a Postgres fault")
    answer = teach(
        pmnist_file(0, n_train=LONG_TRAINING["n_train"]),
        epochs=str(LONG_TRAINING["epochs"]),
        architecture_options=LONG_TRAINING["architecture_options"],
    ).json()
    task, job_id = answer["id"], answer["job_id"]
    wait_for_training(session_factory, job_id)
    killed = 0
    while job_of(session_factory, job_id).status in ("queued", "running"):
        killed += terminate_backends(database_url)  # heartbeats, progress writes, the commit: all retried
        time.sleep(0.4)
    job = job_of(session_factory, job_id)
    assert killed > 0
    assert job.status == "succeeded", job.error
    assert [v.task_id for v in versions_of(session_factory)] == [task]
    assert worker.is_alive()
    next_job = teach(pmnist_file(1)).json()["job_id"]  # the worker goes on with the next one
    assert finished(session_factory, next_job).status in ("succeeded", "rejected")


def test_readyz_reports_a_stopped_embedded_worker(settings, api_client):
    with api_client(settings.model_copy(update={"embedded_worker": True})) as embedded:
        assert embedded.get("/readyz").status_code == 200
        embedded.app.state.worker.stop()
        answer = embedded.get("/readyz")
        assert answer.status_code == 503 and "embedded worker" in answer.json()["detail"]


@pytest.mark.slow
def test_the_api_process_killed_while_its_embedded_worker_trains_requeues_and_completes_the_job(tmp_path, pmnist_file):
    """SIGKILL of `retain serve` mid-training (no shutdown at all); a restart on the same data dir finds the job's
    lease expired, reruns it, and the update lands once."""
    import httpx

    from app.processes import LocalServer

    env = {
        "RETAIN_DEVICE": "cpu",
        "RETAIN_LEASE_SECONDS": "3",
        "RETAIN_HEARTBEAT_SECONDS": "0.5",
        "RETAIN_POLL_INTERVAL": "0.1",
        "RETAIN_PROGRESS_INTERVAL": "0.2",
    }
    data_dir = tmp_path / "service"
    task = pmnist_file(0, n_train=LONG_TRAINING["n_train"])
    form = {"model": "k", "epochs": str(LONG_TRAINING["epochs"]), "ewc_lambda": "100"}
    form["architecture_options"] = LONG_TRAINING["architecture_options"]
    with LocalServer(data_dir, extra_env=env) as server:
        api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.api_key}"}, timeout=30)
        with task.open("rb") as upload:
            job_id = api.post("/tasks", data=form, files={"file": (task.name, upload)}).json()["job_id"]

        def training() -> bool:
            job = api.get(f"/jobs/{job_id}").json()
            assert job["status"] in ("queued", "running"), f"the job ended before it could be interrupted: {job}"
            return (job["progress"] or {}).get("phase") == "train"

        wait_until(training, 120, "training")
        server.process.kill()
    with LocalServer(data_dir, extra_env=env) as restarted:
        api = httpx.Client(base_url=restarted.url, headers={"Authorization": f"Bearer {restarted.api_key}"}, timeout=30)
        job = wait_until(
            lambda: (j := api.get(f"/jobs/{job_id}").json())["status"] not in ("queued", "running") and j,
            240,
            "the rerun",
        )
        assert job["status"] == "succeeded" and job["attempt"] == 2, job
        assert [v["task_id"] for v in api.get("/models/k/versions").json()] == [job["task_id"]]


def immutable(folder: Path, on: bool) -> None:
    """``chattr -R +i``: nothing in ``folder`` can be created, renamed or removed, even by root (for whom
    file modes are no obstacle); ``-i`` undoes it."""
    subprocess.run(["chattr", "-R", "+i" if on else "-i", str(folder)], check=True, capture_output=True)


def row_counts(session_factory) -> dict[str, int]:
    with session_factory() as session:
        return {
            table.__name__: session.scalar(select(func.count()).select_from(table))
            for table in (Model, Dataset, Task, ModelVersion, Accuracy, AliasChange)
        }


@pytest.mark.slow
def test_an_artifact_store_that_refuses_writes_mid_job_fails_the_job_and_stores_no_half_version(
    settings, session_factory, submit_task, worker_processes
):
    """The store made immutable (chattr +i) while a real worker process trains: storing the update fails,
    the job fails with the reason, and no row changed but the job's; writable again, the task taught
    again lands."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr: file modes do not stop root from writing")
    store_root = Path(settings.artifact_uri)
    _, job_id = submit_task(index=0, **LONG_TRAINING)
    before = row_counts(session_factory)
    worker = worker_processes("w")
    wait_for_training(session_factory, job_id)
    immutable(store_root, True)
    try:
        with pytest.raises(PermissionError):  # the fault is real: nothing can be written there any more
            (store_root / "probe").write_bytes(b"")
        job = finished(session_factory, job_id)
        assert job.status == "failed" and "Operation not permitted" in job.error, job.error
        assert row_counts(session_factory) == before  # no version, no accuracy rows, no alias change
        assert worker.poll() is None  # the worker lives on
    finally:
        immutable(store_root, False)
    assert not list(store_root.rglob("*.tmp"))  # the failed writes left no temporary behind

    _, again = submit_task(index=0, n_train=800, epochs=15, architecture_options=LONG_TRAINING["architecture_options"])
    assert finished(session_factory, again).status == "succeeded"
    assert [version.task_id for version in versions_of(session_factory)] == [job_of(session_factory, again).task_id]
