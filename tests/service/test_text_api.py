"""Text through the service: a Hugging Face text classifier in the registry learns a text task sent as
CSV, JSON Lines or Parquet (new labels grow its head), and serves text through POST /predict and the
inference protocol's BYTES tensors (JSON and binary, as tritonclient sends them); a batch answers
as its texts alone do."""

import json

import numpy as np
import pytest
from data_files import stored
from test_text_datasets import jsonl_bytes
from tiny_text_model import topic_task, zipped_directory

FAST = {"epochs": "6", "batch_size": "8", "lr": "0.002", "strategy": "ewc_replay"}  # Adam: text models default


def import_text_model(client, run_worker, name: str, directory, options: dict | None = None) -> dict:
    """POST /models (source hf, a .zip of the save_pretrained directory), then the import job: version 1 serving."""
    answer = client.post(
        "/models",
        data={"name": name, "source": "hf", "options": json.dumps({"max_length": 32, **(options or {})})},
        files={"file": ("topics.zip", zipped_directory(directory), "application/zip")},
    )
    assert answer.status_code == 202, answer.text
    assert run_worker() == 1
    job = client.get(f"/jobs/{answer.json()['job_id']}").json()
    assert job["status"] == "succeeded", job
    return answer.json()


@pytest.fixture
def imported_text_model(client, run_worker_once, tiny_text_model) -> str:
    """Model "topics" imported through POST /models: version 1, labels sport and business, serving."""
    import_text_model(client, run_worker_once, "topics", tiny_text_model)
    return "topics"


@pytest.fixture
def text_model(client, imported_text_model, run_worker_once) -> str:
    """Model "topics" imported, then taught a task bringing the new label tech (version 2)."""
    texts, labels = topic_task(["sport", "business", "tech"], 40)
    rows = list(zip(texts, labels, strict=True))
    answer = client.post("/tasks", data={"model": "topics", **FAST}, files={"file": ("t.jsonl", jsonl_bytes(rows))})
    assert answer.status_code == 202, answer.text
    assert answer.json()["dataset"]["input_shape"] == ["text"]
    run_worker_once()
    job = client.get(f"/jobs/{answer.json()['job_id']}").json()
    assert job["status"] == "succeeded", job
    return "topics"


def test_a_text_task_is_learnt_and_served_through_predict(client, text_model):
    texts, labels = topic_task(["sport", "business", "tech"], 10, seed=5)
    answer = client.post("/predict", json={"model": text_model, "inputs": texts, "top_k": 2})
    assert answer.status_code == 200, answer.text
    predicted = [p["label"] for p in answer.json()["predictions"]]
    assert sum(p == label for p, label in zip(predicted, labels, strict=True)) >= 24
    assert answer.json()["model_version"] == 2
    version = client.get(f"/models/{text_model}/versions").json()[-1]
    assert version["number"] == 2 and version["new_labels"] == ["tech"]  # the head grew for it


def test_text_errors_name_what_is_wrong(client, imported_text_model, settings, database_url):
    text_model = imported_text_model
    before = stored(database_url, settings.artifact_uri)
    numbers = client.post("/predict", json={"model": text_model, "inputs": [[1.0, 2.0]]})
    assert numbers.status_code == 422 and "takes text" in numbers.text
    long = client.post("/predict", json={"model": text_model, "inputs": ["x" * (settings.max_text_chars + 1)]})
    assert long.status_code == 413 and "RETAIN_MAX_TEXT_CHARS" in long.text
    image = np.zeros((1, 8, 8), dtype=np.uint8)
    task = client.post(
        "/tasks", data={"model": text_model}, files={"file": ("x.npz", npz_bytes(np.stack([image] * 40), [0, 1] * 20))}
    )
    assert task.status_code == 422 and "takes text" in task.text and "images" in task.text
    assert stored(database_url, settings.artifact_uri) == before


def npz_bytes(x, y) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=np.asarray(y))
    return buffer.getvalue()


def test_the_imported_version_serves_its_own_labels_and_metadata_says_bytes(client, imported_text_model):
    text_model = imported_text_model
    answer = client.post("/predict", json={"model": text_model, "inputs": ["a goal"]}).json()
    assert answer["model_version"] == 1 and answer["predictions"][0]["label"] in ("sport", "business")
    metadata = client.get(f"/v2/models/{text_model}").json()
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "BYTES", "shape": [-1]}]


def test_tritonclient_sends_bytes_inputs_as_json_and_binary(client, text_model, api_replica):
    import tritonclient.http as triton

    texts = ["goal by the striker in the cup", "shares of the bank fell", "the software on my phone"]
    served = client.post("/predict", json={"model": text_model, "inputs": texts, "top_k": 2}).json()["predictions"]
    oip = triton.InferenceServerClient(api_replica)
    key = {"Authorization": f"Bearer {client.api_key}"}
    assert oip.get_model_metadata(text_model, headers=dict(key))["inputs"][0]["datatype"] == "BYTES"
    for binary in (False, True):
        tensor = triton.InferInput("input-0", [len(texts)], "BYTES")
        tensor.set_data_from_numpy(np.asarray([t.encode() for t in texts], dtype=np.object_), binary_data=binary)
        outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in ("label", "probability")]
        answer = oip.infer(text_model, [tensor], outputs=outputs, headers=dict(key))
        assert [label.decode() if isinstance(label, bytes) else label for label in answer.as_numpy("label")] == [
            p["label"] for p in served
        ]
        assert np.allclose(answer.as_numpy("probability"), [p["probability"] for p in served], atol=1e-5)


def test_concurrent_texts_batched_answer_as_alone(client, text_model, settings):
    texts = ["goal", "the bank said shares of the firm fell after the deal on the market today", "phone app"]
    alone = [client.post("/predict", json={"model": text_model, "inputs": [t], "top_k": 3}).json() for t in texts]
    together = client.post("/predict", json={"model": text_model, "inputs": texts, "top_k": 3}).json()
    for one, mine in zip(alone, together["predictions"], strict=True):
        assert one["predictions"][0]["label"] == mine["label"]
        assert one["predictions"][0]["probability"] == pytest.approx(mine["probability"], abs=1e-5)


def test_the_dynamic_batcher_pads_texts_within_a_batch_and_answers_as_alone(tiny_text_model):
    from app.learning import ContinualLearner
    from app.predict.batching import Pending, run_batch

    learner = ContinualLearner.from_text_directory(tiny_text_model, {"max_length": 32})
    requests = [["goal"], ["the bank said shares of the firm fell after the deal today", "cup"], ["phone"]]
    batched = run_batch(learner, "topics", None, [Pending(texts, 2, None, 0.0) for texts in requests])
    for texts, answers in zip(requests, batched, strict=True):
        alone = run_batch(learner, "topics", None, [Pending(texts, 2, None, 0.0)])[0]
        assert [a.label for a in answers] == [a.label for a in alone]
        assert [a.probability for a in answers] == pytest.approx([a.probability for a in alone], abs=1e-5)


def test_a_text_file_by_reference_is_read_by_the_worker_like_an_upload(
    settings, session_factory, tiny_text_model, api_client, tmp_path, run_worker_once
):
    root = tmp_path / "data"
    root.mkdir()
    path = root / "topics.jsonl"
    path.write_bytes(jsonl_bytes(list(zip(*topic_task(["sport", "business"], 20), strict=True))))
    ref_settings = settings.model_copy(update={"data_roots": [str(root)]})
    with api_client(ref_settings) as client:
        import_text_model(client, lambda: run_worker_once(ref_settings), "topics", tiny_text_model)
        answer = client.post("/tasks", data={"model": "topics", "uri": str(path), **FAST})
        assert answer.status_code == 202, answer.text
        assert run_worker_once(ref_settings) == 1
        job = client.get(f"/jobs/{answer.json()['job_id']}").json()
        assert job["status"] == "succeeded", job
        dataset = client.get(f"/tasks/{answer.json()['id']}").json()["dataset"]
        assert dataset["format"] == "jsonl" and dataset["input_shape"] == ["text"]
