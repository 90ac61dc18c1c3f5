"""The feedback loop through the API and a real worker: predictions logged with ids, labels sent later,
live accuracy, and each trigger firing when it should and not before (app/feedback/)."""

import time

import numpy as np
import pytest
from test_metrics import scrape, value
from waiting import wait_until

from app.feedback.triggers import TriggerEvaluator

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

FAST = {"feedback_check_interval": 0.05, "feedback_flush_interval": 0.05}


CENTRES = np.random.default_rng(0).normal(0, 4, size=(3, 8))


def blobs(count, seed, shift=0.0, labels=(0, 1, 2)):
    """``count`` samples of three well-separated Gaussian blobs in 8 dimensions (moved by ``shift``);
    blob k gets ``labels[k]``: a permutation of the labels is a conflicting task on the same inputs."""
    rng = np.random.default_rng(seed)
    blob = rng.integers(0, 3, size=count)
    x = (CENTRES[blob] + rng.normal(0, 1, size=(count, 8)) + shift).astype(np.float32)
    return x, np.asarray(labels)[blob]


@pytest.fixture
def served(client, tmp_path, teach, run_worker_once):
    """Model "m" serving version 1, learnt from 300 samples of the blobs (any forgetting allowed)."""
    x, y = blobs(300, seed=1)
    path = tmp_path / "blobs.npz"
    np.savez(path, x=x, y=y)
    assert teach(path, max_forgetting="1.0", architecture_options='{"hidden": [16]}', epochs="3").status_code == 202
    assert run_worker_once() == 1
    assert client.get("/models/m").json()["serving_version"] == 1
    return path


def set_policy(client, **policy):
    answer = client.put("/models/m/feedback-policy", json=policy)
    assert answer.status_code == 200, answer.text
    return answer.json()


def predict_ids(client, inputs):
    answer = client.post("/predict", json={"model": "m", "inputs": inputs.tolist()})
    assert answer.status_code == 200, answer.text
    return [prediction["prediction_id"] for prediction in answer.json()["predictions"]]


def label(client, ids, labels):
    items = [{"prediction_id": i, "label": int(y)} for i, y in zip(ids, labels, strict=True)]
    return client.post("/feedback", json={"model": "m", "items": items})


def decisions(client, trigger=None):
    answer = client.get("/models/m/triggers")
    assert answer.status_code == 200, answer.text
    return [d for d in answer.json()["decisions"] if trigger is None or d["trigger"] == trigger]


def test_policy_is_validated_and_kept(client, served):
    assert client.get("/models/m/feedback-policy").status_code == 404
    policy = set_policy(
        client,
        log_rate=0.5,
        triggers=[{"kind": "every_n_labels", "n": 10}, {"kind": "drift", "alpha": 0.01}],
    )
    assert policy["triggers"][1] == {
        "kind": "drift",
        "test": "ks",
        "alpha": 0.01,
        "window": 200,
        "min_samples": 50,
        "reference_samples": 500,
    }
    assert client.get("/models/m/feedback-policy").json()["log_rate"] == 0.5
    for bad in (
        {"triggers": [{"kind": "sometimes"}]},
        {"triggers": [{"kind": "accuracy_below", "threshold": 2}]},
        {"log_rate": 1.5},
        {"log_max_samples": 10**9},
    ):
        answer = client.put("/models/m/feedback-policy", json=bad)
        assert answer.status_code == 422, (bad, answer.text)
    assert client.get("/models/m/feedback-policy").json()["log_rate"] == 0.5  # unchanged by the refusals
    assert client.put("/models/nope/feedback-policy", json={}).status_code == 404


def test_logged_predictions_take_labels_later(client, served):
    inputs, truth = blobs(6, seed=2)
    assert predict_ids(client, inputs) == [None] * 6  # no policy: nothing logged, no id
    set_policy(client, log_rate=1.0)
    ids = predict_ids(client, inputs)
    assert all(ids) and len(set(ids)) == 6
    infer = client.post(
        "/v2/models/m/infer",
        json={
            "inputs": [
                {"name": "input-0", "shape": [2, 8], "datatype": "FP32", "data": inputs[:2].reshape(-1).tolist()}
            ]
        },
    )
    assert infer.status_code == 200, infer.text
    oip_ids = next(o for o in infer.json()["outputs"] if o["name"] == "prediction_id")
    assert oip_ids["datatype"] == "BYTES" and oip_ids["shape"] == [2] and all(oip_ids["data"])

    kept = label(client, ids[:4], truth[:4])
    assert kept.status_code == 200 and kept.json()["accepted"] == 4, kept.text
    again = label(client, ids[:4], truth[:4])  # idempotent
    assert again.status_code == 200 and not any(r["changed"] for r in again.json()["results"])
    assert client.get("/models/m/triggers").json()["buffered_labels"] == 4

    mixed = client.post(
        "/feedback",
        json={
            "model": "m",
            "items": [
                {"prediction_id": ids[4], "label": int(truth[4])},
                {"prediction_id": "f" * 32, "label": 1},
                {"prediction_id": ids[5], "label": "seven"},
            ],
        },
    )
    assert mixed.status_code == 207, mixed.text
    assert [r["status"] for r in mixed.json()["results"]] == [200, 404, 422]
    assert client.get("/models/m/triggers").json()["buffered_labels"] == 5

    for bad in (
        {"model": "m", "items": [{"prediction_id": "0" * 32, "label": 1}]},
        {"model": "m", "items": [{"prediction_id": ids[5], "label": 2.5}]},
        {"model": "m", "inputs": [[1.0, 2.0]], "labels": [1]},  # not the model's shape
        {"model": "m", "inputs": inputs[:2].tolist(), "labels": [1]},
        {"model": "m", "inputs": (inputs[:1] * 1e12).tolist(), "labels": [1]},  # past max_abs_value
        {"model": "m"},
    ):
        refused = client.post("/feedback", json=bad)
        assert 400 <= refused.status_code < 500, (bad, refused.text)
    assert client.post("/feedback", json={"model": "nope", "items": []}).status_code in (404, 422)
    assert client.get("/models/m/triggers").json()["buffered_labels"] == 5  # nothing changed

    fresh = client.post("/feedback", json={"model": "m", "inputs": inputs[:2].tolist(), "labels": [3, 4]})
    assert fresh.status_code == 200 and fresh.json()["accepted"] == 2
    assert client.get("/models/m/triggers").json()["buffered_labels"] == 7

    live = client.get("/models/m/live-accuracy").json()
    version = next(v for v in live["versions"] if v["model_version"] == 1)
    served_labels = client.post("/predict", json={"model": "m", "inputs": inputs[:5].tolist()}).json()["predictions"]
    expected = np.mean([answer["label"] == int(y) for answer, y in zip(served_labels, truth[:5], strict=True)])
    assert version["n"] == 5 and version["accuracy"] == pytest.approx(expected)
    assert version["serving"] and live["history"]
    metrics = scrape(client)
    assert value(metrics, "retain_model_live_accuracy", model="m", version="1") == pytest.approx(expected)
    assert value(metrics, "retain_model_live_accuracy_samples", model="m", version="1") == 5
    assert value(metrics, "retain_model_feedback_buffered_labels", model="m") == 7
    page = client.get("/ui")
    assert page.status_code == 200 and 'id="live-box"' in page.text  # the dashboard's line of it


def test_the_inference_protocol_answers_and_declares_prediction_ids(client, served, api_replica):
    """tritonclient reads the ids from the model metadata and from every inference, JSON or binary,
    whichever outputs it names; they take labels as /predict's do."""
    import httpx
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    key = {"Authorization": f"Bearer {client.api_key}"}
    oip = triton.InferenceServerClient(api_replica)
    declared = {"name": "prediction_id", "datatype": "BYTES", "shape": [-1]}
    x, y = blobs(4, seed=24)

    def infer(binary, names=None):
        tensor = triton.InferInput("input-0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = None if names is None else [triton.InferRequestedOutput(n, binary_data=binary) for n in names]
        return oip.infer("m", [tensor], outputs=outputs, headers=dict(key))

    assert declared not in oip.get_model_metadata("m", headers=dict(key))["outputs"]
    assert infer(True).as_numpy("prediction_id") is None  # no policy: no ids
    with pytest.raises(InferenceServerException, match="needs a feedback policy"):
        infer(True, ["prediction_id"])

    replica = httpx.Client(base_url=f"http://{api_replica}", headers=key)  # the replica knows its own policy at once
    replica.put("/models/m/feedback-policy", json={"log_rate": 1.0}).raise_for_status()
    assert declared in oip.get_model_metadata("m", headers=dict(key))["outputs"]
    assert declared in oip.get_model_metadata("m", "1", headers=dict(key))["outputs"]
    every = []
    for binary in (False, True):
        for names in (None, ["label"], ["label", "prediction_id"]):
            answer = infer(binary, names)
            ids = [i.decode() if isinstance(i, bytes) else i for i in answer.as_numpy("prediction_id")]
            assert len(ids) == 4 and all(len(i) == 32 for i in ids), (binary, names, ids)
            every.extend(ids)
    assert len(set(every)) == len(every)  # an id per sample and per request
    answer = replica.post("/feedback", json={"model": "m", "items": [{"prediction_id": every[-1], "label": int(y[3])}]})
    assert answer.status_code == 200 and answer.json()["accepted"] == 1, answer.text
    predicted = replica.post("/predict", json={"model": "m", "inputs": x.tolist()}).json()["predictions"]
    assert all(len(p["prediction_id"]) == 32 for p in predicted)  # /predict answers them too
    replica.close()


def stream(client, count, seed, **blob_options):
    """``count`` samples predicted, then their true labels sent: what a stream of production does."""
    x, y = blobs(count, seed, **blob_options)
    ids = predict_ids(client, x)
    answer = label(client, ids, y)
    assert answer.status_code == 200, answer.text
    return ids, y


def fast(settings):
    return settings.model_copy(update=FAST)


def test_every_n_labels_fires_at_n_and_the_update_lands(client, settings, served, worker_thread, wait_for_job):
    set_policy(client, log_rate=1.0, min_labels=20, triggers=[{"kind": "every_n_labels", "n": 60}])
    stream(client, 59, seed=3)
    with worker_thread(fast(settings)):
        wait_until(lambda: any("59 labels buffered" in d["reason"] for d in decisions(client)), what="an evaluation")
        assert not any(d["fired"] for d in decisions(client))
        stream(client, 1, seed=4)
        fired = wait_until(lambda: [d for d in decisions(client) if d["fired"]], what="the trigger")[0]
        assert fired["task_id"] is not None and "60 labels buffered" in fired["reason"]
        task = client.get(f"/tasks/{fired['task_id']}").json()
        first_strategy = client.get("/tasks/1").json()["strategy"]  # the model's strategy: the default, auto
        assert task["name"].startswith("feedback-") and task["strategy"] == first_strategy == "auto"
        assert task["dataset"]["n_train"] + task["dataset"]["n_validation"] + task["dataset"]["n_test"] == 60
        job = wait_for_job(task["job_id"])
        assert job["status"] == "succeeded", job
    assert client.get("/models/m").json()["serving_version"] == 2
    assert client.get("/models/m/triggers").json()["buffered_labels"] == 0  # the buffer went into the task


def test_labels_for_an_older_version_still_count(client, settings, served, worker_thread, wait_for_job):
    set_policy(client, log_rate=1.0, min_labels=20, triggers=[{"kind": "every_n_labels", "n": 40}])
    x, y = blobs(40, seed=5)
    old_ids = predict_ids(client, x)  # answered by version 1, labelled only after version 2 serves
    evaluator = TriggerEvaluator(session_factory_of(settings), store_of(settings), settings)
    stream(client, 40, seed=6)
    assert any(verdict.fired for verdict in evaluator.run())
    task_id = decisions(client)[-1]["task_id"]
    with worker_thread():
        assert wait_for_job(client.get(f"/tasks/{task_id}").json()["job_id"])["status"] == "succeeded"
    assert client.get("/models/m").json()["serving_version"] == 2
    assert label(client, old_ids, y).json()["accepted"] == 40
    assert client.get("/models/m/triggers").json()["buffered_labels"] == 40
    live = {v["model_version"]: v for v in client.get("/models/m/live-accuracy").json()["versions"]}
    assert live[1]["n"] == 80 and live[2]["n"] == 0  # judged as the version that answered
    assert any(verdict.fired for verdict in evaluator.run())  # and they make the next update


def session_factory_of(settings):
    from app.db.session import session_factory

    return session_factory(settings)


def store_of(settings):
    from app.storage.artifacts import artifact_store

    return artifact_store(settings)


def evaluator_of(settings):
    return TriggerEvaluator(session_factory_of(settings), store_of(settings), settings)


def fired(verdicts, kind):
    return [verdict for verdict in verdicts if verdict.trigger == kind and verdict.fired]


def test_every_seconds_fires_once_due(client, settings, served):
    set_policy(client, log_rate=1.0, min_labels=20, triggers=[{"kind": "every_seconds", "seconds": 1}])
    stream(client, 30, seed=7)
    evaluator = evaluator_of(settings)
    assert not fired(evaluator.run(), "every_seconds")  # set less than a second ago
    time.sleep(1.1)
    assert fired(evaluator.run(), "every_seconds")
    assert decisions(client, "every_seconds")[-1]["task_id"] is not None


def test_accuracy_below_and_drop_fire_when_served_accuracy_falls(client, settings, served):
    set_policy(
        client,
        log_rate=1.0,
        min_labels=20,
        accuracy_window=30,
        triggers=[
            {"kind": "accuracy_below", "threshold": 0.6, "min_samples": 30},
            {"kind": "accuracy_drop", "drop": 0.3, "min_samples": 30},
        ],
    )
    evaluator = evaluator_of(settings)
    stream(client, 29, seed=8, labels=(1, 2, 0))  # the labels moved: served accuracy falls to ~0
    verdicts = evaluator.run()
    assert not any(verdict.fired for verdict in verdicts)  # one sample short of min_samples
    assert all("29 labelled predictions" in verdict.reason for verdict in verdicts)
    stream(client, 30, seed=9)  # the old labels again: accuracy is back, nothing fires
    assert not any(verdict.fired for verdict in evaluator.run())
    stream(client, 30, seed=10, labels=(1, 2, 0))
    verdicts = evaluator.run()
    assert fired(verdicts, "accuracy_below") and fired(verdicts, "accuracy_drop")
    below = decisions(client, "accuracy_below")
    assert below[-1]["fired"] and below[-1]["task_id"] is not None and not below[-2]["fired"]


def test_drift_fires_on_moved_inputs_only(client, settings, served):
    set_policy(
        client,
        log_rate=1.0,
        min_labels=20,
        triggers=[{"kind": "drift", "alpha": 0.01, "window": 40, "min_samples": 40, "reference_samples": 200}],
    )
    evaluator = evaluator_of(settings)
    stream(client, 39, seed=11)
    assert "the test needs 40" in evaluator.run()[0].reason
    stream(client, 40, seed=12)  # the training distribution: no drift
    verdict = evaluator.run()[0]
    assert not verdict.fired and "0 of 8 features" in verdict.reason
    stream(client, 40, seed=13, shift=3.0)  # every feature moved
    verdict = evaluator.run()[0]
    assert verdict.fired and "queued task" in verdict.reason


def test_one_trigger_made_update_at_a_time(client, settings, served):
    set_policy(client, log_rate=1.0, min_labels=20, triggers=[{"kind": "every_n_labels", "n": 20}])
    evaluator = evaluator_of(settings)
    stream(client, 20, seed=14)
    assert fired(evaluator.run(), "every_n_labels")
    stream(client, 20, seed=15)  # the first update is still queued (no worker runs)
    verdict = evaluator.run()[0]
    assert verdict.fired and "still unfinished" in verdict.reason
    made = [d for d in decisions(client) if d["task_id"] is not None]
    assert len(made) == 1
    assert client.get("/models/m/triggers").json()["buffered_labels"] == 20  # kept for the next update

    # two workers that both judged before either queued: the second is refused under the model's lock
    from sqlalchemy import select

    from app.db.tables import Model
    from app.errors import Conflict
    from app.feedback.triggers import model_state, submit_buffer

    with session_factory_of(settings)() as session:
        state = model_state(session, session.scalar(select(Model.id).where(Model.name == "m")))
        state.pending_job = None  # what a worker that judged a moment earlier saw
        with pytest.raises(Conflict, match="still unfinished"):
            submit_buffer(session, store_of(settings), settings, state)
    assert client.get("/models/m/triggers").json()["buffered_labels"] == 20


def test_a_restart_loses_no_label_nor_logged_prediction(settings, served, client, api_client):
    set_policy(client, log_rate=1.0, min_labels=20, triggers=[{"kind": "every_n_labels", "n": 30}])
    stream(client, 25, seed=16)
    x, y = blobs(5, seed=17)
    ids = predict_ids(client, x)  # buffered in memory: written at shutdown at the latest
    client.__exit__(None, None, None)  # the app stops (lifespan shutdown)
    with api_client(settings) as restarted:
        assert restarted.get("/models/m/triggers").json()["buffered_labels"] == 25
        assert label(restarted, ids, y).json()["accepted"] == 5
        assert fired(evaluator_of(settings).run(), "every_n_labels")


def test_labels_of_an_update_that_does_not_land_return_to_the_buffer(
    client, settings, served, run_worker_once, api_client
):
    """Rejected by the gate, failed, cancelled: the labels a trigger-made task took go back to the buffer
    (in the database, so a restart keeps them), and the next update, queued once a new label arrives,
    holds them all."""
    from sqlalchemy import update

    from app.db.tables import Dataset, Model, Task

    set_policy(
        client, log_rate=1.0, min_labels=20, update={"epochs": 20}, triggers=[{"kind": "every_n_labels", "n": 30}]
    )
    with session_factory_of(settings)() as session:  # the gate refuses any forgetting from now on
        session.execute(update(Model).where(Model.name == "m").values(max_forgetting=0.0))
        session.commit()
    worker = settings.model_copy(update={"reject_not_learnt": True})
    evaluator = evaluator_of(settings)

    def buffered():
        return client.get("/models/m/triggers").json()["buffered_labels"]

    def queue_the_buffer(expected):
        """The trigger fires and queues a task holding every buffered label; returns (task id, job id)."""
        assert buffered() == expected
        assert fired(evaluator.run(), "every_n_labels")
        task_id = decisions(client)[-1]["task_id"]
        assert task_id is not None and buffered() == 0  # claimed by the task while its update is unfinished
        task = client.get(f"/tasks/{task_id}").json()
        assert sum(task["dataset"][f"n_{split}"] for split in ("train", "validation", "test")) == expected
        return task_id, task["job_id"]

    def not_queued_without_a_new_label(count):
        verdict = evaluator.run()[0]
        assert verdict.fired and "waiting for a new label" in verdict.reason, verdict.reason
        assert decisions(client)[-1]["task_id"] is None and buffered() == count
        stream(client, 1, seed=40 + count, labels=(1, 2, 0))

    # 1. rejected: labels that contradict what version 1 learnt cannot be learnt without forgetting it
    stream(client, 30, seed=31, labels=(1, 2, 0))
    _, job_id = queue_the_buffer(30)
    assert run_worker_once(worker) == 1
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "rejected", job
    assert buffered() == 30
    not_queued_without_a_new_label(30)

    # 2. failed: the task's data vanished from the artifact store before the worker read it
    task_id, job_id = queue_the_buffer(31)
    with session_factory_of(settings)() as session:
        dataset = session.get(Dataset, session.get(Task, task_id).dataset_id)
        dataset.artifact_uri = dataset.artifact_uri.replace(dataset.artifact_sha256, "f" * 64)
        dataset.artifact_sha256 = "f" * 64
        session.commit()
    assert run_worker_once(worker) == 1
    assert client.get(f"/jobs/{job_id}").json()["status"] == "failed"
    assert buffered() == 31
    not_queued_without_a_new_label(31)

    # 3. cancelled by a user before it ran
    _, job_id = queue_the_buffer(32)
    assert client.post(f"/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    assert buffered() == 32

    # 4. a restart keeps them; the next update holds them all and lands
    client.__exit__(None, None, None)
    with api_client(settings) as restarted:
        assert restarted.get("/models/m/triggers").json()["buffered_labels"] == 32
        stream(restarted, 1, seed=50, labels=(1, 2, 0))
        evaluator = evaluator_of(settings)
        client = restarted
        _, job_id = queue_the_buffer(33)
        with session_factory_of(settings)() as session:  # any forgetting is fine now: the labels moved
            session.execute(update(Model).where(Model.name == "m").values(max_forgetting=1.0))
            session.commit()
        assert run_worker_once() == 1
        assert restarted.get(f"/jobs/{job_id}").json()["status"] == "succeeded"
        assert buffered() == 0 and restarted.get("/models/m").json()["serving_version"] == 3


def test_the_log_is_sampled_and_bounded(client, settings, served):
    set_policy(client, log_rate=0.5, log_max_samples=50)
    x, _ = blobs(200, seed=18)
    ids = predict_ids(client, x)
    logged = [i for i in ids if i]
    assert 0 < len(logged) < 200
    client.app.state.serving.prediction_log.flush()
    from sqlalchemy import func, select

    from app.db.tables import LoggedSample

    with session_factory_of(settings)() as session:
        kept = set(session.scalars(select(LoggedSample.prediction_id)))
        assert session.scalar(select(func.count(LoggedSample.id))) == min(50, len(logged))
    assert kept == set(logged[-len(kept) :])  # the oldest went first


def test_feedback_as_a_file(client, served, tmp_path):
    set_policy(client, log_rate=1.0)
    x, y = blobs(10, seed=19)
    ids = predict_ids(client, x)
    csv_text = "prediction_id,label\n" + "".join(f"{i},{label}\n" for i, label in zip(ids, y, strict=True))
    answer = client.post("/feedback/file", data={"model": "m"}, files={"file": ("labels.csv", csv_text.encode())})
    assert answer.status_code == 200 and answer.json()["accepted"] == 10, answer.text
    samples = tmp_path / "more.npz"
    np.savez(samples, x=x, y=y)
    with open(samples, "rb") as upload:
        answer = client.post("/feedback/file", data={"model": "m"}, files={"file": ("more.npz", upload)})
    assert answer.status_code == 200 and answer.json()["accepted"] == 10, answer.text
    assert client.get("/models/m/triggers").json()["buffered_labels"] == 20


def test_the_cli_turns_the_loop_on_and_sends_labels(capsys, client, served, api_replica, tmp_path):
    """`retain loop` and `retain feedback` over real HTTP against a served replica."""
    import json

    import httpx

    from app import cli
    from app.cli import render

    render.console.width = 200  # lines unwrapped in captured output

    def run(*argv):
        code = cli.main(["--url", f"http://{api_replica}", "--api-key", client.api_key, *argv])
        return code, capsys.readouterr().out

    policy = '{"log_rate": 1, "min_labels": 20, "triggers": [{"kind": "every_n_labels", "n": 100}]}'
    code, out = run("loop", "m", "--policy", policy)
    assert code == 0 and "every_n_labels" in out and "0 label(s) buffered" in out
    x, y = blobs(4, seed=20)
    answer = httpx.post(
        f"http://{api_replica}/predict",
        json={"model": "m", "inputs": x.tolist()},
        headers={"Authorization": f"Bearer {client.api_key}"},
    )
    ids = [prediction["prediction_id"] for prediction in answer.json()["predictions"]]
    code, out = run("feedback", "m", "--label", f"{ids[0]}={y[0]}", "--label", f"{ids[1]}={y[1]}")
    assert code == 0 and "2 label(s) kept, 0 refused" in out
    labels = tmp_path / "labels.csv"
    labels.write_text("prediction_id,label\n" + f"{ids[2]},{y[2]}\n{ids[3]},{y[3]}\nnot-an-id,1\n")
    code, out = run("feedback", "m", str(labels))
    assert code == 1 and "2 label(s) kept, 1 refused" in out and "not-an-id: 404" in out
    code, out = run("loop", "m", "--json")
    status = json.loads(out)
    assert code == 0 and status["triggers"]["buffered_labels"] == 4
    assert status["live_accuracy"]["versions"][0]["n"] == 4


def test_a_label_never_seen_makes_the_update_class_incremental(client, settings, served, run_worker_once):
    set_policy(
        client, log_rate=1.0, min_labels=20, update={"epochs": 20}, triggers=[{"kind": "every_n_labels", "n": 90}]
    )
    stream(client, 45, seed=21)  # the three known blobs
    new_class, _ = blobs(45, seed=22, shift=12.0)  # a region of the input space no blob covers
    ids = predict_ids(client, new_class)
    assert label(client, ids, [3] * 45).json()["accepted"] == 45
    assert fired(evaluator_of(settings).run(), "every_n_labels")
    task_id = decisions(client)[-1]["task_id"]
    assert 3 in client.get(f"/tasks/{task_id}").json()["dataset"]["labels"]
    assert run_worker_once() == 1
    assert client.get(f"/jobs/{client.get(f'/tasks/{task_id}').json()['job_id']}").json()["status"] == "succeeded"
    later, _ = blobs(20, seed=23, shift=12.0)
    answer = client.post("/predict", json={"model": "m", "inputs": later.tolist()}).json()
    assert answer["model_version"] == 2
    assert sum(prediction["label"] == 3 for prediction in answer["predictions"]) >= 15
