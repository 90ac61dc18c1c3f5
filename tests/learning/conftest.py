"""Small, real data for the learning tests: subsets of the pmnist-conflict benchmark."""

import numpy as np
import pytest
import torch

from app.learning import TaskData


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def mnist_5k(shared_file) -> tuple[np.ndarray, np.ndarray]:
    """The shared MNIST digits (x uint8 Nx1x28x28, y int64), loaded once."""
    with np.load(shared_file("mnist_5k.npz"), allow_pickle=False) as z:
        return z["x"], z["y"]


@pytest.fixture(scope="session")
def pmnist_tasks(shared_file):
    """Two pmnist-conflict tasks as (train, validation, test) TaskData triples, 1500/300/500 samples."""
    tasks = []
    for k in range(2):
        with np.load(shared_file("pmnist-conflict", f"task{k}.npz"), allow_pickle=False) as z:
            x, y, x_test, y_test = z["x"], z["y"], z["x_test"], z["y_test"]
        tasks.append(
            (TaskData(x[:1500], y[:1500]), TaskData(x[1500:1800], y[1500:1800]), TaskData(x_test[:500], y_test[:500]))
        )
    return tasks
