"""GET /jobs, GET /jobs/{id} (status and progress) and POST /jobs/{id}/cancel, with the real worker loop."""

import time


def test_cancel_a_queued_job_and_the_model_moves_on(client, settings, pmnist_files, teach, run_worker_once):
    first = teach(pmnist_files[0]).json()
    cancelled = client.post(f"/jobs/{first['job_id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["cancel_requested"] is True
    assert client.get(f"/tasks/{first['id']}").json()["status"] == "cancelled"  # the task mirrors its job

    again = client.post(f"/jobs/{first['job_id']}/cancel")
    assert again.status_code == 409 and "already finished" in again.json()["detail"]
    assert client.post("/jobs/424242/cancel").status_code == 404

    second = teach(pmnist_files[1]).json()
    assert run_worker_once() == 1  # the cancelled job is not claimed and does not block its model
    job = client.get(f"/jobs/{second['job_id']}").json()
    assert job["status"] == "succeeded" and job["model_version"] == 1
    versions = client.get("/models/m/versions").json()
    assert [(v["number"], v["task_id"]) for v in versions] == [(1, second["id"])]


def test_list_jobs_newest_first_with_filters(client, settings, pmnist_files, teach):
    ids = [teach(path, model=model).json()["job_id"] for path, model in zip(pmnist_files, ("a", "b"), strict=True)]
    client.post(f"/jobs/{ids[0]}/cancel")
    every = client.get("/jobs").json()
    assert [job["id"] for job in every] == ids[::-1]
    assert [job["id"] for job in client.get("/jobs", params={"model": "b"}).json()] == [ids[1]]
    assert [job["id"] for job in client.get("/jobs", params={"status": "cancelled"}).json()] == [ids[0]]
    assert client.get("/jobs", params={"model": "a", "status": "queued"}).json() == []
    queued = client.get(f"/jobs/{ids[1]}").json()
    assert queued["status"] == "queued" and queued["attempt"] == 1 and queued["progress"]["fraction"] == 0.0


def test_running_job_shows_progress_and_stops_when_cancelled(
    client, settings, pmnist_files, teach, wait_for_job, worker_thread
):
    quick = settings.model_copy(update={"progress_interval": 0.05, "heartbeat_seconds": 0.5})
    task = teach(pmnist_files[0], epochs="1000").json()  # far longer than the test waits (1000: max_epochs)
    with worker_thread(quick):
        deadline = time.monotonic() + 60
        while True:
            job = client.get(f"/jobs/{task['job_id']}").json()
            if job["status"] == "running" and job["progress"].get("epoch"):
                break
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.05)
        progress = job["progress"]
        assert progress["phase"] == "train" and progress["epochs"] == 1000
        assert 0 < progress["fraction"] < 1 and progress["loss"] is not None
        assert progress["samples_per_second"] > 0 and progress["eta_seconds"] > 0
        assert job["started_at"] is not None and job["finished_at"] is None

        asked = client.post(f"/jobs/{task['job_id']}/cancel").json()
        assert asked["cancel_requested"] is True and asked["status"] in ("running", "cancelled")
        done = wait_for_job(task["job_id"], timeout=30)
    assert done["status"] == "cancelled" and done["finished_at"] is not None
    assert done["model_version"] is None
    assert client.get("/models/m/versions").json() == []  # nothing half-stored
    assert client.get("/models/m").json()["serving_version"] is None
