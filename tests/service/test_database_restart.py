"""The Postgres server restarted while a real worker process trains: the job finishes (or is retried) and
lands exactly once. The server is a private throwaway one (the `private_postgres` fixture), never the
shared one every other test uses: this module's ``database_url`` points every fixture built on it
(settings, sessions, the worker's environment) at the private server."""

import pytest
from test_faults import finished
from test_updates import LONG_TRAINING, versions_of, wait_for_training
from waiting import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def database_url(private_postgres):
    return private_postgres.url


def test_postgres_restarted_mid_training_the_job_lands_once(
    private_postgres, session_factory, submit_task, worker_processes
):
    task_id, job_id = submit_task(index=0, **LONG_TRAINING)
    worker = worker_processes("w")
    wait_for_training(session_factory, job_id)
    # pg_ctl restart -m fast, in two steps so that the worker is seen failing against the stopped server
    # (no race between the restart and the end of training)
    private_postgres.stop()  # a fast shutdown: every connection is closed under the worker
    wait_until(
        lambda: f"heartbeat of job {job_id} failed" in worker.log_path.read_text(),
        60,
        "the worker to find the database gone while it trains",
    )
    private_postgres.start()

    job = finished(session_factory, job_id)
    assert job.status == "succeeded", job.error
    assert [version.task_id for version in versions_of(session_factory)] == [task_id]
    assert worker.poll() is None  # the worker lives on
