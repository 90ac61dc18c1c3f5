"""Service test fixtures on top of tests/conftest.py (databases, settings, client, workers, task files).

Fixtures
    pmnist_files      the first two pmnist-conflict tasks cut small (250 training, 100 test samples).
    digit_pair_files  split MNIST: two tasks of two digits each (0/1, 2/3), no test split of their own.
    teach             callable ``teach(path, model="m", **form) -> Response``: POST /tasks through ``client``
                      with settings that train in a second (1 epoch, λ 100) unless overridden.
    wait_for_job      callable ``wait_for_job(job_id, statuses=terminal, timeout=60) -> job``: polls GET /jobs/{id}.
    worker_thread     callable ``worker_thread(settings=None)``: a context manager running the real worker loop in
                      a background thread (as the embedded default runs it), stopped on exit.
    api_replica       ``host:port`` of a second app on the test database, served by uvicorn in a thread.
"""

import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest

from app.jobs.status import TERMINAL_STATUSES


@pytest.fixture
def pmnist_files(pmnist_file):
    return [pmnist_file(index) for index in range(2)]


@pytest.fixture
def digit_pair_files(tmp_path, shared_file):
    data = np.load(shared_file("mnist_5k.npz"))
    paths = []
    for digits in ((0, 1), (2, 3)):
        keep = np.sort(np.concatenate([np.flatnonzero(data["y"] == digit)[:150] for digit in digits]))
        path = tmp_path / f"digits{digits[0]}{digits[1]}.npz"
        np.savez(path, x=data["x"][keep], y=data["y"][keep])
        paths.append(path)
    return paths


@pytest.fixture
def teach(client):
    def post(path, model="m", **fields):
        form = {"model": model, "name": path.stem, "epochs": "1", "ewc_lambda": "100", **fields}
        with open(path, "rb") as upload:
            return client.post("/tasks", data=form, files={"file": (path.name, upload)})

    return post


@pytest.fixture
def wait_for_job(client):
    def wait(job_id: int, statuses=TERMINAL_STATUSES, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = client.get(f"/jobs/{job_id}").json()
            if job["status"] in statuses:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job['status']} after {timeout} s: {job}")
            time.sleep(0.05)

    return wait


@pytest.fixture
def worker_thread(settings):
    from app.updates.loop import run_worker

    @contextmanager
    def running(worker_settings=None):
        stop = threading.Event()
        thread = threading.Thread(target=run_worker, args=(worker_settings or settings, stop), daemon=True)
        thread.start()
        try:
            yield thread
        finally:
            stop.set()
            thread.join(60)

    return running


@pytest.fixture
def api_replica(settings):
    """A second API process's worth of app (its own caches) on the test database, served by uvicorn in a
    thread on a free loopback port: protocol clients that need ``host:port`` (tritonclient) talk to it,
    and a change made through ``client`` reaches it only as it would reach another replica. Yields the
    ``host:port``."""
    import socket

    import uvicorn

    from app.main import create_app

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the replica did not start"
        time.sleep(0.02)
    try:
        yield f"127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()
