"""The durable queue (app/jobs/queue.py): atomic claims, per-model order, leases, the reaper."""

import threading
from datetime import timedelta

from app.db.tables import Job, utcnow
from app.jobs import queue


def claim(session_factory, worker: str, lease_seconds: float = 30.0, now=None):
    with session_factory() as session:
        return queue.claim(session, worker, lease_seconds, now)


def status_of(session_factory, job_id: int) -> Job:
    with session_factory() as session:
        return session.get(Job, job_id)


def test_an_empty_queue_gives_nothing(session_factory):
    assert claim(session_factory, "w") is None


def test_a_model_runs_its_jobs_in_order_and_other_models_in_parallel(session_factory, make_job):
    first, second, third = make_job("a"), make_job("a"), make_job("a")
    other = make_job("b")
    held = claim(session_factory, "w1")
    assert held.job_id == first
    # a's next job waits for the first to finish; b's job is free to run beside it
    assert claim(session_factory, "w2").job_id == other
    assert claim(session_factory, "w3") is None
    with session_factory() as session:
        assert queue.finish(session, held, "failed", "test")
    assert claim(session_factory, "w3").job_id == second
    assert claim(session_factory, "w4") is None
    assert status_of(session_factory, third).status == "queued"


def test_concurrent_claims_never_hand_out_a_job_twice(session_factory, make_job):
    """Eight threads race for six jobs of six models: each job goes to exactly one of them."""
    jobs = {make_job(f"model{index}") for index in range(6)}
    barrier = threading.Barrier(8)
    won: list[int] = []
    errors: list[BaseException] = []

    def race(worker: str) -> None:
        try:
            barrier.wait()
            while (held := claim(session_factory, worker)) is not None:
                won.append(held.job_id)
        except BaseException as error:  # surfaced below: a thread's exception would vanish otherwise
            errors.append(error)

    threads = [threading.Thread(target=race, args=(f"w{index}",)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(won) == sorted(jobs)
    owners = {status_of(session_factory, job_id).lease_owner for job_id in jobs}
    assert len(owners) == 6  # one distinct lease per claim


def test_heartbeat_renews_the_lease_records_progress_and_reports_cancel(session_factory, make_job):
    job_id = make_job()
    held = claim(session_factory, "w", lease_seconds=5)
    expires = status_of(session_factory, job_id).lease_expires_at
    with session_factory() as session:
        beat = queue.heartbeat(session, held, 60, {"fraction": 0.5, "epoch": 1}, now=utcnow() + timedelta(seconds=1))
    assert beat.owned and not beat.cancel_requested
    job = status_of(session_factory, job_id)
    assert job.lease_expires_at > expires + timedelta(seconds=50) and job.progress["fraction"] == 0.5
    with session_factory() as session:
        session.get(Job, job_id).cancel_requested = True
        session.commit()
    with session_factory() as session:
        assert queue.heartbeat(session, held, 60).cancel_requested


def test_the_reaper_requeues_an_expired_lease_and_the_old_owner_can_no_longer_touch_it(session_factory, make_job):
    job_id = make_job()
    lost = claim(session_factory, "dead-worker", lease_seconds=5)
    with session_factory() as session:
        assert queue.reap(session) == {}  # the lease is still valid
        assert queue.reap(session, now=utcnow() + timedelta(seconds=6)) == {job_id: "queued"}
    job = status_of(session_factory, job_id)
    assert (job.status, job.attempt) == ("queued", 2)
    retry = claim(session_factory, "live-worker")
    assert retry.job_id == job_id and retry.attempt == 2 and retry.lease_owner != lost.lease_owner
    with session_factory() as session:
        assert not queue.heartbeat(session, lost, 30).owned
        assert not queue.finish(session, lost, "failed", "too late")
        assert not queue.release(session, lost, "too late")
    assert status_of(session_factory, job_id).status == "running"


def test_a_job_fails_with_the_reason_after_its_last_attempt(session_factory, make_job, settings):
    job_id = make_job()
    now = utcnow()
    for attempt in range(1, settings.max_attempts + 1):
        held = claim(session_factory, f"w{attempt}", lease_seconds=5, now=now)
        assert held.attempt == attempt
        now += timedelta(seconds=6)
        with session_factory() as session:
            outcome = queue.reap(session, now=now)
        assert outcome == {job_id: "queued" if attempt < settings.max_attempts else "failed"}
    job = status_of(session_factory, job_id)
    assert job.status == "failed" and "no attempts left" in job.error


def test_a_released_job_is_claimed_again_first(session_factory, make_job):
    first, second = make_job("a"), make_job("a")
    held = claim(session_factory, "w")
    with session_factory() as session:
        assert queue.release(session, held, "worker shut down")
    again = claim(session_factory, "w2")
    assert (again.job_id, again.attempt) == (first, 1)
    assert status_of(session_factory, second).status == "queued"
