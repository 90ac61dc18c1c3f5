"""The content-addressed artifact store (app/storage/artifacts.py): what is written is what is read,
or the read is refused."""

import os

import pytest
import torch

from app.errors import ArtifactCorrupt
from app.learning.state import to_safetensors_bytes
from app.storage.artifacts import ArtifactStore, sha256_of


def payload(seed: int = 0) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    return to_safetensors_bytes({"weight": torch.randn(8, 4, generator=generator)}, {"note": f"seed {seed}"})


def test_round_trip_is_named_by_sha256_and_verified(tmp_path):
    store = ArtifactStore(str(tmp_path / "artifacts"))
    data = payload()
    reference = store.put(data)
    assert reference.sha256 == sha256_of(data)
    assert reference.size == len(data)
    assert reference.sha256 in reference.uri
    assert store.get(reference.uri, reference.sha256) == data
    tensors, metadata = store.get_tensors(reference.uri)
    assert tensors["weight"].shape == (8, 4) and metadata == {"note": "seed 0"}


def test_same_bytes_are_stored_once_and_no_temporary_files_remain(tmp_path):
    root = tmp_path / "artifacts"
    store = ArtifactStore(str(root))
    first, again, other = store.put(payload(0)), store.put(payload(0)), store.put(payload(1))
    assert first == again and first.uri != other.uri
    files = sorted(path.name for path in root.rglob("*") if path.is_file())
    assert files == sorted({f"{first.sha256}.safetensors", f"{other.sha256}.safetensors"})


def test_a_damaged_artifact_is_refused(tmp_path):
    store = ArtifactStore(str(tmp_path / "artifacts"))
    reference = store.put(payload())
    path = reference.uri.removeprefix("file://")
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) - 1)
        handle.write(b"\x00" if handle.read(1) != b"\x00" else b"\x01")
    with pytest.raises(ArtifactCorrupt, match="damaged"):
        store.get(reference.uri, reference.sha256)


def test_a_recorded_sha256_that_differs_is_refused(tmp_path):
    store = ArtifactStore(str(tmp_path / "artifacts"))
    reference = store.put(payload())
    with pytest.raises(ArtifactCorrupt):
        store.get(reference.uri, sha256_of(b"something else"))


def test_a_damaged_copy_is_rewritten_by_the_next_put(tmp_path):
    """A torn file left by an earlier crash (wrong size) does not block storing the payload again."""
    store = ArtifactStore(str(tmp_path / "artifacts"))
    data = payload()
    reference = store.put(data)
    path = reference.uri.removeprefix("file://")
    with open(path, "wb") as handle:
        handle.write(data[:10])
    assert store.put(data) == reference
    assert store.get(reference.uri) == data


def test_any_fsspec_url_works(tmp_path):
    """Non-local stores (s3://, gs://, ...) go through fsspec; memory:// stands in for them here."""
    store = ArtifactStore("memory://retain-test-artifacts")
    data = payload(3)
    reference = store.put(data)
    assert reference.uri.startswith("memory://")
    assert store.get(reference.uri, reference.sha256) == data
    assert ArtifactStore("memory://retain-test-artifacts").exists(reference.uri)


def test_on_s3_an_artifact_is_one_object_at_its_content_address_and_verified_on_read(s3):
    """moto's S3 server (its own process): no temporary objects (an object store has no rename),
    a second put writes nothing, and a replaced object is refused on read."""
    root = f"s3://retain-data/artifacts-{os.getpid()}"  # the `s3` fixture's bucket
    store = ArtifactStore(root)
    data = payload(4)
    reference = store.put(data)
    assert reference.uri == f"{root}/{reference.sha256[:2]}/{reference.sha256}.safetensors"
    assert ArtifactStore(root).get(reference.uri, reference.sha256) == data  # a fresh store: another machine
    modified = s3.info(reference.uri)["LastModified"]
    assert store.put(data) == reference and s3.info(reference.uri)["LastModified"] == modified
    assert [path.rsplit("/", 1)[1] for path in s3.find(root)] == [f"{reference.sha256}.safetensors"]

    s3.pipe(reference.uri, payload(5))  # replaced behind the store's back
    with pytest.raises(ArtifactCorrupt, match="damaged"):
        ArtifactStore(root).get(reference.uri, reference.sha256)


def test_stale_temporaries_are_removed_and_fresh_ones_kept(store, run_worker_once):
    import os
    import time
    from pathlib import Path

    folder = Path(store.root) / "ab"
    folder.mkdir(parents=True, exist_ok=True)
    stale, fresh = folder / "ab12.safetensors.1.tmp", folder / "ab34.safetensors.2.tmp"
    for path in (stale, fresh):
        path.write_bytes(b"half")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))  # a writer killed two hours ago
    run_worker_once()  # a worker starting up cleans the store
    assert not stale.exists() and fresh.exists()
