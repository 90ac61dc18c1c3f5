"""Predict (top_k, version), v2 infer, and serving-version rollback served without restart."""

import numpy as np


def test_predict_infer_and_rollback(client, settings, pmnist_files, teach, run_worker_once):
    for path in pmnist_files:
        assert teach(path).status_code == 202
        run_worker_once()
    sample = np.load(pmnist_files[0])["x_test"][:3]
    answer = client.post("/predict", json={"model": "m", "inputs": sample.tolist(), "top_k": 3})
    assert answer.status_code == 200, answer.text
    serving = client.get("/models/m").json()["serving_version"]
    assert answer.json()["model_version"] == serving
    assert len(answer.json()["predictions"]) == 3 and len(answer.json()["predictions"][0]["top_k"]) == 3

    pinned = client.post("/predict", json={"model": "m", "inputs": sample.tolist(), "version": 1}).json()
    assert pinned["model_version"] == 1

    infer = client.post(
        "/v2/models/m/infer",
        json={
            "inputs": [
                {
                    "name": "input-0",
                    "shape": list(sample.shape),
                    "datatype": "UINT8",
                    "data": sample.reshape(-1).tolist(),
                }
            ]
        },
    )
    assert infer.status_code == 200, infer.text
    assert infer.json()["outputs"][0]["shape"] == [3]
    assert client.get("/v2/models/m").json()["name"] == "m"

    rolled = client.put("/models/m/serving-version", json={"version": 1, "reason": "test"})
    assert rolled.status_code == 200 and rolled.json()["serving_version"] == 1
    assert client.post("/predict", json={"model": "m", "inputs": sample.tolist()}).json()["model_version"] == 1
    assert client.put("/models/m/serving-version", json={"version": 9}).status_code == 404

    wrong = client.post("/predict", json={"model": "m", "inputs": [[1.0, 2.0]]})
    assert wrong.status_code == 422 and "shape" in wrong.json()["detail"]
