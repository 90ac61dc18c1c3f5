"""The feedback loop on a text model (a tiny BERT imported through POST /models): its predictions are
logged with ids and their texts, labels and labelled texts come back as JSON or a file, a text sent to
a model of numbers (and the reverse) is refused per item naming both, and a fired trigger makes a
text task whose update lands. Drift does not apply to text: the policy refuses it."""

import json

import numpy as np
import pytest
from sqlalchemy import func, select
from test_feedback_loop import blobs, evaluator_of, fired, session_factory_of
from test_text_api import import_text_model
from tiny_text_model import topic_task
from waiting import wait_until

from app.db.tables import LoggedSample
from app.feedback.prediction_log import unpack_text

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

MODEL = "tickets"


@pytest.fixture
def text_served(client, run_worker_once, tiny_text_model) -> str:
    """Model "tickets" imported (version 1 serving, labels sport and business)."""
    import_text_model(client, run_worker_once, MODEL, tiny_text_model)
    assert client.get(f"/models/{MODEL}").json()["serving_version"] == 1
    return MODEL


def set_policy(client, model=MODEL, **policy):
    answer = client.put(f"/models/{model}/feedback-policy", json=policy)
    assert answer.status_code == 200, answer.text
    return answer.json()


def predict(client, texts, model=MODEL) -> list[dict]:
    answer = client.post("/predict", json={"model": model, "inputs": texts})
    assert answer.status_code == 200, answer.text
    return answer.json()["predictions"]


def label(client, ids, labels, model=MODEL):
    items = [{"prediction_id": i, "label": y} for i, y in zip(ids, labels, strict=True)]
    return client.post("/feedback", json={"model": model, "items": items})


def logged_texts(client, settings) -> dict[str, str]:
    client.app.state.serving.prediction_log.flush()
    with session_factory_of(settings)() as session:
        rows = session.execute(select(LoggedSample.prediction_id, LoggedSample.inputs)).all()
    return {prediction_id: unpack_text(inputs) for prediction_id, inputs in rows}


def test_text_predictions_are_logged_with_their_texts_and_take_labels(client, settings, text_served):
    texts = ["Goal by the striker in the cup final", "Le marché a baissé: shares fell 3% ⚠", "team 🏆 win"]
    assert [p["prediction_id"] for p in predict(client, texts)] == [None] * 3  # no policy yet
    set_policy(client, log_rate=1.0)
    predictions = predict(client, texts)
    ids = [p["prediction_id"] for p in predictions]
    assert all(ids) and len(set(ids)) == 3
    stored = logged_texts(client, settings)
    assert [stored[i] for i in ids] == texts  # UTF-8, as sent

    truth = ["sport", "business", "sport"]
    kept = label(client, ids, truth)
    assert kept.status_code == 200 and kept.json()["accepted"] == 3, kept.text
    assert client.get(f"/models/{MODEL}/triggers").json()["buffered_labels"] == 3
    live = {v["model_version"]: v for v in client.get(f"/models/{MODEL}/live-accuracy").json()["versions"]}
    right = sum(p["label"] == y for p, y in zip(predictions, truth, strict=True))
    assert live[1]["n"] == 3 and live[1]["accuracy"] == pytest.approx(right / 3)


def test_labelled_texts_and_wrong_modalities_are_judged_per_item(client, settings, text_served):
    fresh = client.post(
        "/feedback",
        json={
            "model": MODEL,
            "inputs": ["shares of the bank rose", "the keeper saved it"],
            "labels": ["business", "sport"],
        },
    )
    assert fresh.status_code == 200 and fresh.json()["accepted"] == 2, fresh.text
    assert sorted(logged_texts(client, settings).values()) == ["shares of the bank rose", "the keeper saved it"]

    mixed = client.post(
        "/feedback",
        json={
            "model": MODEL,
            "inputs": ["a goal", [1.0, 2.0], "x" * (settings.max_text_chars + 1), "   "],
            "labels": ["sport", "sport", "sport", "sport"],
        },
    )
    assert mixed.status_code == 207, mixed.text
    results = mixed.json()["results"]
    assert [r["status"] for r in results] == [200, 422, 413, 422]
    assert "takes text" in results[1]["detail"] and "numbers" in results[1]["detail"]
    assert "RETAIN_MAX_TEXT_CHARS" in results[2]["detail"]
    assert client.get(f"/models/{MODEL}/triggers").json()["buffered_labels"] == 3  # the refused ones are not kept


def test_a_text_sent_to_a_model_of_numbers_is_refused_naming_both(client, tmp_path, teach, run_worker_once):
    x, y = blobs(60, seed=1)
    np.savez(tmp_path / "blobs.npz", x=x, y=y)
    assert teach(tmp_path / "blobs.npz", epochs="1").status_code == 202
    assert run_worker_once() == 1
    answer = client.post("/feedback", json={"model": "m", "inputs": [x[0].tolist(), "a goal"], "labels": [0, 1]})
    assert answer.status_code == 207, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [200, 422]
    assert "takes numeric vectors" in results[1]["detail"] and "is text" in results[1]["detail"]
    file = client.post(
        "/feedback/file",
        data={"model": "m"},
        files={"file": ("t.jsonl", b'{"text": "a goal", "label": 0}\n{"text": "a bank", "label": 1}\n')},
    )
    assert file.status_code == 422 and "takes numeric vectors" in file.text and "holds text" in file.text


def test_labelled_texts_as_a_file(client, settings, text_served):
    set_policy(client, log_rate=1.0)
    ids = [p["prediction_id"] for p in predict(client, ["the cup", "the bank"])]
    by_id = "prediction_id,label\n" + f"{ids[0]},sport\n{ids[1]},business\n"
    answer = client.post("/feedback/file", data={"model": MODEL}, files={"file": ("labels.csv", by_id.encode())})
    assert answer.status_code == 200 and answer.json()["accepted"] == 2, answer.text
    as_csv = 'text,label\n"goal, then another goal",sport\nprofit at the firm,business\n'
    answer = client.post("/feedback/file", data={"model": MODEL}, files={"file": ("more.csv", as_csv.encode())})
    assert answer.status_code == 200 and answer.json()["accepted"] == 2, answer.text
    rows = [{"text": "Stocks café ☕", "label": "business"}, {"text": "the striker", "label": "sport"}]
    as_jsonl = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()
    answer = client.post("/feedback/file", data={"model": MODEL}, files={"file": ("more.jsonl", as_jsonl)})
    assert answer.status_code == 200 and answer.json()["accepted"] == 2, answer.text
    assert client.get(f"/models/{MODEL}/triggers").json()["buffered_labels"] == 6
    assert {"goal, then another goal", "Stocks café ☕"} <= set(logged_texts(client, settings).values())
    numbers = client.post("/feedback/file", data={"model": MODEL}, files={"file": ("x.csv", b"f0,f1,label\n1,2,0\n")})
    assert numbers.status_code == 422 and "takes text" in numbers.text and "numeric vectors" in numbers.text


def test_the_text_log_is_bounded(client, settings, text_served):
    set_policy(client, log_rate=1.0, log_max_samples=5)
    texts, _ = topic_task(["sport", "business"], 6, seed=3)
    ids = [p["prediction_id"] for p in predict(client, texts)]
    stored = logged_texts(client, settings)
    assert list(stored) == ids[-5:]  # the oldest went first
    too_long = client.post("/predict", json={"model": MODEL, "inputs": ["y" * (settings.max_text_chars + 1)]})
    assert too_long.status_code == 413  # nothing past RETAIN_MAX_TEXT_CHARS reaches the log
    with session_factory_of(settings)() as session:
        assert session.scalar(select(func.count(LoggedSample.id))) == 5


def test_drift_is_refused_for_a_text_model(client, text_served):
    answer = client.put(
        f"/models/{MODEL}/feedback-policy", json={"triggers": [{"kind": "every_n_labels", "n": 5}, {"kind": "drift"}]}
    )
    assert answer.status_code == 422 and "drift" in answer.text and "text" in answer.text
    assert client.get(f"/models/{MODEL}/feedback-policy").status_code == 404  # nothing stored


def test_an_accuracy_trigger_makes_a_text_task(client, settings, text_served):
    set_policy(
        client,
        log_rate=1.0,
        min_labels=20,
        accuracy_window=30,
        triggers=[{"kind": "accuracy_below", "threshold": 0.99, "min_samples": 30}],
    )
    texts, _ = topic_task(["sport", "business"], 15, seed=4)
    predictions = predict(client, texts)
    wrong = ["business" if p["label"] == "sport" else "sport" for p in predictions]  # every answer was wrong
    evaluator = evaluator_of(settings)
    assert label(client, [p["prediction_id"] for p in predictions[:29]], wrong[:29]).json()["accepted"] == 29
    assert not fired(evaluator.run(), "accuracy_below")  # one short of min_samples
    assert label(client, [predictions[29]["prediction_id"]], wrong[29:]).json()["accepted"] == 1
    verdict = fired(evaluator.run(), "accuracy_below")[0]
    assert "live accuracy 0.000 over 30" in verdict.reason and "queued task" in verdict.reason
    task_id = client.get(f"/models/{MODEL}/triggers").json()["decisions"][-1]["task_id"]
    task = client.get(f"/tasks/{task_id}").json()
    assert task["name"].startswith("feedback-") and task["dataset"]["input_shape"] == ["text"]
    dataset = task["dataset"]
    assert dataset["n_train"] + dataset["n_validation"] + dataset["n_test"] == 30


def test_every_n_labels_makes_a_text_task_whose_update_lands(
    client, settings, text_served, worker_thread, wait_for_job
):
    set_policy(
        client,
        log_rate=1.0,
        min_labels=20,
        triggers=[{"kind": "every_n_labels", "n": 40}],
        update={"epochs": 3},
    )
    texts, truth = topic_task(["sport", "business", "tech"], 12, seed=6)  # tech: a label never seen
    ids = [p["prediction_id"] for p in predict(client, texts)]
    assert label(client, ids, truth).json()["accepted"] == 36
    more, more_truth = topic_task(["sport", "business"], 2, seed=7)
    assert client.post("/feedback", json={"model": MODEL, "inputs": more, "labels": more_truth}).json()["accepted"] == 4
    with worker_thread(settings.model_copy(update={"feedback_check_interval": 0.05})):
        decisions = wait_until(
            lambda: [d for d in client.get(f"/models/{MODEL}/triggers").json()["decisions"] if d["fired"]],
            what="the trigger",
        )
        assert "40 labels buffered" in decisions[0]["reason"]
        task = client.get(f"/tasks/{decisions[0]['task_id']}").json()
        assert task["dataset"]["input_shape"] == ["text"]
        job = wait_for_job(task["job_id"], timeout=300)
        assert job["status"] == "succeeded", job
    assert client.get(f"/models/{MODEL}").json()["serving_version"] == 2
    assert client.get(f"/models/{MODEL}/triggers").json()["buffered_labels"] == 0
    version = client.get(f"/models/{MODEL}/versions").json()[-1]
    assert version["number"] == 2 and version["new_labels"] == ["tech"]
    assert all(p["prediction_id"] for p in predict(client, ["the robot app on my phone"]))  # still logged
