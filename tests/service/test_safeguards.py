"""Learning that cannot fail silently, through the API and a real worker: raw float features are
standardized (and learnt), a divergent learning rate fails with the reason and stores nothing, a
task of noise labels is rejected as not learnt, and the default strategy (auto) adds new classes
with rehearsal, promoted at every step."""

import io

import numpy as np
import pytest
from data_files import parquet_bytes


@pytest.fixture
def settings(settings):
    """The service's default: an update whose task was not learnt is rejected (the suite's fixture turns it off)."""
    return settings.model_copy(update={"reject_not_learnt": True})


def all_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as a user's raw measurements: 64 float32 columns in 0..255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data * (255 / 16)).astype(np.float32), digits.target.astype(np.int64)


def parquet_of(x: np.ndarray, y: np.ndarray) -> bytes:
    return parquet_bytes({**{f"px{j}": x[:, j] for j in range(x.shape[1])}, "label": y})


def npz_of(x: np.ndarray, y: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    return buffer.getvalue()


def submit(client, data: bytes, name: str, model: str, **fields):
    form = {"model": model, "architecture_options": '{"hidden": [64]}', **fields}
    answer = client.post("/tasks", data=form, files={"file": (name, data)})
    assert answer.status_code == 202, answer.text
    return answer.json()


def test_float_features_in_the_hundreds_are_standardized_and_learnt(client, run_worker_once):
    x, y = all_digits()
    task = submit(client, parquet_of(x, y), "digits.parquet", "raw", epochs="8")
    run_worker_once()
    assert client.get(f"/jobs/{task['job_id']}").json()["status"] == "succeeded"
    assert client.get(f"/tasks/{task['id']}/accuracy").json()["current"] >= 0.9

    # served as trained: the raw values go in, the first task's statistics scale them
    predictions = client.post("/predict", json={"model": "raw", "inputs": x[:200].tolist()}).json()["predictions"]
    assert sum(p["label"] == label for p, label in zip(predictions, y[:200], strict=True)) >= 180


def test_standardize_false_leaves_the_features_as_sent(client, run_worker_once):
    x, y = all_digits()
    options = '{"hidden": [64], "standardize": false}'
    task = submit(client, parquet_of(x, y), "digits.parquet", "unscaled", epochs="8", architecture_options=options)
    run_worker_once()
    job = client.get(f"/jobs/{task['job_id']}").json()
    assert job["status"] in ("rejected", "failed"), job  # chance on raw features: never a quiet success
    assert "not learnt" in job["error"] or "diverged" in job["error"]


def test_a_divergent_learning_rate_fails_with_the_reason_and_stores_nothing(client, run_worker_once):
    x, y = all_digits()
    task = submit(client, parquet_of(x[:600], y[:600]), "digits.parquet", "hot", epochs="2", lr="1000")
    run_worker_once()
    job = client.get(f"/jobs/{task['job_id']}").json()
    assert job["status"] == "failed", job
    assert job["error"].startswith("training diverged at epoch ")
    assert "lower `lr` or check the features' scale" in job["error"]
    assert client.get("/models/hot/versions").json() == []
    assert client.get("/models/hot").json()["serving_version"] is None


def test_a_task_of_noise_labels_is_rejected_as_not_learnt(client, run_worker_once):
    x, y = all_digits()
    noise = np.random.default_rng(0).permutation(y[:600])  # labels that say nothing about the pixels
    task = submit(client, parquet_of(x[:600], noise), "noise.parquet", "noise", epochs="8")
    run_worker_once()
    job = client.get(f"/jobs/{task['job_id']}").json()
    assert job["status"] == "rejected", job
    assert f"task {task['id']} was not learnt" in job["error"] and "most frequent label" in job["error"]
    assert "samples per class" in job["error"] and "lr" in job["error"]
    (version,) = client.get("/models/noise/versions").json()
    assert not version["promoted"] and version["validation"]["not_learnt"]["n_validation"] > 0
    assert client.get("/models/noise").json()["serving_version"] is None


def test_classes_added_task_by_task_under_the_default_strategy_are_kept(client, run_worker_once):
    x, y = all_digits()
    images = x.round().astype(np.uint8).reshape(-1, 1, 8, 8)  # as images: scaled by 1/255
    tasks = []
    for first in range(0, 10, 2):
        keep = np.isin(y, (first, first + 1))
        tasks.append(submit(client, npz_of(images[keep], y[keep]), f"digits{first}.npz", "growing"))
        run_worker_once()
        job = client.get(f"/jobs/{tasks[-1]['job_id']}").json()
        assert job["status"] == "succeeded", job  # promoted at every step

    versions = client.get("/models/growing/versions").json()
    assert [v["strategy"] for v in versions] == ["auto"] * 5
    assert [v["strategy_choice"]["strategy"] for v in versions] == ["ewc"] + ["ewc_replay"] * 4
    assert "has not seen" in versions[1]["strategy_choice"]["reason"]
    for task in tasks:  # every task's classes, among all ten digits, after the last
        assert client.get(f"/tasks/{task['id']}/accuracy").json()["current"] >= 0.75
    memory = client.get("/models/growing").json()["replay_memory"]
    assert memory["capacity"] == 1000 and 0 < memory["samples"] <= 1000 and memory["bytes"] > 0


def test_the_learning_check_allows_for_the_size_of_the_validation_set():
    from app.updates.gate import learning_check, wilson_lower_bound

    assert wilson_lower_bound(6, 6) > 0.5 >= wilson_lower_bound(5, 6)  # six samples: only a clean sweep shows it
    balanced = [0, 1] * 3
    assert learning_check("t", 1.0, balanced, [0, 1] * 10) is None
    verdict = learning_check("t", 5 / 6, balanced, [0, 1] * 10, {"lr": 0.05, "epochs_trained": 3})
    assert verdict["majority_share"] == 0.5 and "lr 0.05" in verdict["reason"] and "3 trained" in verdict["reason"]
    assert learning_check("t", 0.59, [0, 1] * 50, [0, 1] * 50) is None  # a hundred samples: 0.59 beats 0.5
    assert learning_check("t", 1.0, [3] * 10, [3] * 10) is None  # one label: nothing to judge
    assert learning_check("t", None, [], [0, 1]) is None  # no validation samples
