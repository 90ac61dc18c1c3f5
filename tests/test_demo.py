"""`retain demo`: the offline experiment end to end, and the MNIST -> FashionMNIST reader."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.client import ClientError
from app.demo import digits_tasks, torchvision_tasks

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def test_offline_tasks_conflict_by_construction(tmp_path):
    task_a, task_b = digits_tasks(tmp_path)
    a, b = np.load(task_a.path), np.load(task_b.path)
    assert a["x"].dtype == np.uint8 and a["x"].shape == b["x"].shape
    # same images, pixels permuted: identical pixel histograms per sample
    assert (np.sort(a["x"], axis=1) == np.sort(b["x"], axis=1)).all()
    # every label maps to a different label, consistently
    mapping = dict(zip(a["y"].tolist(), b["y"].tolist(), strict=True))
    assert all(b_label != a_label for a_label, b_label in mapping.items())
    assert sorted(mapping.values()) == list(range(10))
    assert (np.vectorize(mapping.get)(a["y_test"]) == b["y_test"]).all()


def write_idx(path: Path, array: np.ndarray) -> None:
    """The idx format torchvision's MNIST readers expect (big-endian dims, ubyte data)."""
    kind = {1: 0x0801, 3: 0x0803}[array.ndim]
    header = np.array([kind, *array.shape], dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.skipif(not (SHARED_DATA / "mnist_5k.npz").exists(), reason="shared MNIST sample not found")
def test_data_dir_reads_torchvision_mnist_and_fashion_mnist_files(tmp_path):
    digits = np.load(SHARED_DATA / "mnist_5k.npz")
    order = np.random.default_rng(0).permutation(len(digits["y"]))  # the file is sorted by label
    images, labels = digits["x"][order, 0], digits["y"][order]
    root = tmp_path / "torchvision"
    for dataset, transform in (("MNIST", lambda x: x), ("FashionMNIST", lambda x: 255 - x)):
        raw = root / dataset / "raw"
        raw.mkdir(parents=True)
        write_idx(raw / "train-images-idx3-ubyte", transform(images[:4000]))
        write_idx(raw / "train-labels-idx1-ubyte", labels[:4000])
        write_idx(raw / "t10k-images-idx3-ubyte", transform(images[4000:]))
        write_idx(raw / "t10k-labels-idx1-ubyte", labels[4000:])

    mnist, fashion = torchvision_tasks(root, tmp_path, samples=1000)
    a, b = np.load(mnist.path), np.load(fashion.path)
    assert a["x"].shape == (1000, 784) and a["x_test"].shape == (1000, 784)
    assert (a["x_test"] == images[4000:].reshape(1000, -1)).all() and (a["y_test"] == labels[4000:]).all()
    assert (b["x_test"] == 255 - images[4000:].reshape(1000, -1)).all()
    # the training subset is drawn across the whole file: every class present, pairs kept
    assert set(a["y"].tolist()) == set(labels[:4000].tolist())
    flat = images[:4000].reshape(4000, -1)
    index = {row.tobytes(): label for row, label in zip(flat, labels[:4000], strict=True)}
    assert all(index[row.tobytes()] == label for row, label in zip(a["x"], a["y"], strict=True))

    images_dir = tmp_path / "images"
    images_dir.mkdir()
    mnist_images, _ = torchvision_tasks(root, images_dir, samples=10, image_shape=True)
    assert np.load(mnist_images.path)["x"].shape == (10, 1, 28, 28)


def test_data_dir_without_the_files_says_what_is_missing(tmp_path):
    with pytest.raises(ClientError, match="MNIST/raw"):
        torchvision_tasks(tmp_path, tmp_path)


@pytest.mark.slow
def test_offline_demo_shows_ewc_keeping_task_a_where_finetune_forgets(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "demo", "--ewc-lambda", "1000", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)
    task_a, task_b = results["tasks"]
    after_b = {}
    for strategy in ("ewc", "finetune"):
        first, second = results["models"][strategy]["updates"]
        assert (first["after"], second["after"]) == (task_a, task_b)
        assert first["status"] == "succeeded"
        assert second["status"] in ("succeeded", "rejected")
        assert first["accuracy"][task_a] > 0.8  # A is learnt
        assert second["accuracy"][task_b] > 0.5  # B is learnt on top
        after_b[strategy] = second["accuracy"][task_a]
    finetune_before = results["models"]["finetune"]["updates"][0]["accuracy"][task_a]
    assert after_b["finetune"] < finetune_before - 0.2, "the tasks are built to conflict: fine-tuning must forget A"
    assert after_b["ewc"] > after_b["finetune"] + 0.2, "EWC must keep task A clearly better than fine-tuning"
