"""CCLL through the API: a cnn model of strategy ccll learns two split-MNIST tasks (two digits each);
prediction needs the task, each task's growth is reported, and old tasks do not change at all."""

import numpy as np


def test_ccll_tasks_predict_per_task_and_report_growth(client, settings, digit_pair_files, teach, run_worker_once):
    ids = []
    for path in digit_pair_files:
        answer = teach(
            path,
            model="cal",
            strategy="ccll",
            architecture="cnn",
            architecture_options='{"alpha": 2, "beta": 1}',
            epochs="1",
        )
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
        assert run_worker_once() == 1
        assert client.get(f"/tasks/{ids[-1]}").json()["status"] == "succeeded"

    model = client.get("/models/cal").json()
    assert (model["architecture"], model["family"], model["options"]) == ("cnn", "ccll", {"alpha": 2, "beta": 1})
    counts = model["parameter_counts"]
    assert set(counts["per_task"]) == {str(i) for i in ids}
    assert counts["base"] > 0 and counts["total"] == counts["base"] + sum(counts["per_task"].values())
    for key, added in counts["per_task"].items():
        assert 0 < added < counts["base"]
        assert counts["per_task_percent_of_base"][key] == round(100.0 * added / counts["base"], 3)

    # the frozen base and per-task modules: task 0's test accuracy is identical after task 1
    history = client.get(f"/tasks/{ids[0]}/accuracy").json()["history"]
    assert [entry["after_task_id"] for entry in history] == ids
    assert history[0]["accuracy"] == history[1]["accuracy"] and history[0]["loss"] == history[1]["loss"]

    x = np.load(digit_pair_files[1])["x"][:4].tolist()
    refused = client.post("/predict", json={"model": "cal", "inputs": x})
    assert refused.status_code == 422
    assert "task_id" in refused.json()["detail"] and str(ids[0]) in refused.json()["detail"]
    for task_id, digits in zip(ids, ((0, 1), (2, 3)), strict=True):
        answer = client.post("/predict", json={"model": "cal", "inputs": x, "task_id": task_id, "top_k": 2})
        assert answer.status_code == 200, answer.text
        for prediction in answer.json()["predictions"]:
            assert prediction["label"] in digits  # only that task's classifier answers
            assert {label for label, _ in prediction["top_k"]} == set(digits)
    unknown = client.post("/predict", json={"model": "cal", "inputs": x, "task_id": 999})
    assert unknown.status_code == 422 and "not learnt" in unknown.json()["detail"]

    infer = client.post(
        "/v2/models/cal/infer",
        json={
            "inputs": [
                {
                    "name": "input-0",
                    "shape": [4, 1, 28, 28],
                    "datatype": "UINT8",
                    "data": np.asarray(x).reshape(-1).tolist(),
                }
            ],
            "parameters": {"task_id": ids[1]},
        },
    )
    assert infer.status_code == 200 and set(infer.json()["outputs"][0]["data"]) <= {2, 3}


def test_ccll_model_refuses_mixed_strategies_and_flat_inputs(client, digit_pair_files, tmp_path, teach):
    flat = tmp_path / "flat.npz"
    np.savez(flat, x=np.random.default_rng(0).random((40, 6)), y=np.arange(40) % 2)
    answer = teach(flat, model="cal", strategy="ccll", architecture="cnn")
    assert answer.status_code == 422 and "image" in answer.json()["detail"]
    answer = teach(digit_pair_files[0], model="cal", strategy="ccll", architecture="mlp")
    assert answer.status_code == 422 and "cnn or resnet18" in answer.json()["detail"]

    assert teach(digit_pair_files[0], model="cal", strategy="ccll", architecture="cnn").status_code == 202
    mixed = teach(digit_pair_files[1], model="cal", strategy="ewc")
    assert mixed.status_code == 422 and "ccll" in mixed.json()["detail"]
