"""A task that asks for two processes (``nproc``): the worker runs its update on two gloo ranks
(app/updates/ranks.py), stores and commits once; a lost rank is a lost worker (retried, no half
version); asking for more than ``max_nproc`` is refused at POST /tasks."""

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import select

from app.db.tables import Accuracy, Job, Model, ModelVersion

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # ranks do not touch the database


def table_of(session_factory, model: str) -> list[tuple[int, int, float]]:
    with session_factory() as session:
        return [
            (v.number, a.task_id, a.accuracy)
            for v, a in session.execute(
                select(ModelVersion, Accuracy)
                .join(Accuracy, Accuracy.model_version_id == ModelVersion.id)
                .join(Model, Model.id == ModelVersion.model_id)
                .where(Model.name == model)
                .order_by(ModelVersion.number, Accuracy.task_id)
            )
        ]


def test_more_processes_than_max_nproc_are_refused(client, pmnist_file):
    with pmnist_file(0).open("rb") as upload:
        answer = client.post("/tasks", data={"model": "m", "nproc": "2"}, files={"file": ("t.npz", upload)})
    assert answer.status_code == 422 and "max_nproc" in answer.json()["detail"], answer.text


def test_a_two_process_update_commits_once_with_the_one_process_accuracy_table(
    settings, session_factory, submit_task, run_worker_once
):
    """Same tasks, one model learnt on one process and one on two. The two-process steps use the
    global batch's mean-loss gradient, so only float summation order differs: tolerance one test
    sample in a hundred (0.01) per entry."""
    two = settings.model_copy(update={"max_nproc": 2})
    for index in (0, 1):
        submit_task(model="one", index=index, max_forgetting=1.0)
        submit_task(model="two", index=index, max_forgetting=1.0, nproc=2, max_nproc=2)
    for _ in range(4):
        assert run_worker_once(two) == 1
    with session_factory() as session:
        assert all(job.status == "succeeded" for job in session.scalars(select(Job))), [
            (job.id, job.status, job.error) for job in session.scalars(select(Job))
        ]
    one, two = table_of(session_factory, "one"), table_of(session_factory, "two")
    assert [(number, len([1 for n, _, _ in two if n == number])) for number in (1, 2)] == [(1, 1), (2, 2)]
    for (_, _, a), (_, _, b) in zip(one, two, strict=True):
        assert abs(a - b) <= 0.01, (one, two)


def rank_pids(worker_pid: int) -> list[int]:
    """The worker's children that are torch.multiprocessing spawn ranks."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == worker_pid and "spawn_main" in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_a_rank_killed_mid_update_leaves_no_half_version_and_the_job_is_retried(
    session_factory, submit_task, worker_processes
):
    from test_updates import job_of
    from waiting import wait_until

    _, job_id = submit_task(
        index=0, n_train=1500, epochs=8, architecture_options='{"hidden": [256]}', nproc=2, max_nproc=2
    )
    worker = worker_processes("ranks", RETAIN_MAX_NPROC="2")
    ranks = wait_until(lambda: len(pids := rank_pids(worker.pid)) == 2 and pids, 120, "two ranks to start")
    os.kill(ranks[1], signal.SIGKILL)
    job = wait_until(lambda: (j := job_of(session_factory, job_id)).attempt == 2 and j, 60, "the job to be retried")
    with session_factory() as session:
        assert session.scalars(select(ModelVersion)).all() == []  # nothing of the first attempt was committed
    assert "was lost" in (job.error or ""), job.error
    job = wait_until(
        lambda: (j := job_of(session_factory, job_id)).status in ("succeeded", "failed") and j,
        300,
        "the retry to finish",
    )
    assert job.status == "succeeded", job.error
    with session_factory() as session:
        assert len(session.scalars(select(ModelVersion)).all()) == 1
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
