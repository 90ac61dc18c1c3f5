"""`retain demo`: the classic continual-learning experiment, end to end through the API.

Two models learn task A and then task B: one with `ewc`, one with plain `finetune`.
After each update the service measures every learnt task on its test split, and the
demo returns that table: task A's accuracy survives task B under EWC and collapses
under fine-tuning. It is the experiment of the blog post the project started from
(MNIST, then FashionMNIST: EWC keeps 0.97 on MNIST, fine-tuning falls to 0.18).

- With a `data_dir` (torchvision's root, holding MNIST/raw and FashionMNIST/raw)
  it runs exactly that, reading the idx files with torchvision (download=False).
- Without data it builds two conflicting tasks offline from scikit-learn's bundled
  digits: A = the digits, B = the same digits with a fixed pixel permutation and a
  fixed label permutation, so a network can only do well on both by keeping A's
  weights for A. Works on a fresh machine with no network, in about a minute on CPU.

Everything goes through real HTTP: the demo starts the service on the embedded
default (SQLite + in-process worker) as a child process on a free port with a
temporary data directory, or talks to an existing server at a given URL. This module
runs the experiment and returns its results; the `retain demo` command
(app/cli/demo.py) parses its options, draws its progress and prints the table.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from app.client import ClientError, RetainClient
from app.processes import LocalServer

BLOG_REFERENCE = "the blog post, MNIST then FashionMNIST: EWC 0.97 on MNIST, fine-tuning 0.18"
STRATEGIES = ("ewc", "finetune")

Say = Callable[[str], None]
"""Where the demo tells what it is doing (a console's print; the CLI's keeps stdout pure under --json)."""
FollowJobs = Callable[[RetainClient, Mapping[str, int]], dict[str, dict]]
"""Waits for labelled jobs and returns their final states; the CLI's draws a bar per job."""


def follow_quietly(client: RetainClient, jobs: Mapping[str, int]) -> dict[str, dict]:
    return client.follow_jobs(jobs)


@dataclass
class DemoOptions:
    """The experiment's knobs; None leaves a training setting to the service's default."""

    data_dir: Path | None = None  # torchvision root: MNIST -> FashionMNIST instead of the digits pair
    samples: int | None = None  # training samples per task
    architecture: str = "mlp"
    epochs: int | None = None
    ewc_lambda: str = "auto"
    batch_size: int | None = None
    lr: float | None = None


@dataclass
class TaskFile:
    """One task of the experiment, written as the .npz a user would upload."""

    name: str
    path: Path
    n_train: int
    n_test: int


# ------------------------------------------------------------------------ data


def write_task(directory: Path, name: str, x, y, x_test, y_test) -> TaskFile:
    import numpy as np

    path = directory / f"{name}.npz"
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test)
    return TaskFile(name=name, path=path, n_train=len(y), n_test=len(y_test))


def digits_tasks(directory: Path, samples: int | None = None, seed: int = 0) -> list[TaskFile]:
    """Task A = scikit-learn's 8×8 digits; task B = the same, pixels and labels permuted.

    Pixels are rescaled from 0..16 to uint8 0..255, the form images usually arrive
    in. The label permutation has no fixed point, so every output unit must answer
    differently for the two tasks: they conflict, as MNIST and FashionMNIST do.
    """
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.round(digits.data * (255.0 / 16.0)).astype(np.uint8)  # (1797, 64)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    if samples is not None:
        x_train, y_train = x_train[:samples], y_train[:samples]

    rng = np.random.default_rng(seed)
    pixel_order = rng.permutation(x.shape[1])
    label_map = derangement(rng, 10)
    return [
        write_task(directory, "digits", x_train, y_train, x_test, y_test),
        write_task(
            directory,
            "permuted-digits",
            x_train[:, pixel_order],
            label_map[y_train],
            x_test[:, pixel_order],
            label_map[y_test],
        ),
    ]


def derangement(rng, n: int):
    """A random permutation with no fixed point (every label moves)."""
    import numpy as np

    while True:
        order = rng.permutation(n)
        if (order != np.arange(n)).all():
            return order


def torchvision_tasks(
    data_dir: Path, directory: Path, samples: int | None = None, image_shape: bool = False
) -> list[TaskFile]:
    """Task A = MNIST, task B = FashionMNIST, from torchvision's files (never downloaded)."""
    import numpy as np
    from torchvision.datasets import MNIST, FashionMNIST

    tasks = []
    for name, dataset_class in (("mnist", MNIST), ("fashion-mnist", FashionMNIST)):
        try:
            train = dataset_class(str(data_dir), train=True, download=False)
            test = dataset_class(str(data_dir), train=False, download=False)
        except RuntimeError as exc:
            raise ClientError(
                f"{dataset_class.__name__} not found under {data_dir}: expected the idx files in "
                f"{data_dir / dataset_class.__name__ / 'raw'} (fetch them once, where there is network, with "
                f"torchvision.datasets.{dataset_class.__name__}('{data_dir}', download=True))"
            ) from exc
        x, x_test = train.data.numpy(), test.data.numpy()  # uint8 (N, 28, 28)
        shape = (1, 28, 28) if image_shape else (28 * 28,)
        x, x_test = x.reshape(len(x), *shape), x_test.reshape(len(x_test), *shape)
        y, y_test = train.targets.numpy(), test.targets.numpy()
        if samples is not None:  # a random subset, so every class is present whatever the file order
            keep = np.random.default_rng(0).permutation(len(y))[:samples]
            x, y = x[keep], y[keep]
        tasks.append(write_task(directory, name, x, y, x_test, y_test))
    return tasks


# ------------------------------------------------------------------ experiment


def run_experiment(
    client: RetainClient,
    tasks: list[TaskFile],
    options: DemoOptions,
    model_suffix: str = "",
    follow: FollowJobs = follow_quietly,
) -> dict:
    """Teach A then B to one model per strategy; return every task's accuracy after each update.

    All four uploads are queued at once: the service runs each model's updates in
    order, so B always builds on A, and the two models may train side by side.
    """

    def row_name(strategy: str, index: int) -> str:
        return f"{strategy} · {'AB'[index]}"

    models = {strategy: f"demo-{strategy}{model_suffix}" for strategy in STRATEGIES}
    submitted: dict[str, dict] = {}
    for strategy, model in models.items():
        for index, task in enumerate(tasks):
            fields = {
                "model": model,
                "name": task.name,
                "strategy": strategy,
                "architecture": options.architecture,
                "epochs": options.epochs,
                "batch_size": options.batch_size,
                "lr": options.lr,
            }
            if strategy == "ewc":
                fields["ewc_lambda"] = options.ewc_lambda
            submitted[row_name(strategy, index)] = client.submit_task(task.path, fields)
    jobs = follow(client, {name: answer["job_id"] for name, answer in submitted.items()})

    results: dict = {"tasks": [task.name for task in tasks], "models": {}}
    for strategy, model in models.items():
        answers = [submitted[row_name(strategy, index)] for index in range(len(tasks))]
        # each task's accuracy after every update since it was learnt, keyed by the update's task id
        measured = {
            task.name: {
                entry["after_task_id"]: entry["accuracy"]
                for entry in client.get(f"/tasks/{answer['id']}/accuracy")["history"]
            }
            for task, answer in zip(tasks, answers, strict=True)
        }
        updates = []
        for index, (task, answer) in enumerate(zip(tasks, answers, strict=True)):
            job = jobs[row_name(strategy, index)]
            updates.append(
                {
                    "after": task.name,
                    "task_id": answer["id"],
                    "model_version": job.get("model_version"),
                    "status": job["status"],
                    "error": job.get("error"),
                    "accuracy": {name: by_update.get(answer["id"]) for name, by_update in measured.items()},
                }
            )
        results["models"][strategy] = {"model": model, "updates": updates}
    return results


def build_tasks(options: DemoOptions, directory: Path, say: Say) -> list[TaskFile]:
    """The two task files: MNIST and FashionMNIST with a data_dir, else the offline digits pair."""
    if options.data_dir:
        say(f"Reading MNIST (A) and FashionMNIST (B) from {options.data_dir} ...")
        tasks = torchvision_tasks(
            Path(options.data_dir),
            directory,
            samples=options.samples,
            image_shape=options.architecture in ("cnn", "resnet18"),
        )
    else:
        say("Building offline tasks from scikit-learn's digits: A = digits, B = permuted digits ...")
        tasks = digits_tasks(directory, samples=options.samples)
    for task in tasks:
        say(f"  {task.path.name}: {task.n_train} training samples, {task.n_test} test samples")
    return tasks


def run_in_scratch(
    options: DemoOptions,
    url: str | None,
    say: Say,
    warn: Say,
    follow: FollowJobs = follow_quietly,
    api_key: str | None = None,
) -> dict:
    """Write the tasks to a temporary directory and run the experiment on `url`, or on a child service.

    On someone's server (a url, with ``api_key``, a train key) the models get fresh names, so earlier runs are left
    alone. When the experiment fails on the child service, `warn` gets its log's end.
    Raises ClientError, or processes.ServiceStartError when the child never came up.
    """
    with tempfile.TemporaryDirectory(prefix="retain-demo-") as scratch:
        scratch = Path(scratch)
        tasks = build_tasks(options, scratch, say)
        if url is not None:
            with RetainClient(url, api_key=api_key) as client:
                return run_experiment(client, tasks, options, time.strftime("-%Y%m%d-%H%M%S"), follow)
        say("Starting the service on the embedded default (SQLite + in-process worker) ...")
        with LocalServer(scratch / "service") as server, RetainClient(server.url, api_key=server.api_key) as client:
            say(f"  serving at {server.url}")
            try:
                return run_experiment(client, tasks, options, follow=follow)
            except ClientError:
                warn(f"The service's log ends with:\n{server.log()[-4000:]}")
                raise
