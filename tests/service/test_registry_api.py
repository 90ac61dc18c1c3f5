"""The registry over HTTP: versions (λ, λ candidates, Fisher recipe), the accuracy matrix and its
metrics, and the serving alias (rollback / roll forward, recorded as alias changes)."""

import numpy as np
import pytest
from sqlalchemy import create_engine, text

CANDIDATES = {10.0, 100.0, 1000.0, 10000.0}


@pytest.fixture
def teach_both(client, pmnist_files, teach, run_worker_once):
    """``teach_both(ewc_lambda) -> [task ids]``: model `m` learns task 0 (first), then task 1."""
    return lambda ewc_lambda: _teach_both(client, pmnist_files, ewc_lambda, teach, run_worker_once)


def _teach_both(client, pmnist_files, ewc_lambda: str, teach, run_worker_once) -> list[int]:
    ids = []
    for path in pmnist_files:
        answer = teach(path, ewc_lambda=ewc_lambda, max_forgetting="1.0")  # gate open: both promoted
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["id"])
        assert run_worker_once() == 1
    assert [client.get(f"/tasks/{i}").json()["status"] for i in ids] == ["succeeded", "succeeded"]
    return ids


def test_versions_matrix_and_models_after_an_auto_lambda_update(client, teach_both):
    """One model taught twice (the second update chooses λ) serves every read of the registry."""
    two_versions = teach_both("auto")
    check_versions(client, two_versions)
    check_accuracy_matrix(client, two_versions)
    check_models(client)


def check_versions(client, two_versions):
    first, second = client.get("/models/m/versions").json()
    assert (first["number"], first["parent_number"], first["task_id"]) == (1, None, two_versions[0])
    assert first["ewc_lambda"] is None and not first["lambda_search"]  # nothing to protect on the first task
    assert (second["number"], second["parent_number"], second["task_id"]) == (2, 1, two_versions[1])
    assert second["promoted"] and second["serving"] and not first["serving"]

    search = second["lambda_search"]
    assert {entry["lambda"] for entry in search} == CANDIDATES
    for entry in search:
        assert 0.0 <= entry["validation_accuracy"] <= 1.0
        assert set(entry["per_task"]) == {str(i) for i in two_versions}  # scored on every learnt task
    longest = max(entry["steps"] for entry in search)
    finalists = [entry for entry in search if entry["steps"] == longest]
    assert second["ewc_lambda"] == max(finalists, key=lambda e: e["validation_accuracy"])["lambda"]

    recipe = second["fisher_recipe"]
    assert recipe["label_mode"] in ("true", "empirical") and recipe["n_samples"] > 0
    assert "lambda/2" in recipe["half_convention"] and recipe["consolidation"] in ("separate", "online")
    for version in (first, second):
        assert len(version["weights_sha256"]) == 64 and version["weights_size"] > 0
        assert len(version["consolidation_sha256"]) == 64
        assert version["train_config"]["epochs"] == 1


def check_accuracy_matrix(client, two_versions):
    first, second = two_versions
    report = client.get("/models/m/accuracy").json()
    assert [t["task_id"] for t in report["tasks"]] == [first, second]
    assert [(row["model_version"], row["task_id"]) for row in report["rows"]] == [(1, first), (2, second)]
    cells = {
        (row["model_version"], cell["task_id"]): cell["accuracy"] for row in report["rows"] for cell in row["accuracy"]
    }
    assert set(cells) == {(1, first), (2, first), (2, second)}
    r = report["matrix"]
    assert r == [[cells[1, first], None], [cells[2, first], cells[2, second]]]
    assert report["average_accuracy"] == pytest.approx((r[1][0] + r[1][1]) / 2)
    assert report["bwt"] == pytest.approx(r[1][0] - r[0][0])
    assert report["forgetting"] == pytest.approx(r[0][0] - r[1][0])

    history = client.get(f"/tasks/{first}/accuracy").json()["history"]  # the same table, one task's row
    assert [entry["accuracy"] for entry in history] == [r[0][0], r[1][0]]


def test_rollback_and_roll_forward_are_served_and_recorded(client, database_url, pmnist_files, teach_both):
    teach_both("100")
    inputs = np.load(pmnist_files[0])["x_test"][:2].tolist()
    rolled = client.put("/models/m/serving-version", json={"version": 1, "reason": "v2 forgot task 0"})
    assert rolled.status_code == 200, rolled.text
    assert rolled.json() == {"model": "m", "serving_version": 1, "previous_version": 2, "reason": "v2 forgot task 0"}
    assert client.get("/models/m").json()["serving_version"] == 1
    assert [v["serving"] for v in client.get("/models/m/versions").json()] == [True, False]
    assert client.post("/predict", json={"model": "m", "inputs": inputs}).json()["model_version"] == 1
    assert [row["serving"] for row in client.get("/models/m/accuracy").json()["rows"]] == [True, False]

    forward = client.put("/models/m/serving-version", json={"version": 2})
    assert forward.status_code == 200 and forward.json()["previous_version"] == 1
    assert client.post("/predict", json={"model": "m", "inputs": inputs}).json()["model_version"] == 2

    assert client.put("/models/m/serving-version", json={"version": 7}).status_code == 404
    assert client.put("/models/m/serving-version", json={"version": 0}).status_code == 422
    assert client.put("/models/nope/serving-version", json={"version": 1}).status_code == 404

    engine = create_engine(database_url)
    with engine.connect() as connection:
        changes = connection.execute(
            text(
                "SELECT f.number, t.number, a.reason FROM alias_changes a "
                "JOIN model_versions t ON t.id = a.to_version_id "
                "LEFT JOIN model_versions f ON f.id = a.from_version_id ORDER BY a.id"
            )
        ).all()
    engine.dispose()
    assert [(c[0], c[1]) for c in changes] == [(None, 1), (1, 2), (2, 1), (1, 2)]
    assert changes[2][2] == "v2 forgot task 0"


def check_models(client):
    models = client.get("/models").json()
    assert [(m["name"], m["n_versions"], m["n_tasks"], m["serving_version"]) for m in models] == [("m", 2, 2, 2)]
    assert models[0]["parameter_counts"] is None  # only the single-model view loads the weights
    one = client.get("/models/m").json()
    assert one["architecture"] == "mlp" and one["family"] == "ewc" and one["input_shape"] == [1, 28, 28]
    assert one["max_forgetting"] == 1.0
    counts = one["parameter_counts"]
    assert counts["base"] == counts["total"] > 0 and counts["per_task"] == {}
