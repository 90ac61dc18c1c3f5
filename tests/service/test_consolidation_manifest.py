"""Update k stores what update 1 did (app/registry/consolidation.py): a version's consolidation is a
manifest that refers to earlier tasks' Fisher + anchor and evaluation splits instead of copying them,
an update reads no old task's training data, and versions stored before manifests still learn on."""

import json
from pathlib import Path

import torch
from sqlalchemy import select

from app.db.tables import Dataset, Model, ModelVersion, Task
from app.registry.consolidation import MANIFEST_FORMAT, read_consolidation
from app.registry.versions import load_for_update


def versions_of(session_factory) -> list[ModelVersion]:
    with session_factory() as session:
        return list(session.scalars(select(ModelVersion).order_by(ModelVersion.number)))


def manifest_of(store, version: ModelVersion) -> dict:
    _, metadata = store.get_tensors(version.consolidation_uri, version.consolidation_sha256)
    return json.loads(metadata["retain"])


def stored_files(settings) -> set[Path]:
    return set(Path(settings.artifact_uri).rglob("*.safetensors"))


def learn(submit_task, run_worker_once, session_factory, index: int) -> None:
    _, job_id = submit_task(index=index % 5, n_train=150, n_test=50, max_forgetting=1.0)  # always promoted
    assert run_worker_once() == 1
    with session_factory() as session:
        from app.db.tables import Job

        job = session.get(Job, job_id)
        assert job.status == "succeeded", job.error


def test_each_update_stores_one_tasks_state_and_reads_no_old_training_data(
    settings, session_factory, store, submit_task, run_worker_once
):
    learn(submit_task, run_worker_once, session_factory, 0)
    with session_factory() as session:  # task 1's dataset (training data included) is gone after its update
        first_dataset = session.scalar(select(Dataset).join(Task, Task.dataset_id == Dataset.id))
    Path(first_dataset.artifact_uri.removeprefix("file://")).unlink()

    added = []
    for index in (1, 2):
        before = stored_files(settings)
        learn(submit_task, run_worker_once, session_factory, index)
        added.append(stored_files(settings) - before)
    # weights, this task's dataset upload, its state (Fisher + anchor), its evaluation splits, the manifest
    assert [len(files) for files in added] == [5, 5]

    v1, v2, v3 = versions_of(session_factory)
    m2, m3 = manifest_of(store, v2), manifest_of(store, v3)
    assert m3["format"] == MANIFEST_FORMAT and list(m3["task_state"]) == [
        str(v1.task_id),
        str(v2.task_id),
        str(v3.task_id),
    ]
    for key in m2["task_state"]:  # referenced, not rewritten
        assert m3["task_state"][key] == m2["task_state"][key] and m3["evaluation"][key] == m2["evaluation"][key]
    assert v3.consolidation_size < 2000  # references only

    learner, manifest = load_for_update(store, v3)
    assert list(learner.consolidation.entries) == list(m3["task_state"]) and manifest is not None
    evaluation = store.get_tensors(m3["evaluation"][str(v1.task_id)]["uri"])[0]
    assert len(evaluation["train.x"]) == 0 and len(evaluation["test.x"]) == 50


def test_a_version_stored_before_manifests_still_learns_on(
    settings, session_factory, store, submit_task, run_worker_once
):
    learn(submit_task, run_worker_once, session_factory, 0)
    [v1] = versions_of(session_factory)
    learner, _ = load_for_update(store, v1)
    old_format = store.put_tensors(*learner.export_consolidation())  # one payload with every task's tensors
    with session_factory() as session:
        row = session.get(ModelVersion, v1.id)
        row.consolidation_uri, row.consolidation_sha256 = old_format.uri, old_format.sha256
        session.commit()
        v1 = session.get(ModelVersion, v1.id)
    shapes = {name: p.shape for name, p in learner.network.named_parameters()}
    (_, _), manifest = read_consolidation(store, v1.consolidation_uri, v1.consolidation_sha256, shapes)
    assert manifest is None

    learn(submit_task, run_worker_once, session_factory, 1)
    _, v2 = versions_of(session_factory)
    key = str(v1.task_id)
    state = manifest_of(store, v2)["task_state"][key]  # split out of the old payload, once
    tensors, _ = store.get_tensors(state["uri"], state["sha256"])
    for name, fisher in learner.consolidation.entries[key]["fisher"].items():
        assert torch.equal(tensors[f"fisher.{name}"], fisher)
    with session_factory() as session:
        assert session.scalar(select(Model)).serving_version_id in (v1.id, v2.id)
