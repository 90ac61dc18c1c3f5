"""`retain demo`: the classic continual-learning experiment, end to end through the API.

Two models learn task A and then task B: one with `ewc`, one with plain `finetune`.
After each update the service measures every learnt task on its test split, and the
demo prints that table: task A's accuracy survives task B under EWC and collapses
under fine-tuning. It is the experiment of the blog post the project started from
(MNIST, then FashionMNIST: EWC keeps 0.97 on MNIST, fine-tuning falls to 0.18).

- `--data-dir DIR` (torchvision's root, holding MNIST/raw and FashionMNIST/raw)
  runs exactly that, reading the idx files with torchvision (download=False).
- Without data it builds two conflicting tasks offline from scikit-learn's bundled
  digits: A = the digits, B = the same digits with a fixed pixel permutation and a
  fixed label permutation, so a network can only do well on both by keeping A's
  weights for A. Works on a fresh machine with no network, in about a minute on CPU.

Everything goes through real HTTP: the demo starts the service on the embedded
default (SQLite + in-process worker) as a child process on a free port with a
temporary data directory, or talks to an existing server given with --url.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.cli import CliError, RetainClient, error_console, follow_jobs

BLOG_REFERENCE = "the blog post, MNIST then FashionMNIST: EWC 0.97 on MNIST, fine-tuning 0.18"
STRATEGIES = ("ewc", "finetune")
REPO_ROOT = Path(__file__).resolve().parent.parent


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
            directory, "permuted-digits",
            x_train[:, pixel_order], label_map[y_train], x_test[:, pixel_order], label_map[y_test],
        ),
    ]


def derangement(rng, n: int):
    """A random permutation with no fixed point (every label moves)."""
    import numpy as np

    while True:
        order = rng.permutation(n)
        if (order != np.arange(n)).all():
            return order


def torchvision_tasks(data_dir: Path, directory: Path, samples: int | None = None,
                      image_shape: bool = False) -> list[TaskFile]:
    """Task A = MNIST, task B = FashionMNIST, from torchvision's files (never downloaded)."""
    import numpy as np
    from torchvision.datasets import MNIST, FashionMNIST

    tasks = []
    for name, dataset_class in (("mnist", MNIST), ("fashion-mnist", FashionMNIST)):
        try:
            train = dataset_class(str(data_dir), train=True, download=False)
            test = dataset_class(str(data_dir), train=False, download=False)
        except RuntimeError as exc:
            raise CliError(
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


# ---------------------------------------------------------------------- server


class ServiceStartError(RuntimeError):
    """The child service exited or never became ready; the message holds its log."""


class LocalServer:
    """The service on its embedded default, as a child process with its own data dir.

    `retain serve` in a subprocess on a free port: SQLite and artifacts under
    `data_dir`, migrated to head before it starts. Used by the demo and by the
    tests that drive the CLI over real HTTP.
    """

    def __init__(self, data_dir: Path, embedded_worker: bool = True, extra_env: dict[str, str] | None = None,
                 startup_timeout: float = 90.0):
        self.data_dir = Path(data_dir)
        self.log_path = self.data_dir / "server.log"
        self.startup_timeout = startup_timeout
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.data_dir / 'retain.db'}",
            "RETAIN_ARTIFACT_URI": str(self.data_dir / "artifacts"),
            "RETAIN_EMBEDDED_WORKER": "true" if embedded_worker else "false",
            **(extra_env or {}),
        }
        self.process: subprocess.Popen | None = None
        self.url: str | None = None

    def __enter__(self) -> LocalServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        # Port 0: the kernel picks a free port as uvicorn binds, so parallel runs never collide;
        # the port is read back from uvicorn's "running on" line.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", "0", "--no-access-log"],
            env=self.env, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceStartError(f"the service exited with {self.process.returncode}:\n{self.log()}")
            if self.url is None:
                found = re.search(r"Uvicorn running on (http://\S+)", self.log())
                self.url = found.group(1) if found else None
            if self.url is not None:
                try:
                    if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.25)
        raise ServiceStartError(f"the service was not ready after {self.startup_timeout:.0f}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, as a supervisor would; returns the exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        finally:
            self._log.close()
        return self.process.returncode

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------ experiment


def run_experiment(client, tasks: list[TaskFile], args: argparse.Namespace, show_progress: bool) -> dict:
    """Teach A then B to one model per strategy; return every task's accuracy after each update.

    All four uploads are queued at once: the service runs each model's updates in
    order, so B always builds on A, and the two models may train side by side.
    """
    def row_name(strategy: str, index: int) -> str:
        return f"{strategy} · {'AB'[index]}"

    models = {strategy: f"demo-{strategy}{args.model_suffix}" for strategy in STRATEGIES}
    submitted: dict[str, dict] = {}
    for strategy, model in models.items():
        for index, task in enumerate(tasks):
            fields = {"model": model, "name": task.name, "strategy": strategy, "architecture": args.architecture,
                      "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr}
            if strategy == "ewc":
                fields["ewc_lambda"] = args.ewc_lambda
            submitted[row_name(strategy, index)] = client.submit_task(task.path, fields)
    jobs = follow_jobs(client, {name: answer["job_id"] for name, answer in submitted.items()}, show=show_progress)

    results: dict = {"tasks": [task.name for task in tasks], "models": {}}
    for strategy, model in models.items():
        answers = [submitted[row_name(strategy, index)] for index in range(len(tasks))]
        # each task's accuracy after every update since it was learnt, keyed by the update's task id
        measured = {
            task.name: {entry["after_task_id"]: entry["accuracy"]
                        for entry in client.get(f"/tasks/{answer['id']}/accuracy")["history"]}
            for task, answer in zip(tasks, answers)
        }
        updates = []
        for index, (task, answer) in enumerate(zip(tasks, answers)):
            job = jobs[row_name(strategy, index)]
            updates.append({
                "after": task.name, "task_id": answer["id"], "model_version": job.get("model_version"),
                "status": job["status"], "error": job.get("error"),
                "accuracy": {name: by_update.get(answer["id"]) for name, by_update in measured.items()},
            })
        results["models"][strategy] = {"model": model, "updates": updates}
    return results


def print_results(results: dict, console) -> None:
    from rich.table import Table

    task_a, task_b = results["tasks"]
    table = Table(title=f"Test accuracy after each update\nA = {task_a}, B = {task_b}")
    table.add_column("model")
    table.add_column("after")
    table.add_column("A", justify="right")
    table.add_column("B", justify="right")
    table.add_column("")
    rejected = False
    for strategy, result in results["models"].items():
        for index, update in enumerate(result["updates"]):
            cells = [f"{update['accuracy'].get(name):.3f}" if update["accuracy"].get(name) is not None else "–"
                     for name in (task_a, task_b)]
            note = {"succeeded": "", "rejected": "not promoted*"}.get(update["status"], update["status"])
            rejected |= update["status"] == "rejected"
            table.add_row(strategy if index == 0 else "", "A" if index == 0 else "A → B", *cells, note)
        table.add_section()
    console.print(table)
    if rejected:
        console.print("* stored, not served: the forgetting gate kept the previous version")
    final = {s: r["updates"][-1]["accuracy"].get(task_a) for s, r in results["models"].items()}
    if all(value is not None for value in final.values()):
        console.print(f"Task A after learning B: ewc {final['ewc']:.3f}, finetune {final['finetune']:.3f}.")
        console.print(f"Reference: {BLOG_REFERENCE}.")


def build_tasks(args: argparse.Namespace, directory: Path, console) -> list[TaskFile]:
    """The two task files: MNIST and FashionMNIST with --data-dir, else the offline digits pair."""
    if args.data_dir:
        console.print(f"Reading MNIST (A) and FashionMNIST (B) from {args.data_dir} ...")
        tasks = torchvision_tasks(Path(args.data_dir), directory, samples=args.samples,
                                  image_shape=args.architecture in ("cnn", "resnet18"))
    else:
        console.print("Building offline tasks from scikit-learn's digits: A = digits, B = permuted digits ...")
        tasks = digits_tasks(directory, samples=args.samples)
    for task in tasks:
        console.print(f"  {task.path.name}: {task.n_train} training samples, {task.n_test} test samples")
    return tasks


def run(args: argparse.Namespace) -> int:
    """The `retain demo` command."""
    from rich.console import Console

    console = Console(stderr=args.json)  # keep stdout pure JSON under --json
    try:
        if args.save_tasks:
            Path(args.save_tasks).mkdir(parents=True, exist_ok=True)
            build_tasks(args, Path(args.save_tasks), console)
            return 0
        results = run_in_scratch(args, console)
    except (CliError, ServiceStartError) as exc:
        error_console.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        return 1
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_results(results, console)
    return 0


def run_in_scratch(args: argparse.Namespace, console) -> dict:
    """Write the tasks to a temporary directory and run the experiment (on a child service unless --url)."""
    with tempfile.TemporaryDirectory(prefix="retain-demo-") as scratch:
        scratch = Path(scratch)
        tasks = build_tasks(args, scratch, console)
        if args.url_given:  # someone's server: fresh model names so earlier runs are left alone
            args.model_suffix = time.strftime("-%Y%m%d-%H%M%S")
            with RetainClient(args.url) as client:
                return run_experiment(client, tasks, args, show_progress=not args.json)
        args.model_suffix = ""
        console.print("Starting the service on the embedded default (SQLite + in-process worker) ...")
        with LocalServer(scratch / "service") as server, RetainClient(server.url) as client:
            console.print(f"  serving at {server.url}")
            try:
                return run_experiment(client, tasks, args, show_progress=not args.json)
            except CliError:
                error_console.print(f"The service's log ends with:\n{server.log()[-4000:]}", highlight=False)
                raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="torchvision root with MNIST/raw and FashionMNIST/raw: run MNIST -> FashionMNIST")
    parser.add_argument("--samples", type=int, help="training samples per task (default: all)")
    parser.add_argument("--architecture", default="mlp", help="mlp (default) | cnn | resnet18")
    parser.add_argument("--epochs", type=int, help="epochs per update (default: the service's)")
    parser.add_argument("--ewc-lambda", default="auto", help="EWC's λ: auto (default, the service searches) or a number")
    parser.add_argument("--batch-size", type=int, help="default: the service's")
    parser.add_argument("--lr", type=float, help="default: the service's")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--save-tasks", metavar="DIR",
                        help="only write the two task files (.npz, ready for `retain teach`) to DIR")


def main(argv: list[str] | None = None) -> int:
    from app.cli import main as cli_main

    return cli_main(["demo", *(argv if argv is not None else sys.argv[1:])])


if __name__ == "__main__":
    sys.exit(main())
