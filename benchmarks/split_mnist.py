"""Split MNIST: five two-digit tasks learnt in turn by fine-tuning, EWC and CCLL.

The task-incremental benchmark of the CCLL paper's kind, built from ``mnist_5k.npz``:
task k holds the digits 2k and 2k+1, each task is split (seeded, stratified) into train,
validation (EWC's λ search only) and test, and every task is evaluated *task-aware* —
the learner is told which task a test sample belongs to, which CCLL requires. It prints the
accuracy matrices R[i][j], average accuracy, BWT and forgetting of each method, and what
CCLL pays for not forgetting: the parameters it adds per task, absolute and as a % of the
shared base.

    python benchmarks/split_mnist.py --arch cnn --epochs 1 --json benchmarks/out/split_mnist.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from common import SHARED_DATA, BenchmarkTask, console, hold_out, input_scale_for, progress_bar, write_json

from app.learning import ContinualLearner, TaskData, TrainConfig, accuracy_matrix_metrics

METHODS = ("finetune", "ewc", "ccll")
DIGIT_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))


def split_tasks(path: Path, test_fraction: float, validation_fraction: float, seed: int) -> list[BenchmarkTask]:
    """Five tasks of two digits each; the same seeded train/validation/test split for every method."""
    with np.load(path, allow_pickle=False) as arrays:
        x, y = arrays["x"], arrays["y"]
    tasks = []
    for index, pair in enumerate(DIGIT_PAIRS):
        members = np.isin(y, pair)
        train_x, train_y, test_x, test_y = hold_out(x[members], y[members], test_fraction, seed + index)
        train_x, train_y, val_x, val_y = hold_out(train_x, train_y, validation_fraction, seed + 100 + index)
        tasks.append(BenchmarkTask(
            key=f"digits_{pair[0]}_{pair[1]}",
            train=TaskData(train_x, train_y.tolist()),
            validation=TaskData(val_x, val_y.tolist()),
            test=TaskData(test_x, test_y.tolist()),
        ))
    return tasks


def run_method(method: str, tasks: list[BenchmarkTask], args, bar, bar_task) -> dict:
    """Learn every task in order with one method; R[i][j] is task j's test accuracy after update i."""
    learner = ContinualLearner.create(
        args.arch, tasks[0].input_shape,
        strategy="ccll" if method == "ccll" else "ewc",
        architecture_options={"alpha": args.alpha, "beta": args.beta} if method == "ccll" else None,
        input_scale=input_scale_for(tasks[0].train), seed=args.seed,
    )
    config = TrainConfig(optimizer=args.optimizer, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                         seed=args.seed, device=args.device)
    matrix, lambdas, parameters_added, train_seconds = [], [], {}, 0.0
    for i, task in enumerate(tasks):
        bar.update(bar_task, status=f"{method}: task {i + 1}/{len(tasks)} ({task.key})")
        result = learner.learn_task(
            task.key, task.train, strategy=method, train_config=config,
            validation={t.key: t.validation for t in tasks[: i + 1]},
            ewc_lambda=args.ewc_lambda if method == "ewc" else None,
        )
        train_seconds += result.train_seconds
        lambdas.append(result.ewc_lambda)
        parameters_added[task.key] = result.parameters_added
        matrix.append([learner.evaluate(t.test, task_key=t.key).accuracy if j <= i else None
                       for j, t in enumerate(tasks)])
        bar.advance(bar_task)
    metrics = accuracy_matrix_metrics(matrix)
    outcome = {
        "matrix": matrix,
        "avg_acc": metrics["average_accuracy"],
        "bwt": metrics["bwt"],
        "forgetting": metrics["forgetting"],
        "lambdas": lambdas,
        "train_seconds": train_seconds,
    }
    if method == "ccll":
        counts = learner.parameter_counts()
        outcome["parameters"] = {
            "base": counts["base"],
            "per_task": {key: {"added": added, "percent_of_base": 100.0 * added / counts["base"]}
                         for key, added in parameters_added.items()},
            "total": counts["total"],
        }
    return outcome


def _cell(value: float | None) -> str:
    return "    -" if value is None else f"{value:.3f}"


def print_report(tasks: list[BenchmarkTask], results: dict) -> None:
    for method, outcome in results.items():
        print(f"\n{method}: R[i][j] = test accuracy on task j (columns) after learning task i (rows)")
        print(" " * 12 + " ".join(f"{j:>5}" for j in range(len(tasks))))
        for i, row in enumerate(outcome["matrix"]):
            print(f"after {i} ({tasks[i].key[7:]})".ljust(12) + " ".join(f"{_cell(a):>5}" for a in row))
    print("\nmethod     avg_acc     BWT  forgetting  lambda per update          train_s")
    for method, outcome in results.items():
        lambdas = ",".join("-" if v is None else f"{v:g}" for v in outcome["lambdas"])
        print(f"{method:<10} {outcome['avg_acc']:7.3f} {outcome['bwt']:+7.3f} {outcome['forgetting']:11.3f}"
              f"  {lambdas:<25} {outcome['train_seconds']:7.1f}")
    if "ccll" in results:
        parameters = results["ccll"]["parameters"]
        print(f"\nccll parameters: shared base {parameters['base']:,}; per task (calibration modules + classifier):")
        for key, added in parameters["per_task"].items():
            print(f"  {key:<12} {added['added']:>8,}  ({added['percent_of_base']:.2f}% of base)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA / "mnist_5k.npz", help="npz with x (N,1,28,28) and y")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    parser.add_argument("--arch", choices=("cnn", "resnet18"), default="cnn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default=TrainConfig.optimizer)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr)
    parser.add_argument("--alpha", type=int, default=1, help="CCLL: channels per group of the spatial calibration")
    parser.add_argument("--beta", type=int, default=1, help="CCLL: channels per group of the channel-wise calibration")
    parser.add_argument("--ewc-lambda", default="auto", help="'auto' (chosen on validation data) or a number")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--validation-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise SystemExit(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if args.ewc_lambda != "auto":
        try:
            args.ewc_lambda = float(args.ewc_lambda)
        except ValueError:
            raise SystemExit(f"--ewc-lambda must be 'auto' or a number, got {args.ewc_lambda!r}") from None
    if not args.data.exists():
        raise SystemExit(f"{args.data} not found")

    tasks = split_tasks(args.data, args.test_fraction, args.validation_fraction, args.seed)
    console.print(f"{len(tasks)} tasks: " + ", ".join(
        f"{t.key} ({len(t.train)} train / {len(t.validation)} val / {len(t.test)} test)" for t in tasks))
    results, started = {}, time.perf_counter()
    with progress_bar() as bar:
        bar_task = bar.add_task("split mnist", total=len(methods) * len(tasks), status="")
        for method in methods:
            results[method] = run_method(method, tasks, args, bar, bar_task)
    print_report(tasks, results)
    if args.json:
        write_json(args.json, {
            "benchmark": "split_mnist",
            "tasks": [{"key": t.key, "digits": list(p), "n_train": len(t.train), "n_validation": len(t.validation),
                       "n_test": len(t.test)} for t, p in zip(tasks, DIGIT_PAIRS)],
            "config": {"arch": args.arch, "optimizer": args.optimizer, "lr": args.lr, "epochs": args.epochs, "batch_size": args.batch_size, "alpha": args.alpha,
                       "beta": args.beta, "ewc_lambda": args.ewc_lambda, "seed": args.seed,
                       "evaluation": "task-aware"},
            "methods": results,
            "wall_seconds": time.perf_counter() - started,
        })


if __name__ == "__main__":
    main()
