"""Rehearsal through the API: a model taught with ``ewc_replay`` by the real worker loop stores its
bounded, per-task-balanced memory with each version's consolidation (a payload the manifest points at),
and the next update finds it."""

import json

from sqlalchemy import select

from app.db.tables import ModelVersion
from app.registry.consolidation import read_consolidation


def test_ewc_replay_tasks_store_a_bounded_memory_with_each_version(
    client, pmnist_files, teach, wait_for_job, worker_thread, session_factory, store
):
    with worker_thread():
        ids = []
        for path in pmnist_files:
            answer = teach(
                path,
                model="rehearsed",
                strategy="ewc_replay",
                architecture_options='{"hidden": [32], "memory_size": 60}',
                ewc_lambda="auto",
            )
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
            job = wait_for_job(answer.json()["job_id"], timeout=120)
            assert job["status"] in ("succeeded", "rejected"), job

    versions = client.get("/models/rehearsed/versions").json()
    assert [v["strategy"] for v in versions] == ["ewc_replay", "ewc_replay"]
    # with a memory to replay, "auto" is EWCConfig.replay_lambda, not searched
    assert versions[1]["ewc_lambda"] == 10.0 and versions[1]["lambda_search"] is None
    assert "capacity_warning" in versions[1] and "capacity_warning" in versions[1]["validation"]
    budget = versions[1]["train_config"]["budget"]  # the budget the service chose: floor, early stopping, cap
    assert 1 <= budget["floor_epochs"] <= versions[1]["train_config"]["epochs_trained"] <= budget["max_epochs"]

    with session_factory() as session:
        rows = session.scalars(select(ModelVersion).order_by(ModelVersion.number)).all()
        payloads = [
            read_consolidation(store, row.consolidation_uri, row.consolidation_sha256, shapes={}) for row in rows
        ]
    shares = []
    for (tensors, metadata), manifest in payloads:
        assert manifest is not None and manifest.memory is not None  # its own payload beside the task states
        memory = json.loads(metadata["retain"])["memory"]
        assert memory["capacity"] == 60 and memory["order"] == [str(i) for i in ids[: len(memory["order"])]]
        shares.append([len(tensors[f"memory.{key}.y"]) for key in memory["order"]])
        assert all(tensors[f"memory.{key}.x"].shape[1:] == (1, 28, 28) for key in memory["order"])
    assert shares == [[60], [30, 30]]  # bounded by memory_size, balanced between the tasks
