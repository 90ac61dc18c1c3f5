"""THE job state machine (app/jobs/state_machine.py): every allowed move, every refused one, and
the task's status mirroring its job's."""

from datetime import timedelta

import pytest

from app.db.tables import JOB_STATUSES, Job, Task, utcnow
from app.errors import IllegalTransition
from app.jobs import state_machine
from app.jobs.state_machine import ALLOWED, TERMINAL

EXPECTED_MOVES = {
    ("queued", "running"),
    ("queued", "cancelled"),
    ("running", "succeeded"),
    ("running", "failed"),
    ("running", "cancelled"),
    ("running", "rejected"),
    ("running", "queued"),
}


def test_the_graph_is_the_documented_one():
    moves = {(source, target) for source, targets in ALLOWED.items() for target in targets}
    assert moves == EXPECTED_MOVES
    assert {"succeeded", "failed", "cancelled", "rejected"} == TERMINAL


def put_in(session, job: Job, status: str) -> None:
    """Drive a fresh (queued) job to ``status`` through legal moves."""
    if status == "queued":
        return
    if status == "cancelled":
        state_machine.cancel(session, job, "test")
        return
    state_machine.start(session, job, "owner", lease_seconds=30)
    if status != "running":
        state_machine.transition(session, job, status, error=None)


@pytest.mark.parametrize("source", JOB_STATUSES)
def test_every_move_not_in_the_graph_raises_and_changes_nothing(session_factory, make_job, source):
    refused = [target for target in JOB_STATUSES if (source, target) not in EXPECTED_MOVES]
    for target in refused:
        with session_factory() as session:
            job = session.get(Job, make_job())
            put_in(session, job, source)
            session.commit()
            before = (job.status, job.attempt, job.error, job.finished_at)
            with pytest.raises(IllegalTransition, match=f"from {source} to {target}"):
                state_machine.transition(session, job, target)
            assert (job.status, job.attempt, job.error, job.finished_at) == before
            assert session.get(Task, job.task_id).status == source


def test_unknown_status_is_refused(session_factory, make_job):
    with session_factory() as session:
        job = session.get(Job, make_job())
        with pytest.raises(IllegalTransition, match="unknown job status"):
            state_machine.transition(session, job, "paused")


def test_a_run_to_success_stamps_times_lease_and_mirrors_the_task(session_factory, make_job):
    job_id = make_job()
    with session_factory() as session:
        job = session.get(Job, job_id)
        state_machine.start(session, job, "worker-a/1", lease_seconds=30)
        session.commit()
    with session_factory() as session:
        job, task = session.get(Job, job_id), None
        task = session.get(Task, job.task_id)
        assert (job.status, task.status, job.lease_owner) == ("running", "running", "worker-a/1")
        assert job.started_at is not None and job.lease_expires_at > utcnow() + timedelta(seconds=20)
        state_machine.succeed(session, job)
        session.commit()
    with session_factory() as session:
        job = session.get(Job, job_id)
        assert (job.status, session.get(Task, job.task_id).status) == ("succeeded", "succeeded")
        assert job.finished_at >= job.started_at and job.progress["fraction"] == 1.0
        assert job.lease_expires_at is None and job.lease_owner == "worker-a/1"  # who ran it stays on record


def test_rejected_keeps_the_numbers_that_tripped_the_gate(session_factory, make_job):
    with session_factory() as session:
        job = session.get(Job, make_job())
        state_machine.start(session, job, "w", lease_seconds=30)
        state_machine.reject(session, job, "task 1: 0.950 -> 0.400")
        session.commit()
        assert (job.status, job.error, session.get(Task, job.task_id).status) == (
            "rejected",
            "task 1: 0.950 -> 0.400",
            "rejected",
        )


def test_lease_expiry_requeues_with_the_next_attempt_then_fails_after_the_last(session_factory, make_job, settings):
    assert settings.max_attempts == 3
    with session_factory() as session:
        job = session.get(Job, make_job())
        for attempt in (1, 2):
            assert job.attempt == attempt
            state_machine.start(session, job, f"w{attempt}", lease_seconds=30)
            assert state_machine.expire_lease(session, job) == "queued"
            assert job.status == "queued" and job.lease_owner is None and "retrying" in job.error
        assert job.attempt == 3
        state_machine.start(session, job, "w3", lease_seconds=30)
        assert state_machine.expire_lease(session, job) == "failed"
        session.commit()
        assert job.status == "failed" and job.attempt == 3
        assert "w3 stopped renewing its lease (attempt 3 of 3); no attempts left" in job.error
        assert session.get(Task, job.task_id).status == "failed"


def test_release_on_shutdown_does_not_count_an_attempt(session_factory, make_job):
    with session_factory() as session:
        job = session.get(Job, make_job())
        state_machine.start(session, job, "w", lease_seconds=30)
        state_machine.release(session, job, "worker shut down")
        assert (job.status, job.attempt) == ("queued", 1)


def test_cancel_request_cancels_a_queued_job_now_and_flags_a_running_one(session_factory, make_job):
    queued_id, running_id = make_job(), make_job()
    with session_factory() as session:
        queued, running = session.get(Job, queued_id), session.get(Job, running_id)
        state_machine.start(session, running, "w", lease_seconds=30)
        state_machine.request_cancel(session, queued)
        state_machine.request_cancel(session, running)
        assert (queued.status, queued.cancel_requested) == ("cancelled", True)
        assert (running.status, running.cancel_requested) == ("running", True)
        state_machine.cancel(session, running, "cancelled while running")
        with pytest.raises(IllegalTransition, match="already finished"):
            state_machine.request_cancel(session, running)


def test_an_import_failed_by_the_reaper_leaves_only_its_job_and_other_failures_keep_their_rows(
    session_factory, make_job
):
    """Every way into failed or cancelled goes through ``transition``: here the reaper failing an import
    whose worker was lost on its last attempt (``expire_lease``). Its model, task and dataset go, the job
    stays with the reason and the name; a failed update of another model keeps every row."""
    from sqlalchemy import func, select

    from app.db.tables import Dataset, Model
    from app.jobs import queue

    imported, taught = make_job("imported", max_attempts=1), make_job("taught", max_attempts=1)
    with session_factory() as session:
        session.get(Task, session.get(Job, imported).task_id).strategy = "import"
        for job_id in (imported, taught):
            state_machine.start(session, session.get(Job, job_id), "lost-worker", lease_seconds=1)
        session.commit()
        assert queue.reap(session, now=utcnow() + timedelta(seconds=60)) == {imported: "failed", taught: "failed"}
    with session_factory() as session:
        job = session.get(Job, imported)
        assert (job.task_id, job.model_id, job.model_name) == (None, None, "imported")
        assert "stopped renewing its lease" in job.error and "stored nothing" in job.error
        assert session.scalars(select(Model.name)).all() == ["taught"]
        assert session.scalar(select(func.count(Task.id))) == session.scalar(select(func.count(Dataset.id))) == 1
        kept = session.get(Job, taught)
        assert kept.task_id is not None and kept.model_id is not None and "stored nothing" not in kept.error
