"""The worker (app/updates/, workers/): an update is applied exactly once, with its version,
accuracy rows and job success in one transaction; crashes and kills lose nothing and duplicate
nothing; a model's updates run in submission order across worker processes.

The multi-process tests start real `python -m workers` processes on the test database and are
marked slow (they still run in CI)."""

import itertools
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from waiting import wait_until

from app.db.tables import Accuracy, Job, Model, ModelVersion, Task, utcnow

REPO_ROOT = Path(__file__).resolve().parents[2]


def job_of(session_factory, job_id: int) -> Job:
    with session_factory() as session:
        return session.get(Job, job_id)


def versions_of(session_factory, model: str = "m") -> list[ModelVersion]:
    with session_factory() as session:
        return list(
            session.scalars(
                select(ModelVersion)
                .join(Model, ModelVersion.model_id == Model.id)
                .where(Model.name == model)
                .order_by(ModelVersion.number)
            )
        )


def accuracy_of(session_factory, version_id: int) -> dict[int, Accuracy]:
    with session_factory() as session:
        return {
            row.task_id: row for row in session.scalars(select(Accuracy).where(Accuracy.model_version_id == version_id))
        }


LONG_TRAINING = dict(n_train=2000, epochs=40, architecture_options='{"hidden": [256, 256]}')
"""A few seconds of training: long enough to be interrupted mid-training on any machine."""


def wait_for_training(session_factory, job_id: int, timeout: float = 90) -> None:
    """Until the job's worker reports the train phase; fails at once if the job ended first."""

    def training():
        job = job_of(session_factory, job_id)
        if job.status not in ("queued", "running"):
            raise AssertionError(f"job {job_id} ended ({job.status}) before it was seen training: make it longer")
        return (job.progress or {}).get("phase") == "train"

    wait_until(training, timeout, "the worker to be training")


def test_two_updates_make_two_versions_with_the_accuracy_of_every_learnt_task(
    session_factory, submit_task, run_worker_once, store
):
    first_task, first_job = submit_task(index=0)
    assert run_worker_once() == 1
    job = job_of(session_factory, first_job)
    assert job.status == "succeeded", job.error
    assert job.progress["fraction"] == 1.0 and job.progress["epochs"] == 1
    [v1] = versions_of(session_factory)
    assert (v1.number, v1.parent_id, v1.task_id, v1.promoted) == (1, None, first_task, True)
    assert v1.fisher_recipe["n_samples"] > 0  # consolidated, so the next update can protect task 0
    store.get(v1.weights_uri, v1.weights_sha256)  # both artifacts intact (verified read)
    store.get(v1.consolidation_uri, v1.consolidation_sha256)
    assert set(accuracy_of(session_factory, v1.id)) == {first_task}

    second_task, second_job = submit_task(index=1)
    assert run_worker_once() == 1
    assert job_of(session_factory, second_job).status == "succeeded"
    v1, v2 = versions_of(session_factory)
    assert (v2.number, v2.parent_id, v2.task_id, v2.ewc_lambda) == (2, v1.id, second_task, 100)
    # the task gave epochs=1: exactly that, with no early stopping although validation data was there
    assert v2.train_config["epochs_trained"] == v2.train_config["budget"]["epochs_run"] == 1
    assert v2.train_config["budget"]["max_epochs"] == 1
    rows = accuracy_of(session_factory, v2.id)
    assert set(rows) == {first_task, second_task}
    # on each task's own test split (the upload's x_test: 100 samples), never on validation data
    assert all(row.n_test == 100 and 0.0 <= row.accuracy <= 1.0 for row in rows.values())
    with session_factory() as session:
        model = session.scalar(select(Model).where(Model.name == "m"))
        assert model.serving_version_id == v2.id
        assert session.get(Task, second_task).status == "succeeded"
    assert run_worker_once() == 0  # nothing left


def test_the_forgetting_gate_stores_the_version_but_keeps_the_old_one_serving(
    session_factory, submit_task, run_worker_once
):
    """Fine-tuning a conflicting permutation (λ = 0) under a zero tolerance must forget task 0."""
    first_task, _ = submit_task(index=0, n_train=400, epochs=2, max_forgetting=0.0)
    assert run_worker_once() == 1
    second_task, second_job = submit_task(index=1, n_train=400, epochs=3, strategy="finetune", ewc_lambda="0")
    assert run_worker_once() == 1
    job = job_of(session_factory, second_job)
    assert job.status == "rejected", job.error
    assert "forgetting gate" in job.error and f"task {first_task}" in job.error
    v1, v2 = versions_of(session_factory)
    assert (v1.promoted, v2.promoted) == (True, False)
    assert v2.validation["tripped_by"] == [str(first_task)]
    assert v2.validation["drops"][str(first_task)] > 0
    assert set(accuracy_of(session_factory, v2.id)) == {first_task, second_task}  # measured all the same
    with session_factory() as session:
        assert session.scalar(select(Model.serving_version_id).where(Model.name == "m")) == v1.id
        assert session.get(Task, second_task).status == "rejected"


def test_a_cancel_request_stops_the_update_and_stores_nothing(session_factory, submit_task, run_worker_once):
    _, job_id = submit_task(index=0)
    with session_factory() as session:
        job = session.get(Job, job_id)
        job.cancel_requested = True  # as if POST /jobs/{id}/cancel landed right after the claim
        session.commit()
    # a queued job with the flag is still claimed by the loop only if the API did not cancel it;
    # here the flag is read by the worker's heartbeat and training stops
    run_worker_once()
    job = job_of(session_factory, job_id)
    assert job.status == "cancelled"
    assert versions_of(session_factory) == []


def test_a_job_that_cannot_be_learnt_fails_with_the_reason_and_the_worker_goes_on(
    session_factory, submit_task, run_worker_once, store
):
    _, broken = submit_task(index=0)
    _, healthy = submit_task(model="other", index=1)
    with session_factory() as session:  # the dataset's artifact vanished from the store
        dataset = session.get(Task, session.get(Job, broken).task_id).dataset_id
        from app.db.tables import Dataset

        row = session.get(Dataset, dataset)
        row.artifact_uri = row.artifact_uri.replace(row.artifact_sha256, "f" * 64)
        row.artifact_sha256 = "f" * 64
        session.commit()
    assert run_worker_once() == 1 and run_worker_once() == 1
    failed = job_of(session_factory, broken)
    assert failed.status == "failed" and failed.error
    assert job_of(session_factory, healthy).status == "succeeded"
    assert versions_of(session_factory) == []


CRASH_BEFORE_COMMIT = """
import os, sys, threading
from app.jobs import state_machine
from app.settings import Settings
from app.updates.loop import run_worker

def crash(session, job, *progress):  # the version and accuracy rows are flushed, the commit has not happened
    os._exit(17)

state_machine.succeed = crash
sys.exit(run_worker(Settings(), threading.Event(), once=True, worker_id="crashing"))
"""


@pytest.mark.slow
def test_a_crash_before_the_commit_leaves_no_half_version_and_the_job_is_retried(
    settings, session_factory, submit_task, run_worker_once, worker_env
):
    task_id, job_id = submit_task(index=0)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_BEFORE_COMMIT],
        cwd=REPO_ROOT,
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crashed.returncode == 17, crashed.stdout + crashed.stderr
    job = job_of(session_factory, job_id)
    assert job.status == "running" and job.lease_owner.startswith("crashing")
    assert versions_of(session_factory) == []
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Accuracy)) == 0

    # the lease runs out; the next worker reaps the job and applies the update once
    wait_until(
        lambda: utcnow() > job_of(session_factory, job_id).lease_expires_at,
        settings.lease_seconds + 5,
        "the dead worker's lease to expire",
    )
    assert run_worker_once() == 1
    job = job_of(session_factory, job_id)
    assert (job.status, job.attempt) == ("succeeded", 2)
    [version] = versions_of(session_factory)
    assert version.task_id == task_id and set(accuracy_of(session_factory, version.id)) == {task_id}


@pytest.mark.slow
def test_a_worker_killed_mid_training_is_replaced_and_the_update_lands_once(
    settings, session_factory, submit_task, worker_processes
):
    task_id, job_id = submit_task(index=0, **LONG_TRAINING)
    doomed = worker_processes("doomed")
    wait_for_training(session_factory, job_id)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(10)
    killed_at = utcnow()
    job = job_of(session_factory, job_id)
    assert job.status == "running" and job.lease_owner.startswith("doomed")

    survivor = worker_processes("survivor")
    job = wait_until(
        lambda: (j := job_of(session_factory, job_id)).status in ("succeeded", "failed", "rejected") and j,
        180,
        "the survivor to finish the job",
    )
    assert job.status == "succeeded", job.error
    assert job.attempt == 2 and job.lease_owner.startswith("survivor")
    assert job.started_at >= killed_at  # restarted after the kill, from the parent, not resumed
    [version] = versions_of(session_factory)
    assert version.task_id == task_id
    survivor.send_signal(signal.SIGTERM)
    assert survivor.wait(30) == 0
    assert "lease expired -> queued" in survivor.log_path.read_text()


@pytest.mark.slow
def test_two_worker_processes_apply_a_models_updates_strictly_in_order(
    settings, session_factory, submit_task, worker_processes
):
    # about order, not the gate: alternating conflicting tasks may forget, so the gate is opened
    submitted = [submit_task(index=index % 2, n_train=150, max_forgetting=1.0) for index in range(4)]
    other_task, other_job = submit_task(model="other", index=1, n_train=150)
    workers = [worker_processes(f"w{index}") for index in range(2)]
    job_ids = [job_id for _, job_id in submitted] + [other_job]
    wait_until(
        lambda: all(
            job_of(session_factory, job_id).status in ("succeeded", "failed", "rejected") for job_id in job_ids
        ),
        240,
        "every job to finish",
    )
    jobs = [job_of(session_factory, job_id) for (job_id,) in [(j,) for j in job_ids]]
    assert [job.status for job in jobs] == ["succeeded"] * 5, [job.error for job in jobs]
    for earlier, later in itertools.pairwise(jobs[:4]):
        assert later.started_at >= earlier.finished_at  # the next update began after the previous ended
    versions = versions_of(session_factory)
    assert [version.task_id for version in versions] == [task_id for task_id, _ in submitted]
    assert [version.parent_id for version in versions] == [None] + [version.id for version in versions[:-1]]
    for version, learnt in zip(versions, range(1, 5), strict=True):
        assert len(accuracy_of(session_factory, version.id)) == len({task for task, _ in submitted[:learnt]})
    [other_version] = versions_of(session_factory, "other")
    assert other_version.task_id == other_task
    for process in workers:
        process.send_signal(signal.SIGTERM)
    assert [process.wait(30) for process in workers] == [0, 0]


def test_the_embedded_worker_thread_learns_queued_tasks_and_stops_on_request(settings, session_factory, submit_task):
    from app.updates.loop import start_embedded_worker

    _, job_id = submit_task(index=0)
    worker = start_embedded_worker(settings)
    try:
        wait_until(lambda: job_of(session_factory, job_id).status == "succeeded", 120, "the embedded worker")
    finally:
        worker.stop(timeout=30)
    assert not worker.alive
    assert "-embedded/" in job_of(session_factory, job_id).lease_owner  # the thread's claim


@pytest.mark.slow
def test_sigterm_hands_the_running_job_back_to_the_queue_and_exits_cleanly(
    session_factory, submit_task, worker_processes
):
    _, job_id = submit_task(index=0, **LONG_TRAINING)
    worker = worker_processes("stopping")
    wait_for_training(session_factory, job_id)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    job = job_of(session_factory, job_id)
    assert (job.status, job.attempt, job.lease_owner) == ("queued", 1, None)  # no attempt spent
    assert "worker shut down" in job.error
    assert versions_of(session_factory) == []
    assert "SIGTERM: finishing gracefully" in worker.log_path.read_text()


def test_the_torch_threads_setting_limits_the_workers_cpu_threads(settings, run_worker_once):
    import torch

    before = torch.get_num_threads()
    try:
        run_worker_once(settings.model_copy(update={"torch_threads": 1}))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_the_fisher_samples_setting_bounds_the_estimate_and_is_recorded(
    settings, session_factory, submit_task, run_worker_once
):
    submit_task(index=0, n_train=200)
    assert run_worker_once(settings.model_copy(update={"fisher_samples": 50})) == 1
    [version] = versions_of(session_factory)
    assert (version.fisher_recipe["n_samples"], version.fisher_recipe["max_samples"]) == (50, 50)


@pytest.mark.slow
def test_fifty_concurrent_uploads_to_one_model_become_fifty_versions_in_submission_order(
    session_factory, client, api_replica, worker_processes, pmnist_file
):
    """50 uploads at once over real HTTP (a thread each) to one new model, two worker processes: none
    lost, none failed, and the k-th job the service accepted (job ids are the commit order of the
    submissions) produced version k, learnt from version k - 1."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    files = [pmnist_file(index, n_train=60, n_test=20) for index in range(5)]
    form = {
        "model": "busy",
        "strategy": "finetune",
        "ewc_lambda": "0",
        "epochs": "1",
        "max_forgetting": "1",
        "architecture_options": '{"hidden": [16]}',
    }

    def submit(k: int) -> dict:
        path = files[k % len(files)]
        with httpx.Client(
            base_url=f"http://{api_replica}", timeout=120, headers={"Authorization": f"Bearer {client.api_key}"}
        ) as http:
            answer = http.post(
                "/tasks", data={**form, "name": f"upload {k}"}, files={"file": (path.name, path.read_bytes())}
            )
        assert answer.status_code == 202, answer.text
        return answer.json()

    workers = [worker_processes(f"w{index}") for index in range(2)]
    with ThreadPoolExecutor(50) as pool:
        submitted = list(pool.map(submit, range(50)))
    job_ids = sorted(task["job_id"] for task in submitted)
    assert len(set(job_ids)) == 50
    wait_until(
        lambda: all(job_of(session_factory, job_id).status not in ("queued", "running") for job_id in job_ids),
        600,
        "every job to finish",
    )
    jobs = [job_of(session_factory, job_id) for job_id in job_ids]
    assert [job.status for job in jobs] == ["succeeded"] * 50, [job.error for job in jobs if job.error]
    versions = versions_of(session_factory, "busy")
    assert [version.number for version in versions] == list(range(1, 51))
    assert [version.task_id for version in versions] == [job.task_id for job in jobs]  # version k = k-th job
    assert [version.parent_id for version in versions] == [None] + [version.id for version in versions[:-1]]
    for earlier, later in itertools.pairwise(jobs):
        assert later.started_at >= earlier.finished_at
    for process in workers:
        process.send_signal(signal.SIGTERM)
    assert [process.wait(30) for process in workers] == [0, 0]
