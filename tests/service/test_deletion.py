"""Deleting versions and models over HTTP (app/registry/deletion.py): the serving version, a parent and
a model with unfinished jobs are refused with what to do; what is deleted takes its rows, then the
artifacts nothing else refers to; what kept versions and other models need stays and keeps working."""

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from app.db.session import get_engine
from app.db.tables import Accuracy, AliasChange, Dataset, Job, Model, ModelVersion, Task
from app.errors import NotFound
from app.predict.served_versions import ServingDirectory
from app.registry.versions import load_for_update


@pytest.fixture
def collecting_client(settings, api_client):
    """The API with no grace period: what a delete frees is collected at once (no job runs meanwhile)."""
    with api_client(settings.model_copy(update={"artifact_gc_grace_seconds": 0.0})) as admin:
        yield admin


def teach_now(client, path: Path, run_worker_once, model: str = "m", **fields) -> dict:
    with open(path, "rb") as upload:
        answer = client.post(
            "/tasks",
            data={"model": model, "epochs": "1", "ewc_lambda": "100", "max_forgetting": "1", **fields},
            files={"file": (path.name, upload)},
        )
    assert answer.status_code == 202, answer.text
    assert run_worker_once() == 1
    job = client.get(f"/jobs/{answer.json()['job_id']}").json()
    assert job["status"] == "succeeded", job
    return answer.json()


def stored(settings) -> set[str]:
    return {path.name.removesuffix(".safetensors") for path in Path(settings.artifact_uri).rglob("*.safetensors")}


def count(session_factory, table, *where) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(table).where(*where))


def test_a_version_is_deleted_only_when_nothing_kept_needs_it(
    collecting_client, settings, session_factory, store, pmnist_file, run_worker_once
):
    client = collecting_client
    tasks = [teach_now(client, pmnist_file(index), run_worker_once) for index in (0, 1)]  # v1, v2 on v1
    assert client.put("/models/m/serving-version", json={"version": 1, "reason": "v2 is bad"}).status_code == 200
    tasks.append(teach_now(client, pmnist_file(2), run_worker_once))  # v3, learnt on v1: v2 is a leaf
    with session_factory() as session:
        v2 = session.scalar(select(ModelVersion).where(ModelVersion.number == 2))

    serving = client.delete("/models/m/versions/3")
    assert serving.status_code == 409 and "is serving" in serving.json()["detail"]
    assert client.put("/models/m/serving-version", json={"version": 2}).status_code == 200  # v1 serves no more,
    parent = client.delete("/models/m/versions/1")  # but v2 and v3 were learnt from it
    assert parent.status_code == 409 and "learnt from version 1" in parent.json()["detail"]
    client.put("/models/m/serving-version", json={"version": 3})
    assert client.delete("/models/m/versions/9").status_code == 404
    assert client.delete("/models/nope/versions/1").status_code == 404

    deleted = client.delete("/models/m/versions/2")
    assert deleted.status_code == 200, deleted.text
    answer = deleted.json()
    assert (answer["versions"], answer["tasks"], answer["jobs"]) == ([2], 0, 0)
    assert answer["artifacts"]["removed"] >= 4  # its weights, manifest, task 1's Fisher+anchor and evaluation splits
    assert v2.weights_sha256 not in stored(settings)
    assert [v["number"] for v in client.get("/models/m/versions").json()] == [1, 3]
    assert count(session_factory, Accuracy, Accuracy.model_version_id == v2.id) == 0
    assert client.get(f"/tasks/{tasks[1]['id']}").json()["model_version"] is None  # the task and its job stay
    sample = np.load(pmnist_file(0))["x_test"][:2].tolist()
    assert client.post("/predict", json={"model": "m", "inputs": sample, "version": 2}).status_code == 404
    with session_factory() as session:
        assert (
            session.scalars(select(AliasChange.reason).order_by(AliasChange.id.desc())).first() == "version 2 deleted"
        )
        kept = list(session.scalars(select(ModelVersion).order_by(ModelVersion.number)))
    for version in kept:  # whole, Fisher and evaluation splits of every task they learnt included
        load_for_update(store, version)
    teach_now(client, pmnist_file(3), run_worker_once)  # and the model learns on from v3
    assert [v["number"] for v in client.get("/models/m/versions").json()] == [1, 3, 4]


def test_a_model_is_deleted_with_its_rows_and_only_the_artifacts_no_other_model_shares(
    collecting_client, settings, session_factory, pmnist_file, run_worker_once
):
    client = collecting_client
    shared = pmnist_file(0)
    teach_now(client, shared, run_worker_once, model="other")  # the same bytes: one dataset artifact, two models
    for index in (0, 1):
        teach_now(client, pmnist_file(index), run_worker_once)
    with session_factory() as session:
        shared_sha = session.scalar(
            select(Dataset.artifact_sha256)
            .join(Task, Task.dataset_id == Dataset.id)
            .join(Model, Task.model_id == Model.id)
            .where(Model.name == "other")
        )
    queued = client.post(
        "/tasks", data={"model": "m", "epochs": "1"}, files={"file": ("t.npz", pmnist_file(2).read_bytes())}
    ).json()

    refused = client.delete("/models/m")
    assert refused.status_code == 409 and f"job {queued['job_id']}" in refused.json()["detail"]
    assert client.post(f"/jobs/{queued['job_id']}/cancel").status_code == 200
    sample = np.load(shared)["x_test"][:2].tolist()
    assert client.post("/predict", json={"model": "m", "inputs": sample}).status_code == 200  # cached to serve
    other_replica = ServingDirectory(get_engine(settings), check_interval=0.0)  # another API process's cache
    assert other_replica.resolve("m", None)[1].number == 2

    deleted = client.delete("/models/m")
    assert deleted.status_code == 200, deleted.text
    answer = deleted.json()
    assert (answer["versions"], answer["tasks"], answer["jobs"]) == ([1, 2], 3, 3)
    assert answer["artifacts"]["removed"] > 0
    assert client.get("/models/m").status_code == 404
    assert client.post("/predict", json={"model": "m", "inputs": sample}).status_code == 404
    assert other_replica.cached("m", None) is None  # the stamp moved: the other replica forgets the model
    with pytest.raises(NotFound):
        other_replica.resolve("m", None)
    other_replica.close()
    assert client.delete("/models/m").status_code == 404
    with session_factory() as session:
        [model_id] = session.scalars(select(Model.id))  # "other" only
    for table in (ModelVersion, Task, Job):
        assert count(session_factory, table, table.model_id != model_id) == 0
    assert count(session_factory, Dataset) == 1
    assert shared_sha in stored(settings)  # "other" still refers to it
    assert client.post("/predict", json={"model": "other", "inputs": sample}).status_code == 200
    teach_now(client, pmnist_file(1), run_worker_once, model="other")  # and it learns on
    teach_now(client, pmnist_file(0), run_worker_once)  # a model of the deleted one's name starts afresh
    assert [v["number"] for v in client.get("/models/m/versions").json()] == [1]

    other_replica = ServingDirectory(get_engine(settings), check_interval=0.0)
    assert other_replica.resolve("other", None)[1].number == 2
    assert client.delete("/models/other").status_code == 200  # its alias changes are not the newest: only
    with pytest.raises(NotFound):  # the number of models tells the other replica
        other_replica.resolve("other", None)
    other_replica.close()


def test_deleting_needs_an_admin_key(client):
    created = client.post("/keys", json={"scope": "train", "name": "trainer"}).json()
    answer = client.delete("/models/m", headers={"Authorization": f"Bearer {created['key']}"})
    assert answer.status_code == 403 and "'admin'" in answer.json()["detail"]
    assert client.post("/artifacts/gc", headers={"Authorization": f"Bearer {created['key']}"}).status_code == 403
