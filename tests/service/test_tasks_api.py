"""POST /tasks through a real worker run: job, version, accuracy rows; two pmnist-conflict tasks."""

import numpy as np
import pytest


def test_two_tasks_give_two_history_entries(client, settings, pmnist_files, teach, run_worker_once):
    first = teach(pmnist_files[0])
    assert first.status_code == 202, first.text
    body = first.json()
    assert body["status"] == "queued" and body["job_id"] and body["dataset"]["n_test"] == 100
    assert run_worker_once() == 1
    job = client.get(f"/jobs/{body['job_id']}").json()
    assert job["status"] == "succeeded", job
    assert job["model_version"] == 1 and job["progress"]["fraction"] == 1.0

    second = teach(pmnist_files[1])
    assert second.status_code == 202, second.text
    run_worker_once()
    assert client.get(f"/jobs/{second.json()['job_id']}").json()["status"] in ("succeeded", "rejected")

    report = client.get(f"/tasks/{body['id']}/accuracy").json()
    assert [entry["after_task_id"] for entry in report["history"]] == [body["id"], second.json()["id"]]
    assert all(entry["n_test"] == 100 and 0 <= entry["accuracy"] <= 1 for entry in report["history"])
    assert report["initial"] == report["history"][0]["accuracy"]
    assert report["forgetting"] == report["best"] - report["current"]

    versions = client.get("/models/m/versions").json()
    assert [v["number"] for v in versions] == [1, 2]
    assert versions[1]["parent_number"] == 1 and versions[1]["ewc_lambda"] == 100.0
    assert versions[1]["fisher_recipe"]

    matrix = client.get("/models/m/accuracy").json()
    assert len(matrix["rows"]) == 2 and matrix["average_accuracy"] is not None

    tasks = client.get("/tasks", params={"model": "m"}).json()
    assert [t["id"] for t in tasks] == [body["id"], second.json()["id"]]
    assert client.get("/tasks/999999").status_code == 404


def test_forgetting_gate_rejects_an_update_that_forgets_and_promote_accepts_it(
    client, settings, tmp_path, teach, run_worker_once, pmnist_file
):
    """Fine-tuning a conflicting task (no EWC) under a tight gate: stored, not promoted, old version serves."""
    pmnist_files = [pmnist_file(index, n_train=400) for index in range(2)]
    first = teach(pmnist_files[0], epochs="10").json()  # learnt well enough to have something to lose
    run_worker_once()
    assert client.get(f"/jobs/{first['job_id']}").json()["status"] == "succeeded"

    second = teach(pmnist_files[1], strategy="finetune", epochs="5", max_forgetting="0.0").json()
    run_worker_once()
    job = client.get(f"/jobs/{second['job_id']}").json()
    assert job["status"] == "rejected", job
    assert "forgetting gate" in job["error"] and f"task {first['id']}" in job["error"]
    assert job["model_version"] == 2 and job["progress"]["fraction"] == 1.0
    assert client.get(f"/tasks/{second['id']}").json()["status"] == "rejected"
    assert client.get("/models/m").json()["serving_version"] == 1  # the old version still serves

    versions = client.get("/models/m/versions").json()
    assert [(v["number"], v["promoted"], v["serving"]) for v in versions] == [(1, True, True), (2, False, False)]
    verdict = versions[1]["validation"]
    assert verdict["passed"] is False and verdict["tripped_by"] == [str(first["id"])]
    assert verdict["max_forgetting"] == 0.0 and verdict["drops"][str(first["id"])] > 0.0
    assert (
        verdict["before"][str(first["id"])] - verdict["after"][str(first["id"])] == verdict["drops"][str(first["id"])]
    )

    # the rejected version is in the accuracy table too, but R and "current" follow what serves
    history = client.get(f"/tasks/{first['id']}/accuracy").json()
    assert [(e["model_version"], e["promoted"]) for e in history["history"]] == [(1, True), (2, False)]
    assert history["current"] == history["history"][0]["accuracy"]
    matrix = client.get("/models/m/accuracy").json()
    assert [row["promoted"] for row in matrix["rows"]] == [True, False] and len(matrix["matrix"]) == 1

    sample = np.load(pmnist_files[1])["x_test"][:2].tolist()
    assert client.post("/predict", json={"model": "m", "inputs": sample}).json()["model_version"] == 1
    assert client.post("/predict", json={"model": "m", "inputs": sample, "version": 2}).json()["model_version"] == 2

    promoted = client.post(f"/tasks/{second['id']}/promote")
    assert promoted.status_code == 200, promoted.text
    assert promoted.json() == {
        "task_id": second["id"],
        "model": "m",
        "model_version": 2,
        "previous_version": 1,
        "status": "rejected",
    }  # the job keeps the gate's verdict; the alias moved
    assert client.get("/models/m").json()["serving_version"] == 2
    assert [(v["promoted"], v["serving"]) for v in client.get("/models/m/versions").json()] == [
        (True, False),
        (True, True),
    ]
    assert client.post("/predict", json={"model": "m", "inputs": sample}).json()["model_version"] == 2  # no restart
    assert client.get("/models/m/accuracy").json()["matrix"][1][0] == history["history"][1]["accuracy"]
    assert client.post(f"/tasks/{second['id']}/promote").json()["previous_version"] == 2  # already serving: no-op


def test_promote_needs_a_trained_task(client, pmnist_files, teach):
    queued = teach(pmnist_files[0]).json()
    answer = client.post(f"/tasks/{queued['id']}/promote")
    assert answer.status_code == 409 and "no stored version" in answer.json()["detail"]
    assert client.post("/tasks/99999/promote").status_code == 404


def test_validation_data_never_leaks_into_reported_test_accuracy(
    client, settings, pmnist_files, teach, run_worker_once
):
    """The accuracy table is measured on the test split only: its n_test is the test split's size, and
    its accuracy is exactly what predicting the file's x_test gives; validation is stored apart."""
    data = np.load(pmnist_files[0])
    answer = teach(pmnist_files[0], epochs="2", validation_fraction="0.25").json()
    dataset = answer["dataset"]
    assert dataset["n_test"] == len(data["x_test"]) == 100
    assert dataset["n_train"] + dataset["n_validation"] == len(data["x"])  # validation comes out of x only
    assert dataset["n_validation"] == pytest.approx(0.25 * len(data["x"]), abs=10)
    run_worker_once()

    entry = client.get(f"/tasks/{answer['id']}/accuracy").json()["history"][0]
    assert entry["n_test"] == dataset["n_test"]
    predictions = client.post("/predict", json={"model": "m", "inputs": data["x_test"].tolist()}).json()["predictions"]
    measured = float(np.mean([p["label"] == y for p, y in zip(predictions, data["y_test"].tolist(), strict=True)]))
    assert entry["accuracy"] == pytest.approx(measured, abs=1e-9)

    verdict = client.get("/models/m/versions").json()[0]["validation"]  # what the service chose with
    assert set(verdict["after"]) == {str(answer["id"])}

    # without its own test split, test_fraction of the upload is held out, disjoint from validation
    no_test = pmnist_files[0].with_name("no_test.npz")
    np.savez(no_test, x=data["x"], y=data["y"])
    split = teach(no_test, model="other", test_fraction="0.2").json()["dataset"]
    assert split["n_train"] + split["n_validation"] + split["n_test"] == len(data["x"])
    assert split["n_test"] == pytest.approx(0.2 * len(data["x"]), abs=10)
    assert split["n_validation"] == pytest.approx(0.1 * len(data["x"]), abs=10)


def open_transactions(database_url: str) -> int:
    """Transactions other connections hold open now: SQLite's write lock (taken or not, at once, with no
    busy wait) or, on Postgres, the backends of the test database inside a transaction."""
    if database_url.startswith("sqlite"):
        import sqlite3

        probe = sqlite3.connect(database_url.split(":///", 1)[1], timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return 0
        except sqlite3.OperationalError as error:
            assert "locked" in str(error), error
            return 1
        finally:
            probe.close()
    import psycopg

    name = database_url.rsplit("/", 1)[1]
    admin = database_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        return connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND xact_start IS NOT "
            "NULL AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            (name,),
        ).fetchone()[0]


@pytest.mark.parametrize("step", ["parse_dataset", "store_dataset"])
def test_an_upload_holds_no_transaction_while_it_is_parsed_and_stored(
    step, database_url, client, teach, pmnist_file, monkeypatch
):
    """The upload is held inside ``step`` (an event, no timing); meanwhile no transaction is open, so
    another write (a key created through the API) goes through at once, and the upload then lands."""
    import threading

    import app.tasks.service as tasks_service

    inside, resume = threading.Event(), threading.Event()
    real = getattr(tasks_service, step)

    def held(*args, **kwargs):
        inside.set()
        assert resume.wait(60), "the test never let the upload go on"
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks_service, step, held)
    answers = []
    upload = threading.Thread(target=lambda: answers.append(teach(pmnist_file(0))))
    upload.start()
    try:
        assert inside.wait(60), f"the upload never reached {step}"
        assert open_transactions(database_url) == 0
        created = client.post("/keys", json={"scope": "predict", "name": f"created while an upload ran {step}"})
        assert created.status_code == 201, created.text
    finally:
        resume.set()
        upload.join(60)
    assert answers and answers[0].status_code == 202, answers and answers[0].text
    assert client.get(f"/tasks/{answers[0].json()['id']}").json()["status"] == "queued"


def test_a_training_batch_larger_than_the_serving_batch_is_accepted_and_trains(
    client, settings, tmp_path, teach, run_worker_once
):
    """batch_size is limited by max_batch_size (training), not by predict_max_batch_size (serving): they were
    one field declared twice, and the serving limit of 64 refused every training batch above it."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    path = tmp_path / "signs.npz"
    np.savez(path, x=x, y=(x[:, 0] > 0).astype(np.int64))
    answer = teach(path, batch_size="128")
    assert answer.status_code == 202, answer.text
    assert run_worker_once() == 1
    job = client.get(f"/jobs/{answer.json()['job_id']}").json()
    assert job["status"] == "succeeded", job
    task = client.get(f"/tasks/{answer.json()['id']}").json()
    assert task["hyperparameters"]["batch_size"] == 128, task

    over = teach(path, batch_size=str(settings.max_batch_size + 1))
    assert over.status_code == 422 and "(max_batch_size)" in over.json()["detail"], over.text
    assert settings.predict_max_batch_size < 128  # the default serving batch the bug applied to training
    assert client.app.state.serving.batcher.max_batch_size == settings.predict_max_batch_size


def test_the_serving_batch_has_its_own_environment_variable(monkeypatch):
    from app.settings import Settings

    monkeypatch.setenv("RETAIN_PREDICT_MAX_BATCH_SIZE", "16")
    monkeypatch.setenv("RETAIN_MAX_BATCH_SIZE", "512")
    settings = Settings()
    assert (settings.predict_max_batch_size, settings.max_batch_size) == (16, 512)
