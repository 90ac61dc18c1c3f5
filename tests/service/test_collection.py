"""Artifact garbage collection (app/registry/collection.py): what a row refers to, directly or through a
version's consolidation manifest, is kept however old; other artifacts go once older than the grace
period, on a local directory and on S3; a starting worker collects too."""

import os
import time
from pathlib import Path

import torch
from sqlalchemy import select

from app.db.tables import Dataset, ModelVersion
from app.learning.state import to_safetensors_bytes
from app.registry.collection import collect_garbage
from app.registry.versions import load_for_update
from app.storage.artifacts import ArtifactStore

HOURS_AGO = time.time() - 7200  # older than the default grace period (an hour)


def garbage(seed: int) -> bytes:
    """The bytes of an artifact no row refers to (what a job that crashed before its commit leaves)."""
    return to_safetensors_bytes({"weight": torch.full((4,), float(seed))}, {"note": f"garbage {seed}"})


def age(path: Path, when: float = HOURS_AGO) -> None:
    os.utime(path, (when, when))


def local_path(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def test_referenced_artifacts_are_kept_however_old_and_old_garbage_goes(
    client, settings, session_factory, store, pmnist_file, teach, run_worker_once
):
    for index in (0, 1):
        assert teach(pmnist_file(index), max_forgetting="1").status_code == 202
        assert run_worker_once() == 1
    for path in Path(settings.artifact_uri).rglob("*.safetensors"):
        age(path)  # every artifact of the two versions is old: only references keep them
    old, young = store.put(garbage(1)), store.put(garbage(2))
    age(local_path(old.uri))
    stored = len(list(Path(settings.artifact_uri).rglob("*.safetensors")))

    preview = client.post("/artifacts/gc", params={"dry_run": "true"})
    assert preview.status_code == 200, preview.text
    assert preview.json() == {
        "dry_run": True,
        "grace_seconds": 3600.0,
        "stored": stored,
        "referenced": stored - 2,
        "kept_recent": 1,
        "removed": 1,
        "bytes_freed": old.size,
    }
    assert local_path(old.uri).exists()

    collected = client.post("/artifacts/gc").json()
    assert (collected["removed"], collected["bytes_freed"], collected["kept_recent"]) == (1, old.size, 1)
    assert not local_path(old.uri).exists() and local_path(young.uri).exists()
    assert client.post("/artifacts/gc").json()["removed"] == 0

    with session_factory() as session:  # every version still loads whole: weights, Fisher, anchors, splits
        versions = list(session.scalars(select(ModelVersion).order_by(ModelVersion.number)))
    for version in versions:
        load_for_update(store, version)
    assert teach(pmnist_file(2), max_forgetting="1").status_code == 202  # reads the old tasks' evaluation splits
    assert run_worker_once() == 1
    assert [job["status"] for job in client.get("/jobs").json()] == ["succeeded"] * 3


def test_an_artifact_written_again_is_young_again(session_factory, store):
    """A writer that finds its bytes already stored (a retry, the same upload again) refreshes their age,
    so the collector cannot remove them between that write and the commit that refers to them."""
    reused = store.put(garbage(3))
    age(local_path(reused.uri))
    assert store.put(garbage(3)) == reused
    with session_factory() as session:
        collected = collect_garbage(session, store, grace_seconds=3600)
    assert (collected.removed, collected.kept_recent) == (0, 1) and local_path(reused.uri).exists()


def test_a_starting_worker_collects_old_garbage(store, run_worker_once):
    old = store.put(garbage(4))
    age(local_path(old.uri))
    run_worker_once()
    assert not local_path(old.uri).exists()


def test_a_consolidation_that_cannot_be_read_stops_the_collection(
    client, settings, session_factory, store, pmnist_file, teach, run_worker_once
):
    assert teach(pmnist_file(0)).status_code == 202
    assert run_worker_once() == 1
    with session_factory() as session:
        version = session.scalar(select(ModelVersion))
    local_path(version.consolidation_uri).unlink()
    old = store.put(garbage(5))
    age(local_path(old.uri))
    answer = client.post("/artifacts/gc")
    assert answer.status_code == 409 and "version 1 of model 'm'" in answer.json()["detail"]
    assert local_path(old.uri).exists()  # its references unknown: nothing removed


def test_on_s3_only_unreferenced_objects_past_the_grace_period_go(s3, session_factory):
    root = f"s3://retain-data/gc-{os.getpid()}-{time.monotonic_ns()}"  # the `s3` fixture's bucket
    store = ArtifactStore(root)
    kept, dropped = store.put(garbage(6)), store.put(garbage(7))
    with session_factory() as session:
        session.add(
            Dataset(
                sha256="1" * 64,
                format="npz",
                n_train=1,
                n_validation=1,
                n_test=1,
                input_shape=[4],
                labels=[0, 1],
                artifact_uri=kept.uri,
                artifact_sha256=kept.sha256,
                artifact_size=kept.size,
            )
        )
        session.commit()
        young = collect_garbage(session, store, grace_seconds=3600)
        assert (young.stored, young.referenced, young.kept_recent, young.removed) == (2, 1, 1, 0)
        time.sleep(1.1)  # S3 keeps modification times to the second
        collected = collect_garbage(session, store, grace_seconds=0)
    assert (collected.removed, collected.bytes_freed) == (1, dropped.size)
    assert s3.exists(kept.uri) and not s3.exists(dropped.uri)
