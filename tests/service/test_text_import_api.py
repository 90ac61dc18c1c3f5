"""A text model made through the API: POST /models (source hf) takes a Hugging Face sequence
classifier's save_pretrained directory as a .zip, checks it completely before answering (nothing
stored on a refusal), and the model it makes learns a text task with a new label and serves text."""

import io
import json
import shutil
import zipfile

import pytest
from data_files import stored
from test_model_import_api import counts
from test_text_datasets import csv_bytes
from tiny_text_model import topic_task, zipped_directory

FAST = {"epochs": "6", "batch_size": "8", "lr": "0.002", "strategy": "ewc_replay"}


def post_text_model(client, archive: bytes, name: str = "topics", options: dict | None = None, **files):
    return client.post(
        "/models",
        data={"name": name, "source": "hf", "options": json.dumps({"max_length": 32, **(options or {})})},
        files={"file": ("topics.zip", archive, "application/zip"), **files},
    )


def test_a_tiny_bert_imported_as_a_zip_learns_a_csv_task_with_a_new_label_and_predicts_text(
    client, run_worker_once, tiny_text_model
):
    answer = post_text_model(client, zipped_directory(tiny_text_model))
    assert answer.status_code == 202, answer.text
    assert run_worker_once() == 1
    assert client.get(f"/jobs/{answer.json()['job_id']}").json()["status"] == "succeeded"
    model = client.get("/models/topics").json()
    assert model["input_shape"] == ["text"]
    imported = client.post("/predict", json={"model": "topics", "inputs": ["the match ended in a late goal"]})
    assert imported.status_code == 200, imported.text
    assert imported.json()["predictions"][0]["label"] in ("sport", "business")  # id2label's labels

    texts, labels = topic_task(["sport", "business", "tech"], 40)
    task = client.post(
        "/tasks",
        data={"model": "topics", **FAST},
        files={"file": ("topics.csv", csv_bytes(list(zip(texts, labels, strict=True))))},
    )
    assert task.status_code == 202, task.text
    assert run_worker_once() == 1
    job = client.get(f"/jobs/{task.json()['job_id']}").json()
    assert job["status"] == "succeeded", job
    texts, labels = topic_task(["sport", "business", "tech"], 10, seed=5)
    predicted = client.post("/predict", json={"model": "topics", "inputs": texts}).json()["predictions"]
    assert sum(p["label"] == label for p, label in zip(predicted, labels, strict=True)) >= 24
    assert "tech" in {p["label"] for p in predicted}


def edited(directory, tmp_path, config: dict | None = None, extra: dict | None = None, drop=()) -> bytes:
    """The tiny model's directory with config.json values changed, files added or left out, zipped."""
    copy = tmp_path / "edited"
    shutil.copytree(directory, copy)
    if config:
        values = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**values, **config}))
    for name in drop:
        (copy / name).unlink()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(copy.iterdir()):
            archive.write(path, path.name)
        for name, content in (extra or {}).items():
            archive.writestr(name, content)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("case", "status", "says"),
    [
        ("model_type", 422, "trust_remote_code"),
        ("pickle", 415, "pickle"),
        ("shapes", 422, "do not fit"),
        ("no_tokenizer", 422, "tokenizer.json"),
        ("option", 422, "unknown options"),
        ("trainable", 422, "trainable"),
        ("base_data", 422, "not among the head"),
        ("max_length", 422, "positions"),
    ],
)
def test_each_text_refusal_answers_before_anything_is_stored(
    client, database_url, settings, tmp_path, tiny_text_model, case, status, says
):
    before, files_before = counts(database_url), stored(database_url, settings.artifact_uri)
    archive, options, files = zipped_directory(tiny_text_model), {}, {}
    if case == "model_type":
        archive = edited(tiny_text_model, tmp_path, config={"model_type": "remote_code_model"})
    elif case == "pickle":
        archive = edited(tiny_text_model, tmp_path, extra={"pytorch_model.bin": b"\x80\x04K\x01."})
    elif case == "shapes":
        archive = edited(tiny_text_model, tmp_path, config={"intermediate_size": 96})
    elif case == "no_tokenizer":
        archive = edited(tiny_text_model, tmp_path, drop=["tokenizer.json"])
    elif case == "option":
        options = {"input_shape": [3, 8, 8]}
    elif case == "trainable":
        options = {"trainable": "last:0"}
    elif case == "base_data":
        files = {"base_data": ("base.csv", csv_bytes([("a goal", "sport"), ("a new phone", "tech")] * 10))}
    elif case == "max_length":
        options = {"max_length": 4096}
    answer = post_text_model(client, archive, options=options, **files)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["detail"]
    assert counts(database_url) == before and stored(database_url, settings.artifact_uri) == files_before


def test_a_text_model_over_the_parameter_limit_is_refused(api_client, settings, database_url, tiny_text_model):
    small = settings.model_copy(update={"max_model_parameters": 1000})
    with api_client(small) as client:
        answer = post_text_model(client, zipped_directory(tiny_text_model))
    assert answer.status_code == 413, answer.text
    assert "RETAIN_MAX_MODEL_PARAMETERS" in answer.json()["detail"]
    assert counts(database_url)["models"] == 0


def test_base_data_of_a_text_model_is_task_zero_of_the_accuracy_table(client, run_worker_once, tiny_text_model):
    texts, labels = topic_task(["sport", "business"], 20, seed=3)
    base = ("base.csv", csv_bytes(list(zip(texts, labels, strict=True))))
    answer = post_text_model(client, zipped_directory(tiny_text_model), base_data=base)
    assert answer.status_code == 202, answer.text
    assert run_worker_once() == 1
    job = client.get(f"/jobs/{answer.json()['job_id']}").json()
    assert job["status"] == "succeeded", job
    imported = client.get("/models/topics/accuracy").json()["rows"]
    assert [(row["model_version"], [a["task_id"] for a in row["accuracy"]]) for row in imported] == [
        (1, [answer.json()["id"]])
    ]
    assert imported[0]["accuracy"][0]["n_test"] > 0
    texts, labels = topic_task(["sport", "business", "tech"], 20)
    task = client.post(
        "/tasks",
        data={"model": "topics", **FAST},
        files={"file": ("tech.csv", csv_bytes(list(zip(texts, labels, strict=True))))},
    )
    assert task.status_code == 202, task.text
    assert run_worker_once() == 1
    assert client.get(f"/jobs/{task.json()['job_id']}").json()["status"] == "succeeded"
    rows = client.get("/models/topics/accuracy").json()["rows"]
    assert {a["task_id"] for a in rows[-1]["accuracy"]} == {answer.json()["id"], task.json()["id"]}  # task 0 kept


def test_a_text_model_by_uri_is_checked_and_imported(api_client, settings, run_worker_once, tmp_path, tiny_text_model):
    root = tmp_path / "data"
    root.mkdir()
    (root / "topics.zip").write_bytes(zipped_directory(tiny_text_model))
    ref_settings = settings.model_copy(update={"data_roots": [str(root)]})
    with api_client(ref_settings) as client:
        answer = client.post(
            "/models", data={"name": "topics", "source": "hf", "uri": str(root / "topics.zip"), "options": "{}"}
        )
        assert answer.status_code == 202, answer.text
        assert run_worker_once(ref_settings) == 1
        assert client.get(f"/jobs/{answer.json()['job_id']}").json()["status"] == "succeeded"
        predicted = client.post("/predict", json={"model": "topics", "inputs": ["a late goal"]})
        assert predicted.status_code == 200 and predicted.json()["predictions"][0]["label"] in ("sport", "business")


def test_the_worker_reads_a_text_models_weights_once(client, run_worker_once, tiny_text_model, monkeypatch):
    """The API's check reads the weights (transformers' loader compares the keys); the worker's check
    reads them once more and hands the classifier on to the learner instead of reading them again."""
    from test_model_import_api import spy_on
    from transformers import AutoModelForSequenceClassification

    loaded = spy_on(monkeypatch, AutoModelForSequenceClassification, "from_pretrained")
    answer = post_text_model(client, zipped_directory(tiny_text_model))
    assert answer.status_code == 202, answer.text
    assert len(loaded) == 1
    assert run_worker_once() == 1
    assert client.get(f"/jobs/{answer.json()['job_id']}").json()["status"] == "succeeded"
    assert len(loaded) == 2
