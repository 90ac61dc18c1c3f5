"""Existing features on an imported model: the Open Inference Protocol (metadata and inference), a
two-process (``nproc``) update, and artifacts on S3. The model is torchvision's mobilenet_v3_small
built here (no download) at 3x32x32, exported as safetensors and imported through POST /models."""

from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
import torch
import tritonclient.http as triton
from safetensors.torch import save

SHAPE = (3, 32, 32)
LABELS = ["bolt", "nut", "washer"]
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.fixture
def settings(settings):
    """The suite's settings with room for the weights (6 MB; the suite's uploads stop at 5 MB)."""
    return settings.model_copy(update={"max_upload_bytes": 20_000_000})


@pytest.fixture(scope="module")
def mobilenet():
    """A mobilenet_v3_small with a 3-label head and random weights, in eval mode (BatchNorm statistics
    as stored: an import keeps them frozen)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.mobilenet_v3_small(num_classes=len(LABELS)).eval()


def reference(model, x: np.ndarray) -> torch.Tensor:
    """What the model answers where it came from: pixels scaled to [0, 1], then mean/std."""
    inputs = (torch.tensor(x).float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    with torch.no_grad():
        return model(inputs).softmax(-1)


def npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def images(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *SHAPE), dtype=np.uint8)


def import_form(name: str = "parts", **options) -> dict:
    values = {"labels": LABELS, "input_shape": list(SHAPE), "mean": MEAN, "std": STD, **options}
    return {"name": name, "source": "torchvision:mobilenet_v3_small", "options": json.dumps(values)}


def test_oip_metadata_shows_the_real_input_and_inference_answers_as_predict_and_the_source(
    client, mobilenet, api_replica, run_worker_once, wait_for_job
):
    answer = client.post("/models", data=import_form(), files={"file": ("m.safetensors", save(mobilenet.state_dict()))})
    assert answer.status_code == 202, answer.text
    run_worker_once()
    assert wait_for_job(answer.json()["job_id"])["status"] == "succeeded"

    auth = {"Authorization": f"Bearer {client.api_key}"}
    oip = triton.InferenceServerClient(api_replica)
    metadata = oip.get_model_metadata("parts", headers=dict(auth))
    # pixel values, as the import's preprocessing takes them (it scales by 1/255, then mean/std)
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "UINT8", "shape": [-1, *SHAPE]}], metadata
    assert {o["name"]: o["datatype"] for o in metadata["outputs"]}["label"] == "BYTES"

    x = images(1, 6)
    predicted = client.post("/predict", json={"model": "parts", "inputs": x.tolist(), "top_k": 3}).json()
    tensor = triton.InferInput("input-0", list(x.shape), metadata["inputs"][0]["datatype"])
    tensor.set_data_from_numpy(x, binary_data=True)
    answer = oip.infer(
        "parts",
        [tensor],
        headers=dict(auth),
        outputs=[triton.InferRequestedOutput(n, binary_data=True) for n in ("label", "probability", "top_k_labels")],
        parameters={"top_k": 3},
    )
    labels = [value.decode() for value in answer.as_numpy("label")]
    assert labels == [p["label"] for p in predicted["predictions"]]
    np.testing.assert_allclose(
        answer.as_numpy("probability"), [p["probability"] for p in predicted["predictions"]], atol=1e-6
    )
    top = [[value.decode() for value in row] for row in answer.as_numpy("top_k_labels")]
    assert top == [[label for label, _ in p["top_k"]] for p in predicted["predictions"]]
    expected = reference(mobilenet, x)
    assert labels == [LABELS[i] for i in expected.argmax(-1).tolist()]  # version 1 answers as the weights did
    np.testing.assert_allclose(answer.as_numpy("probability"), expected.max(-1).values, atol=1e-5)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # ranks do not touch the database
def test_a_two_process_update_of_an_imported_torchvision_model(
    settings, api_client, mobilenet, run_worker_once, wait_for_job
):
    """Imported with base data (task 0), then taught a new label on two processes (``nproc=2``): one
    version, both tasks in its accuracy table, the grown head serving."""
    two = settings.model_copy(update={"max_nproc": 2})
    base_x = images(2, 60)
    base = npz(x=base_x, y=np.array(LABELS)[reference(mobilenet, base_x).argmax(-1).numpy()])
    with api_client(two) as client:
        answer = client.post(
            "/models",
            data=import_form(trainable="last:2"),
            files={"file": ("m.safetensors", save(mobilenet.state_dict())), "base_data": ("base.npz", base)},
        )
        assert answer.status_code == 202, answer.text
        assert run_worker_once(two) == 1
        assert wait_for_job(answer.json()["job_id"])["status"] == "succeeded"

        new_x = images(3, 80)
        new_y = np.array(["bolt", "spring"] * 40)
        form = {"model": "parts", "nproc": "2", "epochs": "1", "ewc_lambda": "10", "max_forgetting": "1"}
        taught = client.post("/tasks", data=form, files={"file": ("springs.npz", npz(x=new_x, y=new_y))})
        assert taught.status_code == 202, taught.text
        assert run_worker_once(two) == 1
        job = client.get(f"/jobs/{taught.json()['job_id']}").json()
        assert job["status"] == "succeeded" and job["model_version"] == 2, job
        rows = client.get("/models/parts/accuracy").json()["rows"]
        assert [len(row["accuracy"]) for row in rows] == [1, 2]  # task 0, then task 0 and the new one
        top = client.post("/predict", json={"model": "parts", "inputs": new_x[:2].tolist(), "top_k": 4}).json()
        assert top["model_version"] == 2
        assert {label for p in top["predictions"] for label, _ in p["top_k"]} == {*LABELS, "spring"}


def test_an_import_on_s3_stores_its_artifacts_there_and_serves(
    s3, settings, api_client, mobilenet, run_worker_once, wait_for_job
):
    """Artifacts on S3 (moto's server) and the weights read from an s3:// uri: version 1 serves as the
    weights did, and what the import stored lies in the bucket at its content address."""
    bucket = "retain-data"  # the `s3` fixture's bucket
    root = f"s3://{bucket}/imports-{os.getpid()}-{time.monotonic_ns()}"
    on_s3 = settings.model_copy(update={"artifact_uri": root, "data_roots": [f"s3://{bucket}/weights"]})
    s3.pipe(f"{bucket}/weights/parts.safetensors", save(mobilenet.state_dict()))
    base_x = images(4, 40)
    base = npz(x=base_x, y=np.array(LABELS)[reference(mobilenet, base_x).argmax(-1).numpy()])
    with api_client(on_s3) as client:
        answer = client.post(
            "/models",
            data={**import_form(), "uri": f"s3://{bucket}/weights/parts.safetensors"},
            files={"base_data": ("base.npz", base)},
        )
        assert answer.status_code == 202, answer.text
        assert run_worker_once(on_s3) == 1
        assert wait_for_job(answer.json()["job_id"])["status"] == "succeeded"
        x = images(5, 5)
        served = client.post("/predict", json={"model": "parts", "inputs": x.tolist()}).json()
        (version,) = client.get("/models/parts/versions").json()
    assert [p["label"] for p in served["predictions"]] == [LABELS[i] for i in reference(mobilenet, x).argmax(-1)]
    stored = {path.rsplit("/", 1)[1].split(".")[0] for path in s3.find(root)}
    assert version["weights_sha256"] in stored and len(stored) >= 4  # weights sent, base data, version, Fisher


def test_rollback_delete_and_collection_of_an_imported_model(
    client, settings, api_client, mobilenet, run_worker_once, wait_for_job
):
    """Taught a task (version 2), rolled back to version 1 (which answers as the source model again),
    version 2 deleted, then the model: garbage collection then removes everything it stored, the
    weights sent to POST /models included."""
    answer = client.post("/models", data=import_form(), files={"file": ("m.safetensors", save(mobilenet.state_dict()))})
    assert answer.status_code == 202, answer.text
    run_worker_once()
    assert wait_for_job(answer.json()["job_id"])["status"] == "succeeded"
    form = {"model": "parts", "epochs": "1", "ewc_lambda": "10", "max_forgetting": "1"}
    task = npz(x=images(7, 40), y=np.array(LABELS * 14)[:40])
    taught = client.post("/tasks", data=form, files={"file": ("t.npz", task)})
    assert taught.status_code == 202, taught.text
    run_worker_once()
    assert wait_for_job(taught.json()["job_id"])["status"] == "succeeded"

    x = images(8, 6)
    expected = [LABELS[i] for i in reference(mobilenet, x).argmax(-1)]
    assert client.put("/models/parts/serving-version", json={"version": 1}).status_code == 200
    served = client.post("/predict", json={"model": "parts", "inputs": x.tolist()}).json()
    assert served["model_version"] == 1 and [p["label"] for p in served["predictions"]] == expected
    with api_client(settings.model_copy(update={"artifact_gc_grace_seconds": 0.0})) as admin:
        assert admin.delete("/models/parts/versions/2").status_code == 200
        assert client.post("/predict", json={"model": "parts", "inputs": x.tolist()}).json()["model_version"] == 1
        deleted = admin.delete("/models/parts")
        assert deleted.status_code == 200, deleted.text
        collected = admin.post("/artifacts/gc").json()
    assert collected["stored"] == 0, (deleted.json(), collected)  # the delete's own collection took everything
