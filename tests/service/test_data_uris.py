"""Data by reference: POST /tasks with ``uri`` (a file under RETAIN_DATA_ROOTS, or s3:// on a real
S3-compatible server, moto, in its own process on loopback). The API checks only what is cheap; the
worker reads and validates, and a bad file is a failed job with the reason and nothing stored."""

import hashlib

import numpy as np
import pytest
from data_files import FORM, digits, flat, image_folder_zip, parquet_bytes, stored, zip_bytes

BUCKET = "retain-data"  # the bucket the `s3` fixture (tests/conftest.py) creates


def table(classes=(0, 1), per_class=40, offset=0) -> bytes:
    samples = digits(classes, per_class=per_class, offset=offset)
    x = flat(samples).reshape(len(samples), -1)
    return parquet_bytes({**{f"px{j}": x[:, j] for j in range(64)}, "label": [label for label, _ in samples]})


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    return root


@pytest.fixture
def ref_settings(settings, data_root):
    return settings.model_copy(update={"data_roots": [str(data_root), f"s3://{BUCKET}/tasks"]})


@pytest.fixture
def ref_client(ref_settings, api_client):
    with api_client(ref_settings) as test_client:
        yield test_client


def refer(client, uri: str, model="ref", **fields):
    return client.post("/tasks", data={"model": model, "uri": uri, **FORM, **fields})


def job_of(client, answer) -> dict:
    return client.get(f"/jobs/{answer.json()['job_id']}").json()


def test_a_file_under_a_data_root_is_read_by_the_worker_and_recorded(
    ref_client, ref_settings, data_root, run_worker_once
):
    path = data_root / "digits.parquet"
    path.write_bytes(table())
    answer = refer(ref_client, str(path))
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["dataset"]["format"] == "reference" and body["dataset"]["n_train"] == 0
    assert body["hyperparameters"]["data_uri"] == str(path)
    assert ref_client.get("/models/ref").json()["input_shape"] == []  # known once the worker has read the data

    assert run_worker_once(ref_settings) == 1
    assert job_of(ref_client, answer)["status"] == "succeeded", job_of(ref_client, answer)
    dataset = ref_client.get(f"/tasks/{body['id']}").json()["dataset"]
    assert dataset["format"] == "parquet" and dataset["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert dataset["input_shape"] == [64] and dataset["n_train"] + dataset["n_validation"] + dataset["n_test"] == 80
    assert ref_client.get("/models/ref").json()["input_shape"] == [64]

    unseen = digits((0, 1), per_class=10, offset=60)
    predictions = ref_client.post("/predict", json={"model": "ref", "inputs": flat(unseen).reshape(20, -1).tolist()})
    assert (
        sum(p["label"] == label for p, (label, _) in zip(predictions.json()["predictions"], unseen, strict=True)) >= 16
    )

    # the next task by upload is checked against the shape the reference gave the model
    wrong = ref_client.post(
        "/tasks",
        data={"model": "ref", **FORM},
        files={"file": ("t.zip", zip_bytes(image_folder_zip(digits((2, 3), 5))))},
    )
    assert wrong.status_code == 422 and "[64]" in wrong.json()["detail"], wrong.text


def test_refused_at_submit_with_the_reason_and_nothing_stored(
    ref_client, client, database_url, settings, data_root, tmp_path
):
    outside = tmp_path / "secret.parquet"
    outside.write_bytes(table())
    (data_root / "link.parquet").symlink_to(outside)
    (data_root / "folder").mkdir()
    (data_root / "big.parquet").write_bytes(b"PAR1" + b"\x00" * settings.max_upload_bytes + b"PAR1")
    (data_root / "ok.parquet").write_bytes(table())
    cases = {
        str(outside): (422, "outside the allowed data roots"),
        f"{data_root}/../secret.parquet": (422, "outside the allowed data roots"),
        str(data_root / "link.parquet"): (422, "outside the allowed data roots"),  # a symlink out of the root
        "data/ok.parquet": (422, "relative"),
        str(data_root / "missing.parquet"): (422, "does not exist"),
        str(data_root / "folder"): (422, "is a folder"),
        str(data_root / "big.parquet"): (413, f"limit for data by reference is {settings.max_upload_bytes} bytes"),
        "gs://bucket/x.parquet": (422, "scheme 'gs' is not accepted"),
        "https://example.com/x.parquet": (422, "http(s) data is off"),
        "s3://other-bucket/x.parquet": (422, "not under an allowed data root"),
        f"s3://{BUCKET}/tasks/../../x.parquet": (422, "'..'"),
    }
    before = stored(database_url, settings.artifact_uri)
    for uri, (status, words) in cases.items():
        answer = refer(ref_client, uri)
        assert answer.status_code == status and words in answer.json()["detail"], (uri, answer.text)
    both = ref_client.post(
        "/tasks", data={"model": "ref", "uri": str(data_root / "ok.parquet")}, files={"file": ("t.parquet", table())}
    )
    assert both.status_code == 422 and "not both" in both.json()["detail"]
    neither = ref_client.post("/tasks", data={"model": "ref"})
    assert neither.status_code == 422 and "as a file or as a uri" in neither.json()["detail"]
    off = refer(client, str(data_root / "ok.parquet"))  # the default settings: no data roots
    assert off.status_code == 422 and "RETAIN_DATA_ROOTS" in off.json()["detail"], off.text
    assert stored(database_url, settings.artifact_uri) == before


BAD_FILES = {
    "missing label column": (
        "t.parquet",
        parquet_bytes({"a": np.arange(20.0), "target": np.arange(20) % 2}),
        "no 'label' column",
    ),
    "non-numeric features": (
        "t.parquet",
        parquet_bytes({"a": ["x"] * 20, "label": np.arange(20) % 2}),
        "column 'a' holds string",
    ),
    "corrupt image": (
        "t.zip",
        zip_bytes({**image_folder_zip(digits((0, 1), 5)), "1/bad.png": b"\x89PNG..."}),
        "image '1/bad.png' cannot be read",
    ),
    "dot-dot member": ("t.zip", zip_bytes({**image_folder_zip(digits((0, 1), 5)), "0/../../x.png": b""}), "'..'"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_file_fails_its_job_with_the_reason_and_stores_nothing(
    ref_client, ref_settings, database_url, data_root, case, run_worker_once
):
    name, data, words = BAD_FILES[case]
    (data_root / name).write_bytes(data)
    answer = refer(ref_client, str(data_root / name))
    assert answer.status_code == 202, answer.text  # the cheap checks pass: it exists, under a root, small
    before = stored(database_url, ref_settings.artifact_uri)
    assert run_worker_once(ref_settings) == 1
    job = job_of(ref_client, answer)
    assert job["status"] == "failed" and words in job["error"] and str(data_root / name) in job["error"], job
    counts, artifacts = stored(database_url, ref_settings.artifact_uri)
    assert (counts, artifacts) == before and counts["model_versions"] == 0
    assert ref_client.get(f"/tasks/{answer.json()['id']}").json()["dataset"]["format"] == "reference"


def test_a_model_waiting_for_its_first_reference(ref_client, ref_settings, data_root, run_worker_once):
    (data_root / "bad.parquet").write_bytes(parquet_bytes({"a": ["x"] * 20, "label": np.arange(20) % 2}))
    first = refer(ref_client, str(data_root / "bad.parquet"))
    assert first.status_code == 202, first.text
    upload = {"data": {"model": "ref", **FORM}, "files": {"file": ("t.parquet", table())}}
    waiting = ref_client.post("/tasks", **upload)
    assert waiting.status_code == 409 and f"job {first.json()['job_id']}" in waiting.json()["detail"], waiting.text

    run_worker_once(ref_settings)
    assert job_of(ref_client, first)["status"] == "failed"
    retried = ref_client.post("/tasks", **upload)  # the reference failed: this upload is the model's first task
    assert retried.status_code == 202, retried.text
    assert ref_client.get("/models/ref").json()["input_shape"] == [64]
    run_worker_once(ref_settings)
    assert job_of(ref_client, retried)["status"] == "succeeded"


# ---------------------------------------------------------------------------- s3 (moto server)


def test_an_s3_object_is_taught_and_its_sha256_recorded(ref_client, ref_settings, database_url, s3, run_worker_once):
    data = zip_bytes(image_folder_zip(digits((0, 1), per_class=40)))
    s3.pipe(f"{BUCKET}/tasks/digits.zip", data)
    answer = refer(ref_client, f"s3://{BUCKET}/tasks/digits.zip", model="s3m")
    assert answer.status_code == 202, answer.text
    assert run_worker_once(ref_settings) == 1
    assert job_of(ref_client, answer)["status"] == "succeeded", job_of(ref_client, answer)
    dataset = ref_client.get(f"/tasks/{answer.json()['id']}").json()["dataset"]
    assert dataset["format"] == "images" and dataset["sha256"] == hashlib.sha256(data).hexdigest()
    unseen = digits((0, 1), per_class=5, offset=60)
    predicted = ref_client.post("/predict", json={"model": "s3m", "inputs": [im[None].tolist() for _, im in unseen]})
    assert predicted.status_code == 200 and len(predicted.json()["predictions"]) == 10

    before = stored(database_url, ref_settings.artifact_uri)
    missing = refer(ref_client, f"s3://{BUCKET}/tasks/nothing.zip", model="s3m")
    assert missing.status_code == 422 and "does not exist" in missing.json()["detail"], missing.text
    assert stored(database_url, ref_settings.artifact_uri) == before
