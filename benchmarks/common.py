"""Shared helpers for the benchmark scripts: task files, validation hold-out, progress, results.

Every benchmark reads tasks the same way (``taskK.npz`` with ``x, y, x_test, y_test``, any
input shape, loaded with ``allow_pickle=False``; or one labelled npz split into tasks by label,
``load_split_tasks``), holds out validation data from the *train* split only (test is never
used to choose anything), and writes its JSON with the machine it ran on, so a figure in the
docs can be traced to a command and a machine.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # scripts run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from app.learning import TaskData  # noqa: E402  (needs the path above)

T = TypeVar("T")
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
# Wide enough for the tables when stderr is a log file rather than a terminal.
console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=140)


@dataclass
class BenchmarkTask:
    """One task of a benchmark: train (minus the held-out part), validation, and test data."""

    key: str
    train: TaskData
    validation: TaskData
    test: TaskData

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


def task_files(directory: str | Path) -> list[Path]:
    """``task0.npz, task1.npz, …`` in numeric order (task10 after task9)."""
    directory = Path(directory)
    files = [p for p in directory.iterdir() if re.fullmatch(r"task\d+\.npz", p.name)]
    if not files:
        raise SystemExit(f"no task<K>.npz files in {directory}")
    return sorted(files, key=lambda p: int(p.stem[4:]))


def hold_out(x: np.ndarray, y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Split one task's train arrays into (train_x, train_y, val_x, val_y), stratified by label.

    Stratified so a small validation set still sees every class of the task; seeded so
    every method in a run trains on exactly the same samples.
    """
    if not 0.0 <= fraction < 1.0:
        raise SystemExit(f"validation fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    validation_index = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        rng.shuffle(members)
        validation_index.append(members[: int(round(fraction * len(members)))])
    is_validation = np.zeros(len(y), dtype=bool)
    is_validation[np.concatenate(validation_index)] = True
    return x[~is_validation], y[~is_validation], x[is_validation], y[is_validation]


def _first(tasks: list, n_tasks: int | None, source: str) -> list:
    """The first ``n_tasks`` of ``tasks`` (all when None); asking for more than there are is an error."""
    if n_tasks is not None and n_tasks > len(tasks):
        raise SystemExit(f"asked for {n_tasks} tasks but {source} {len(tasks)}")
    return tasks if n_tasks is None else tasks[:n_tasks]


def _task(
    key: str,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
) -> BenchmarkTask:
    """A BenchmarkTask from (x, y) array pairs."""
    return BenchmarkTask(key, *(TaskData(x, y.tolist()) for x, y in (train, validation, test)))


def load_tasks(
    directory: str | Path, n_tasks: int | None = None, validation_fraction: float = 0.1, seed: int = 0
) -> list[BenchmarkTask]:
    """Load the first ``n_tasks`` tasks of ``directory`` (all when None)."""
    files = _first(task_files(directory), n_tasks, f"{directory} holds")
    tasks = []
    for index, path in enumerate(files):
        with np.load(path, allow_pickle=False) as arrays:
            missing = {"x", "y", "x_test", "y_test"} - set(arrays.files)
            if missing:
                raise SystemExit(f"{path} lacks {sorted(missing)}")
            x, y, x_test, y_test = (arrays[k] for k in ("x", "y", "x_test", "y_test"))
        if x.shape[1:] != x_test.shape[1:]:
            raise SystemExit(f"{path}: x is {x.shape[1:]} per sample but x_test is {x_test.shape[1:]}")
        train_x, train_y, val_x, val_y = hold_out(x, y, validation_fraction, seed + index)
        tasks.append(_task(path.stem, (train_x, train_y), (val_x, val_y), (x_test, y_test)))
    shapes = {t.input_shape for t in tasks}
    if len(shapes) != 1:
        raise SystemExit(f"tasks in {directory} disagree on the input shape: {sorted(shapes)}")
    return tasks


def load_split_tasks(
    path: str | Path,
    classes_per_task: int = 2,
    n_tasks: int | None = None,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> list[BenchmarkTask]:
    """A split benchmark from one labelled npz (``x``, ``y``): task k holds the k-th group of labels.

    Labels are sorted and grouped ``classes_per_task`` at a time (``mnist_5k.npz`` gives the
    usual split MNIST: 0/1, 2/3, 4/5, 6/7, 8/9). Each task's samples are split, stratified and
    seeded, into test (``test_fraction``) and train, then validation is held out of train as
    ``load_tasks`` does; the split depends only on the file and the seed, so every method and
    every run sees the same samples.
    """
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path} not found")
    if not 0.0 < test_fraction < 1.0:
        raise SystemExit(f"test fraction must be in (0, 1), got {test_fraction}")
    with np.load(path, allow_pickle=False) as arrays:
        missing = {"x", "y"} - set(arrays.files)
        if missing:
            raise SystemExit(f"{path} lacks {sorted(missing)}")
        x, y = arrays["x"], arrays["y"]
    labels = np.unique(y)
    if classes_per_task < 1 or len(labels) % classes_per_task:
        raise SystemExit(f"{path} has {len(labels)} labels; they do not split into tasks of {classes_per_task}")
    groups = [labels[i : i + classes_per_task] for i in range(0, len(labels), classes_per_task)]
    groups = _first(groups, n_tasks, f"{path} splits into")
    tasks = []
    for index, group in enumerate(groups):
        members = np.isin(y, group)
        train_x, train_y, test_x, test_y = hold_out(x[members], y[members], test_fraction, seed + index)
        train_x, train_y, val_x, val_y = hold_out(train_x, train_y, validation_fraction, seed + 100 + index)
        key = "digits_" + "_".join(str(label) for label in group.tolist())
        tasks.append(_task(key, (train_x, train_y), (val_x, val_y), (test_x, test_y)))
    return tasks


def load_digits_tasks(
    n_tasks: int = 2,
    test_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> list[BenchmarkTask]:
    """Small, crowded tasks: scikit-learn's bundled 8x8 digits (1,797 samples), permuted per task.

    Task 0 is the digits as they are; task k > 0 permutes the 64 pixels *and* the 10 labels with
    a fixed permutation of its own (``default_rng(k)``), so every task shares the one 10-way
    head and conflicts with the others, as pmnist-conflict does, at about a third of its size
    (~1,290 train samples per task). Pixels are scaled to [0, 1]. Each task's samples are split,
    stratified and seeded, into test and train, then validation is held out of train.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    tasks = []
    for index in range(n_tasks):
        rng = np.random.default_rng(index)
        pixels = np.arange(64) if index == 0 else rng.permutation(64)
        labels = np.arange(10) if index == 0 else rng.permutation(10)
        task_x, task_y = x.reshape(len(x), -1)[:, pixels].reshape(x.shape), labels[y]
        train_x, train_y, test_x, test_y = hold_out(task_x, task_y, test_fraction, seed + index)
        train_x, train_y, val_x, val_y = hold_out(train_x, train_y, validation_fraction, seed + 100 + index)
        tasks.append(_task(f"digits{index}", (train_x, train_y), (val_x, val_y), (test_x, test_y)))
    return tasks


def input_scale_for(data: TaskData) -> float:
    """The learner's convention (docs/architecture.md, "Data"): uint8 samples are scaled by 1/255."""
    return 1.0 / 255.0 if np.asarray(data.x).dtype == np.uint8 else 1.0


def parse_floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        raise SystemExit(f"expected comma-separated numbers, got {text!r}") from error


def progress_bar() -> Progress:
    """The one progress bar style every benchmark uses (on stderr, so stdout stays the table)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def machine() -> dict:
    """Where the numbers were measured: they mean little without it."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """(seconds, result) of one call of ``fn``."""
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The median of ``repeats`` timed calls of ``fn``: on a shared machine it shrugs off a disturbed call."""
    return statistics.median(timed(fn)[0] for _ in range(repeats))


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        **payload,
        "machine": machine(),
        "command": " ".join(["python", *sys.argv]),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    console.print(f"wrote {path}")
