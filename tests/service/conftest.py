"""Service test fixtures: a migrated database (SQLite file, or Postgres when reachable), a TestClient,
small task files cut from the shared data, and helpers to run the real worker loop."""

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
PMNIST = DATA / "pmnist-conflict"
MNIST = DATA / "mnist_5k.npz"
# `database_url` (sqlite + postgres), `settings`, `session_factory` and `store` come from tests/conftest.py.


@pytest.fixture
def client(settings):
    from app.main import create_app

    with TestClient(create_app(settings)) as test_client:
        yield test_client


def run_worker_once(settings) -> int:
    from app.worker.loop import run_worker

    return run_worker(settings, threading.Event(), once=True)


@contextmanager
def worker_thread(settings):
    """The real worker loop in a background thread (as the embedded default runs it), stopped on exit."""
    from app.worker.loop import run_worker

    stop = threading.Event()
    thread = threading.Thread(target=run_worker, args=(settings, stop), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(60)


def wait_for_job(client, job_id: int, statuses=("succeeded", "failed", "cancelled", "rejected"), timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
        time.sleep(0.05)


def pmnist_subset(tmp_path, index: int, n_train: int = 250, n_test: int = 100):
    """Task ``index`` of pmnist-conflict cut to its first samples (upload stays small, training seconds)."""
    if not PMNIST.exists():
        pytest.skip(f"{PMNIST} not found")
    data = np.load(PMNIST / f"task{index}.npz")
    path = tmp_path / f"task{index}.npz"
    np.savez(path, x=data["x"][:n_train], y=data["y"][:n_train], x_test=data["x_test"][:n_test],
             y_test=data["y_test"][:n_test])
    return path


@pytest.fixture
def pmnist_files(tmp_path):
    return [pmnist_subset(tmp_path, index) for index in range(2)]


@pytest.fixture
def digit_pair_files(tmp_path):
    """Split MNIST: two tasks of two digits each (0/1, 2/3) from mnist_5k, no test split of their own."""
    if not MNIST.exists():
        pytest.skip(f"{MNIST} not found")
    data = np.load(MNIST)
    paths = []
    for digits in ((0, 1), (2, 3)):
        keep = np.sort(np.concatenate([np.flatnonzero(data["y"] == digit)[:150] for digit in digits]))
        path = tmp_path / f"digits{digits[0]}{digits[1]}.npz"
        np.savez(path, x=data["x"][keep], y=data["y"][keep])
        paths.append(path)
    return paths


def teach(client, path, model="m", **fields):
    form = {"model": model, "name": path.stem, "epochs": "1", "ewc_lambda": "100", **fields}
    with open(path, "rb") as upload:
        return client.post("/tasks", data=form, files={"file": (path.name, upload)})
